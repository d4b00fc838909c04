"""The SMTP AUTH test peer itself (tests/support/postfix_sasl.py), checked with smtplib.

Before qremote's AUTH is tested against it, this proves the peer is what those tests
assume: which port offers which extensions, that each mechanism logs in with the right
password and gets 535 with a wrong one, that mail needs AUTH to be relayed and is then
held, and that sasl_methods() reports the mechanisms used. SCRAM-SHA-256, which smtplib
lacks, is run by hand (it ends with a 334 the client answers with an empty line).
"""

import base64
import hashlib
import hmac
import os
import shutil
import smtplib
import ssl
import tempfile
import time

import pytest

from tests.support.postfix_sasl import SaslPostfix, sasl_available

USER, PASSWORD = "alice", "s3cret pass"
ALL_MECHS = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256")
AUTH_PORTS = ("starttls_port", "smtps_port", "cleartext_port")
MSG = "Subject: through AUTH\n\nhello\n"


@pytest.fixture(scope="module")
def sasl_directory():
    """Postfix runs as its own user: its files must be in a directory it can reach."""
    reason = sasl_available()
    if reason:
        pytest.skip(reason)
    directory = tempfile.mkdtemp(prefix="qremote-sasl-", dir="/tmp")
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def start(pki, sasl_directory, mechs):
    instance = SaslPostfix(tempfile.mkdtemp(dir=sasl_directory), pki.server("127.0.0.1", "postfix.test"),
                           users={USER: PASSWORD, "bob": "other"}, mechs=mechs)
    os.chmod(instance.directory, 0o755)
    return instance


@pytest.fixture(scope="module")
def mta(pki, sasl_directory):
    """One instance for the module: each test finds its own message by queue id."""
    with start(pki, sasl_directory, ALL_MECHS) as instance:
        yield instance


@pytest.fixture
def context(pki):
    return ssl.create_default_context(cafile=pki.ca_file)


def connect(mta, port_name, context):
    """An smtplib session on the port, inside TLS where the port has it, after EHLO."""
    port = getattr(mta, port_name)
    if port_name == "smtps_port":
        session = smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=30)
    else:
        session = smtplib.SMTP("127.0.0.1", port, timeout=30)
    session.ehlo("client.test")
    if session.has_extn("starttls"):
        session.starttls(context=context)
        session.ehlo("client.test")
    return session


def offered(session):
    return session.esmtp_features.get("auth", "").split()


def send(session):
    """Sends MSG to a remote domain; returns Postfix's queue id."""
    session.mail("sender@client.test")
    code, reply = session.rcpt("someone@elsewhere.example")
    assert code == 250, reply
    code, reply = session.data(MSG)
    assert code == 250 and b"queued as " in reply, reply
    return reply.split(b"queued as ")[1].strip().decode()


