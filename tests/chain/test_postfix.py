"""Interoperability: the installed chain delivers to a real Postfix smtpd over STARTTLS.

A private Postfix instance (tests/support/postfix.py: its own configuration, queue and
log, listening on a loopback port, every accepted message put on hold) receives the
message; the test reads it back with postcat and checks what Postfix itself recorded
about the TLS session (its Received header) and that the body arrived unchanged.
"""

import os
import shutil
import tempfile

import pytest

from tests.support import postfix

MSG = b"Subject: to postfix\n\nhello Postfix\n.a dot line\nlast line\n"


@pytest.fixture(scope="module")
def pki_postfix(pki):
    """Postfix runs as its own user: its files must be in a directory it can reach."""
    reason = postfix.available()
    if reason:
        pytest.skip(reason)
    directory = tempfile.mkdtemp(prefix="qremote-postfix-", dir="/tmp")
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def mta(pki, pki_postfix, request):
    extra = getattr(request, "param", ())
    instance = postfix.PrivatePostfix(tempfile.mkdtemp(dir=pki_postfix), pki.server("127.0.0.1", "postfix.test"),
                                      extra_main=[line % {"ca": pki.ca_file} for line in extra])
    os.chmod(instance.directory, 0o755)
    with instance:
        yield instance


@pytest.fixture(autouse=True)
def need_tlsc_io(installed):
    if not os.path.exists(os.path.join(installed, "tlsc-io")):
        pytest.skip("tlsc-io is not installed")


def deliver(home, mta, pki, strictness):
    home.route("example.org:127.0.0.1:%d" % mta.port)
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "%d\n" % strictness)
    return home.remote("example.org", "sender@src.example", "someone@example.org", message=MSG)


def one_held(mta):
    held = mta.held(1)
    assert len(held) == 1, mta.log_text()[-3000:]
    return held[0][1]


@pytest.mark.parametrize("strictness", [0, 2])
def test_postfix_receives_over_starttls(home, mta, pki, strictness):
    _, raw = deliver(home, mta, pki, strictness)
    verified = b"verified" if strictness == 2 else b"unverified"
    assert raw.startswith(b"r\0K127.0.0.1 accepted message. (TLSv1.") and b" %s, cipher " % verified in raw, raw
    assert b"Remote host said: 250 2.0.0 Ok: queued as " in raw
    content = one_held(mta)
    assert b"(using TLSv1." in content and b"with cipher" in content, content
    assert b"hello Postfix\n.a dot line\nlast line\n" in content  # postcat shows the unstuffed body
    log = mta.wait_log("ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1")  # logged at the disconnect: may lag
    assert "TLS connection established from localhost[127.0.0.1]" in log
    assert "ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1" in log  # EHLO again inside TLS


@pytest.mark.parametrize("mta", [("smtpd_tls_ask_ccert = yes", "smtpd_tls_CAfile = %(ca)s")], indirect=True)
def test_postfix_sees_the_client_certificate(home, mta, pki):
    cert, key = pki.client("client.test")
    home.control("clientcert", cert + "\n")
    home.control("clientkey", key + "\n")
    _, raw = deliver(home, mta, pki, 2)
    assert raw.startswith(b"r\0K127.0.0.1 accepted message. (TLSv1."), raw
    content = one_held(mta)
    # trustme's certificates carry the name as a subjectAltName only: Postfix shows CN ""
    assert b'Issuer "qremote tests trusted CA" (verified OK)' in content, content
