"""A private Postfix instance on a loopback port, for interoperability tests.

    with PrivatePostfix(directory, cert=(certfile, keyfile)) as mta:
        ... deliver to 127.0.0.1:mta.port ...
        queued = mta.held()          # [(queue id, postcat text)] of the messages it took

It has its own config_directory, queue_directory, data_directory and log file under
directory, listens only on 127.0.0.1:port (smtpd with STARTTLS: security level
"may", a Received header that says how TLS went), never touches /etc/postfix or the
system's queue, and puts every message it accepts on hold, so a test reads it with
postcat instead of Postfix delivering it anywhere. It needs root (Postfix's master
runs as root and drops to mail_owner) and Debian's postfix package: available()
says whether both are there.
"""

import os
import shutil
import socket
import subprocess
import time

POSTFIX = "/usr/sbin/postfix"
POSTCAT = "/usr/sbin/postcat"
SYSTEM_MASTER_CF = "/etc/postfix/master.cf"
WANTED_SERVICES = {"pickup", "cleanup", "qmgr", "tlsmgr", "rewrite", "bounce", "defer", "trace", "verify",
                   "flush", "proxymap", "proxywrite", "smtp", "relay", "showq", "error", "retry", "discard",
                   "anvil", "scache", "postlog"}


def available():
    """None when a private Postfix can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "Postfix's master must start as root"
    for path in (POSTFIX, POSTCAT, SYSTEM_MASTER_CF):
        if not os.path.exists(path):
            return "%s is missing (Debian package postfix)" % path
    import pwd
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user"
    return None


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivatePostfix:
    def __init__(self, directory, cert, port=None, extra_main=()):
        """directory: must be reachable by the postfix user (not under a 0700 directory)."""
        self.directory = str(directory)
        self.config = os.path.join(self.directory, "etc")
        self.queue = os.path.join(self.directory, "queue")
        self.log = os.path.join(self.directory, "maillog")
        self.port = port or free_port()
        os.makedirs(self.config, exist_ok=True)
        data = os.path.join(self.directory, "data")
        os.makedirs(data, exist_ok=True)
        import pwd
        owner = pwd.getpwnam("postfix")
        os.chown(data, owner.pw_uid, owner.pw_gid)
        os.makedirs(self.queue, exist_ok=True)  # postfix start creates what goes inside
        self._write_main(cert, extra_main)
        self._write_master()

    def _write_main(self, cert, extra):
        settings = [
            "compatibility_level = 3.6",
            "queue_directory = %s" % self.queue,
            "data_directory = %s" % os.path.join(self.directory, "data"),
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "myhostname = postfix.test",
            "mydomain = postfix.test",
            "myorigin = postfix.test",
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            "alias_maps =",
            "alias_database =",
            "smtpd_relay_restrictions = permit_mynetworks, reject",
            # every accepted message waits on hold: nothing is delivered anywhere
            "smtpd_recipient_restrictions = check_recipient_access static:HOLD, permit",
            "smtpd_tls_cert_file = %s" % cert[0],
            "smtpd_tls_key_file = %s" % cert[1],
            "smtpd_tls_security_level = may",
            "smtpd_tls_received_header = yes",
            "smtpd_tls_loglevel = 1",
            "smtpd_tls_session_cache_database =",
            "maillog_file = %s" % self.log,
            "maillog_file_prefixes = %s" % self.directory,
            "syslog_name = qremote-test-postfix",
            "master_service_disable =",
        ] + list(extra)
        with open(os.path.join(self.config, "main.cf"), "w") as out:
            out.write("\n".join(settings) + "\n")

    def _write_master(self):
        """The system's master.cf with only the services needed, no chroot, smtpd on our port."""
        lines = self._smtpd_services()
        with open(SYSTEM_MASTER_CF) as system:
            for line in system:
                fields = line.split()
                if len(fields) < 8 or line[0] in "# \t" or fields[0] not in WANTED_SERVICES:
                    continue
                if fields[1] == "inet":
                    continue
                fields[4] = "n"
                lines.append(" ".join(fields))
        with open(os.path.join(self.config, "master.cf"), "w") as out:
            out.write("\n".join(lines) + "\n")

    def _smtpd_services(self):
        """The master.cf lines of the smtpd services (a subclass may offer several)."""
        return ["127.0.0.1:%d inet n - n - - smtpd" % self.port]

    def _postfix(self, *args, check=True):
        return subprocess.run([POSTFIX, "-c", self.config] + list(args), capture_output=True, text=True,
                              timeout=60, check=check)

    def start(self, timeout=30):
        started = self._postfix("start", check=False)
        if started.returncode != 0:  # seen once under load, right after another instance stopped
            time.sleep(1)
            started = self._postfix("start", check=False)
        if started.returncode != 0:
            raise RuntimeError("postfix start failed (%s%s); log: %s" % (
                started.stdout, started.stderr, self.log_text()[-2000:]))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as probe:
                    probe.settimeout(10)
                    if probe.recv(512).startswith(b"220"):
                        probe.sendall(b"QUIT\r\n")
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the private Postfix did not answer on port %d; log: %s" % (self.port, self.log_text()))

    def master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as pidfile:
                return int(pidfile.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        pid = self.master_pid()
        self._postfix("stop", check=False)
        deadline = time.monotonic() + 20
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        if pid:
            self._postfix("abort", check=False)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def held(self, count=1, timeout=20):
        """[(queue id, postcat output)] of the messages on hold, once there are count of them."""
        hold = os.path.join(self.queue, "hold")
        deadline = time.monotonic() + timeout
        while True:
            names = []
            for top, _, files in os.walk(hold):
                names.extend(os.path.join(top, name) for name in files)
            if len(names) >= count or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        return [(os.path.basename(path), subprocess.run([POSTCAT, "-c", self.config, path], capture_output=True,
                                                        timeout=30).stdout) for path in sorted(names)]

    def wait_log(self, text, timeout=10.0):
        """The log once it holds text, or as it is after timeout: Postfix's logger writes
        after the client has its reply, so a line can lag the SMTP exchange."""
        import time
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()
            if text in log or time.monotonic() > deadline:
                return log
            time.sleep(0.05)

    def log_text(self):
        try:
            with open(self.log, errors="replace") as log:
                return log.read()
        except OSError:
            return ""

    def remove(self):
        shutil.rmtree(self.directory, ignore_errors=True)