def held(mta, queue_id, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, text in mta.held(count=0):
            if name == queue_id:
                return text
        time.sleep(0.1)
    raise AssertionError("%s not on hold; log: %s" % (queue_id, mta.log_text()[-3000:]))


def test_starttls_port_offers_auth_only_inside_tls(mta, context):
    with smtplib.SMTP("127.0.0.1", mta.starttls_port, timeout=30) as session:
        session.ehlo("client.test")
        assert session.has_extn("starttls") and not session.has_extn("auth"), session.esmtp_features
        code, _ = session.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0s3cret pass").decode())
        assert code >= 500  # no password before TLS, even from a client that ignores EHLO
        session.starttls(context=context)
        session.ehlo("client.test")
        assert offered(session) == list(ALL_MECHS)
        assert not session.has_extn("starttls")


def test_smtps_port_offers_auth(mta, context):
    with connect(mta, "smtps_port", context) as session:
        assert isinstance(session.sock, ssl.SSLSocket)
        assert offered(session) == list(ALL_MECHS)


def test_cleartext_port_offers_auth_without_tls(mta, context):
    with connect(mta, "cleartext_port", context) as session:
        assert not session.has_extn("starttls") and not isinstance(session.sock, ssl.SSLSocket)
        assert offered(session) == list(ALL_MECHS)


def test_noauth_port_offers_no_auth_and_relays_for_loopback(mta, context):
    with connect(mta, "noauth_port", context) as session:
        assert isinstance(session.sock, ssl.SSLSocket)
        assert not session.has_extn("auth"), session.esmtp_features
        code, _ = session.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0s3cret pass").decode())
        assert code == 503
        assert b"\nhello\n" in held(mta, send(session))


@pytest.mark.parametrize("port_name", AUTH_PORTS)
def test_relaying_needs_auth(mta, context, port_name):
    with connect(mta, port_name, context) as session:
        session.mail("sender@client.test")
        code, reply = session.rcpt("someone@elsewhere.example")
        assert code == 554 and b"Relay access denied" in reply, reply


@pytest.mark.parametrize("port_name", AUTH_PORTS)
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_login_then_mail_is_held(mta, context, port_name, mech):
    before = mta.sasl_methods()
    with connect(mta, port_name, context) as session:
        session.user, session.password = USER, PASSWORD
        code, reply = session.auth(mech, getattr(session, "auth_" + mech.lower().replace("-", "_")))
        assert code == 235, reply
        text = held(mta, send(session))
    assert b"(Authenticated sender: alice@postfix.test)" in text, text
    assert b"\nhello\n" in text
    assert mta.sasl_methods() == before + [mech]


@pytest.mark.parametrize("port_name", AUTH_PORTS)
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_wrong_password_gets_535(mta, context, port_name, mech):
    with connect(mta, port_name, context) as session:
        session.user, session.password = USER, "other"  # bob's password, not alice's
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            session.auth(mech, getattr(session, "auth_" + mech.lower().replace("-", "_")))
        assert refused.value.smtp_code == 535
    expected = "SASL %s authentication failed" % mech
    assert expected in mta.wait_log(expected)


def scram_sha_256(session, user, password):
    """A SCRAM-SHA-256 login (RFC 5802/7677) by hand; returns the last (code, reply)."""
    client_nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = "n=%s,r=%s" % (user, client_nonce)
    code, reply = session.docmd("AUTH", "SCRAM-SHA-256 " + base64.b64encode(("n,," + first_bare).encode()).decode())
    assert code == 334, reply
    server_first = base64.b64decode(reply).decode()
    fields = dict(field.split("=", 1) for field in server_first.split(","))
    assert fields["r"].startswith(client_nonce)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    final_bare = "c=biws,r=" + fields["r"]
    auth_message = ",".join((first_bare, server_first, final_bare)).encode()
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    final = final_bare + ",p=" + base64.b64encode(proof).decode()
    code, reply = session.docmd(base64.b64encode(final.encode()).decode())
    if code != 334:
        return code, reply
    server_signature = hmac.digest(hmac.digest(salted, b"Server Key", "sha256"), auth_message, "sha256")
    assert base64.b64decode(reply).decode() == "v=" + base64.b64encode(server_signature).decode()
    return session.docmd("")  # Cyrus sends its final message as a challenge: an empty answer ends it


def test_scram_sha_256(mta, context):
    before = mta.sasl_methods()
    with connect(mta, "starttls_port", context) as session:
        assert "SCRAM-SHA-256" in offered(session)
        code, reply = scram_sha_256(session, USER, PASSWORD)
        assert code == 235, reply
        held(mta, send(session))
    assert mta.sasl_methods() == before + ["SCRAM-SHA-256"]
    with connect(mta, "starttls_port", context) as session:
        code, reply = scram_sha_256(session, USER, "wrong")
        assert code == 535, reply


@pytest.mark.parametrize("mechs", [("CRAM-MD5",), ("SCRAM-SHA-256", "PLAIN")])
def test_mechs_restrict_what_is_offered(pki, sasl_directory, context, mechs):
    with start(pki, sasl_directory, mechs) as only:
        for port_name in AUTH_PORTS:
            with connect(only, port_name, context) as session:
                assert offered(session) == list(mechs), port_name
                if "PLAIN" not in mechs:
                    session.user, session.password = USER, PASSWORD
                    with pytest.raises(smtplib.SMTPAuthenticationError):
                        session.auth("PLAIN", session.auth_plain)
