"""A private Postfix with Cyrus SASL (a sasldb of test users), for SMTP AUTH tests.

    with SaslPostfix(directory, cert=(certfile, keyfile), users={"alice": "s3cret pass"},
                     mechs=("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256")) as mta:
        mta.starttls_port   # STARTTLS; AUTH offered only inside TLS; relaying needs AUTH
        mta.smtps_port      # SMTPS (TLS from the first byte); relaying needs AUTH
        mta.cleartext_port  # no STARTTLS, AUTH offered in cleartext; relaying needs AUTH
        mta.noauth_port     # STARTTLS, no AUTH offered; loopback clients may relay
        mta.held()          # [(queue id, postcat text)], as PrivatePostfix
        mta.sasl_methods()  # ["PLAIN", ...]: the mechanisms of the sessions that sent mail

It is a PrivatePostfix (tests/support/postfix.py: own configuration, queue and log, every
accepted message on hold, never touching /etc/postfix) with four smtpd services on loopback
ports, each its own master.cf line with -o settings. Users log in with the bare user name:
the sasldb holds them under the realm smtpd_sasl_local_domain. mechs is the Cyrus mech_list
of the SASL application "smtpd", so a test can offer, say, only CRAM-MD5.

Postfix logs sasl_method= only when it opens a queue file for an authenticated session, that
is, once a RCPT is accepted: a session that logs in and quits leaves no such line (its
disconnect line counts "auth=1"). A failed login logs "SASL <mech> authentication failed".
Cyrus ends a SCRAM exchange with a 334 carrying the server's final message: the client
answers it with an empty line before the 235.
"""

import glob
import os
import re
import subprocess

from tests.support import postfix
from tests.support.postfix import PrivatePostfix, free_port

SASLPASSWD2 = "/usr/sbin/saslpasswd2"
REALM = "postfix.test"  # = myhostname of PrivatePostfix and smtpd_sasl_local_domain
APPLICATION = "smtpd"  # the Cyrus application name: its settings are in smtpd.conf
DEFAULT_MECHS = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256")
# the Cyrus plugins the default mechanisms need (Debian: libsasl2-modules, libsasl2-modules-db)
PLUGINS = ("libsasldb.so", "libplain.so", "liblogin.so", "libcrammd5.so", "libscram.so")


def sasl_available():
    """None when a private Postfix with Cyrus SASL can run here, else the reason it cannot."""
    reason = postfix.available()
    if reason:
        return reason
    if not os.path.exists(SASLPASSWD2):
        return "%s is missing (Debian package sasl2-bin)" % SASLPASSWD2
    for plugin in PLUGINS:
        if not glob.glob("/usr/lib/*/sasl2/%s*" % plugin) and not glob.glob("/usr/lib/sasl2/%s*" % plugin):
            return "the Cyrus SASL plugin %s is missing (Debian package libsasl2-modules)" % plugin
    try:
        types = subprocess.run([postfix.POSTFIX.replace("postfix", "postconf"), "-a"], capture_output=True,
                               text=True, timeout=30).stdout.split()
    except OSError as error:
        return "postconf -a: %s" % error
    if "cyrus" not in types:
        return "this Postfix has no Cyrus SASL support (postconf -a)"
    return None


class SaslPostfix(PrivatePostfix):
    def __init__(self, directory, cert, users, mechs=DEFAULT_MECHS, extra_main=()):
        """directory: must be reachable by the postfix user (not under a 0700 directory).
        users: {bare user name: password}; mechs: the mechanisms offered, in this order."""
        self.starttls_port = free_port()
        self.smtps_port = free_port()
        self.cleartext_port = free_port()
        self.noauth_port = free_port()
        self.mechs = tuple(mechs)
        directory = str(directory)
        # Debian's Postfix (patch 07_sasl_config) reads APPLICATION.conf from config_directory/sasl,
        # whatever cyrus_sasl_config_path says: the same directory serves both
        self.sasl = os.path.join(directory, "etc", "sasl")
        self.sasldb = os.path.join(self.sasl, "sasldb2")
        settings = [
            "smtpd_sasl_type = cyrus",
            "cyrus_sasl_config_path = %s" % self.sasl,
            "smtpd_sasl_path = %s" % APPLICATION,
            "smtpd_sasl_local_domain = %s" % REALM,
            "smtpd_sasl_security_options = noanonymous",
            "smtpd_sasl_tls_security_options = noanonymous",
            "smtpd_sasl_authenticated_header = yes",  # the Received header names the user
            "relay_domains =",
        ]
        # PrivatePostfix's port is the one start() waits for
        super().__init__(directory, cert, port=self.starttls_port, extra_main=settings + list(extra_main))
        self._write_sasl(users)

    def _smtpd_services(self):
        needs_auth = "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject_unauth_destination"
        line = "127.0.0.1:%d inet n - n - - smtpd -o syslog_name=qremote-test-postfix/%s "
        return [
            line % (self.starttls_port, "starttls") + "-o smtpd_tls_security_level=may -o smtpd_sasl_auth_enable=yes "
            "-o smtpd_tls_auth_only=yes " + needs_auth,
            line % (self.smtps_port, "smtps") + "-o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt "
            "-o smtpd_sasl_auth_enable=yes " + needs_auth,
            line % (self.cleartext_port, "cleartext") + "-o smtpd_tls_security_level=none "
            "-o smtpd_sasl_auth_enable=yes -o smtpd_tls_auth_only=no " + needs_auth,
            line % (self.noauth_port, "noauth") + "-o smtpd_tls_security_level=may -o smtpd_sasl_auth_enable=no "
            "-o smtpd_relay_restrictions=permit_mynetworks,reject",
        ]

    def _write_sasl(self, users):
        import pwd
        owner = pwd.getpwnam("postfix")
        os.makedirs(self.sasl, exist_ok=True)
        with open(os.path.join(self.sasl, APPLICATION + ".conf"), "w") as conf:
            conf.write("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\nmech_list: %s\n"
                       % (self.sasldb, " ".join(self.mechs)))
        for user, password in users.items():
            # -p: the password on stdin (never in argv); -c: create the user
            subprocess.run([SASLPASSWD2, "-p", "-c", "-f", self.sasldb, "-u", REALM, user],
                           input=password.encode(), check=True, capture_output=True, timeout=30)
        # smtpd runs as postfix (not chrooted) and opens the sasldb for each login; the rest stays
        # root's, as postfix-script wants of everything under config_directory
        if users:
            os.chown(self.sasldb, 0, owner.pw_gid)
            os.chmod(self.sasldb, 0o640)

    def sasl_methods(self):
        """The mechanisms of the authenticated sessions that got a queue file, in log order."""
        return re.findall(r"sasl_method=([A-Za-z0-9_-]+)", self.log_text())
