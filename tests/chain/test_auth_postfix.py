"""SMTP AUTH and SMTPS against a real MTA: a private Postfix with Cyrus SASL
(tests/support/postfix_sasl.py), each mechanism over STARTTLS and over SMTPS, a wrong
password, a password never sent in cleartext, a server without AUTH, and s/qmail's
control files (smtproutes, authsenders) unchanged."""

import os
import shutil
import stat
import tempfile
import time

import pytest

from tests.chain.test_imports import audit, audited  # noqa: F401 (fixtures: the audited chain)
from tests.support.postfix_sasl import SaslPostfix, sasl_available

USER, PASSWORD = "alice", "s3cret pass"
MECHS = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256")


@pytest.fixture(scope="module")
def sasl_directory():
    reason = sasl_available()
    if reason:
        pytest.skip(reason)
    directory = tempfile.mkdtemp(prefix="qremote-auth-", dir="/tmp")
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def postfixes(pki, sasl_directory):
    """One Postfix per mechanism set, started on first use, stopped at the end of the module."""
    made = {}

    def get(mechs):
        if mechs not in made:
            directory = tempfile.mkdtemp(dir=sasl_directory)
            os.chmod(directory, 0o755)
            instance = SaslPostfix(directory, pki.server("127.0.0.1", "postfix.test"), users={USER: PASSWORD},
                                   mechs=mechs)
            instance.__enter__()
            made[mechs] = instance
        return made[mechs]
    yield get
    for instance in made.values():
        instance.__exit__(None, None, None)


def smtproutes(home, *lines):
    home.route(*lines)


def deliver(home, mta, sender="joe@src.example", marker=None):
    marker = marker or "m%d" % time.monotonic_ns()
    reports, _ = home.remote("example.org", sender, "bob@example.org",
                             message=b"Subject: %s\n\nthrough AUTH\n" % marker.encode())
    return reports, marker


def held_with(mta, marker):
    """The postcat text (str) of the held message with marker in its subject."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for _, text in mta.held(count=1, timeout=5):
            text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
            if marker in text:
                return text
        time.sleep(0.2)
    raise AssertionError("no held message with %s" % marker)


@pytest.mark.parametrize("mech", MECHS)
@pytest.mark.parametrize("form", ["starttls", "smtps"])
def test_each_mechanism_over_starttls_and_smtps(home, postfixes, mech, form):
    mta = postfixes((mech,))
    if form == "starttls":
        smtproutes(home, "example.org:127.0.0.1;%d|%s|%s" % (mta.starttls_port, USER, PASSWORD))
    else:
        smtproutes(home, "example.org:127.0.0.1;s%d|%s|%s" % (mta.smtps_port, USER, PASSWORD))
    reports, marker = deliver(home, mta)
    assert [letter for letter, _ in reports] == ["r", "K"], reports
    assert reports[-1][1].startswith(b"127.0.0.1 accepted message. (TLSv1.3 unverified, cipher ")
    text = held_with(mta, marker)
    assert "Authenticated sender: alice" in text or "(Authenticated sender: alice)" in text
    assert mech in mta.sasl_methods()


def test_strongest_mechanism_is_chosen(home, postfixes):
    mta = postfixes(MECHS)
    smtproutes(home, "example.org:127.0.0.1;%d|%s|%s" % (mta.starttls_port, USER, PASSWORD))
    reports, marker = deliver(home, mta)
    assert reports[-1][0] == "K"
    held_with(mta, marker)
    assert mta.sasl_methods()[-1] == "SCRAM-SHA-256"


@pytest.mark.parametrize("mech", MECHS)
def test_wrong_password_is_a_z_naming_the_mechanism(home, postfixes, mech):
    mta = postfixes((mech,))
    smtproutes(home, "example.org:127.0.0.1;s%d|%s|wrong" % (mta.smtps_port, USER))
    reports, _ = deliver(home, mta)
    assert reports[-1][0] == "Z", reports
    assert reports[-1][1].startswith(
        b"Connected to 127.0.0.1 but authentication was rejected (AUTH %s).\nRemote host said: 535"
        % mech.encode()) or b"AUTH %s exchange failed" % mech.encode() in reports[-1][1]
    assert b"wrong" not in reports[-1][1]


def test_no_password_in_cleartext(home, postfixes):
    """The cleartext port offers PLAIN and LOGIN without TLS: Z, nothing sent."""
    mta = postfixes(("PLAIN", "LOGIN"))
    smtproutes(home, "example.org:127.0.0.1;%d|%s|%s" % (mta.cleartext_port, USER, PASSWORD))
    reports, _ = deliver(home, mta)
    assert reports[-1] == ("Z", b"Connected to 127.0.0.1 but will not send a password in cleartext: no TLS on this "
                                b"connection and the server offers only AUTH PLAIN/LOGIN (the route's cleartext "
                                b"option allows it). (#4.7.0)\n")
    assert "authentication failed" not in mta.log_text()


def test_cleartext_option_allows_it(home, postfixes):
    mta = postfixes(("PLAIN", "LOGIN"))
    smtproutes(home, "example.org:127.0.0.1;%d|%s|%s||cleartext" % (mta.cleartext_port, USER, PASSWORD))
    reports, marker = deliver(home, mta)
    assert reports[-1][0] == "K" and b"TLSv" not in reports[-1][1]
    held_with(mta, marker)


def test_scram_goes_in_cleartext_without_the_password(home, postfixes):
    mta = postfixes(("SCRAM-SHA-256",))
    smtproutes(home, "example.org:127.0.0.1;%d|%s|%s" % (mta.cleartext_port, USER, PASSWORD))
    reports, marker = deliver(home, mta)
    assert reports[-1][0] == "K"
    held_with(mta, marker)


@pytest.mark.parametrize("form", ["starttls", "smtps"])
def test_scram_second_delivery_uses_the_key_cache(audit, postfixes, form):
    """The first SCRAM delivery derives the keys (PBKDF2, OpenSSL's _hashlib) and keeps them in
    run/qmail-remote/scram; the second reads them: qmail-remote-io loads no _hashlib."""
    mta = postfixes(("SCRAM-SHA-256",))
    port = "%d" % mta.starttls_port if form == "starttls" else "s%d" % mta.smtps_port
    smtproutes(audit, "example.org:127.0.0.1;%s|%s|%s" % (port, USER, PASSWORD))
    cache = os.path.join(audit.path, "run", "qmail-remote", "scram")
    for delivery in ("cold", "warm"):
        reports, marker = deliver(audit, mta)
        assert [letter for letter, _ in reports] == ["r", "K"], (delivery, reports)
        assert "Authenticated sender: alice" in held_with(mta, marker)
        loaded = audit.loaded()["qmail-remote-io"]
        assert "qremote.scramcache" in loaded
        assert ("_hashlib" in loaded) is (delivery == "cold"), delivery
        assert "hashlib" not in loaded and "hmac" not in loaded
        entries = os.listdir(cache)
        assert len(entries) == 1, entries
        assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(os.path.join(cache, entries[0])).st_mode) == 0o600
    assert mta.sasl_methods()[-2:] == ["SCRAM-SHA-256"] * 2


def test_server_without_auth_goes_on_and_says_so(home, postfixes):
    mta = postfixes(MECHS)
    smtproutes(home, "example.org:127.0.0.1;%d|%s|%s" % (mta.noauth_port, USER, PASSWORD))
    reports, marker = deliver(home, mta)
    assert reports[-1][0] == "K"
    assert b"(no supported AUTH method found, continuing without authentication)" in reports[-1][1]
    held_with(mta, marker)


def test_sqmail_authsenders_and_credentials_file(home, postfixes):
    """authsenders as s/qmail writes it, with the password in a 0600 credentials file;
    the smtproutes line for the host is overridden by the sender's line."""
    mta = postfixes(MECHS)
    secret = os.path.join(home.path, "control", "relay.secret")
    with open(secret, "w") as out:
        out.write(PASSWORD + "\n")
    os.chmod(secret, 0o600)
    smtproutes(home, "example.org:127.0.0.1:1")  # nothing listens there
    home.control("authsenders", "@src.example:127.0.0.1;s%d|%s|file:control/relay.secret\n" % (mta.smtps_port, USER))
    reports, marker = deliver(home, mta, sender="joe@src.example")
    assert reports[-1][0] == "K", reports
    text = held_with(mta, marker)
    assert "alice" in text
    os.chmod(secret, 0o644)
    reports, _ = deliver(home, mta, sender="joe@src.example")
    assert reports[-1] == ("Z", b"Unable to read the AUTH credentials of control/authsenders line 1: "
                                b"control/relay.secret can be read by every user (chmod 0600 or 0640). (#4.3.0)\n")
