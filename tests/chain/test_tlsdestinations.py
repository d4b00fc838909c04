"""control/tlsdestinations and control/domaincerts through the installed chain
(doc/tlsdestinations.html): the rules that today's tlsc-io options can enforce, against
the scripted loopback server with real TLS and generated certificates. The destination
of an IP route is its address, so the lines here are keyed by 127.0.0.x; a relay name
is matched the same way (unit tests: tests/unit/test_tlsrule.py)."""

import os

import pytest

from tests.support.smtpserver import CLOSE
from tests.support.tlsserver import TLSServer

MSG = b"Subject: tlsdestinations\n\nhello\n"
WIRE_MSG = b"Subject: tlsdestinations\r\n\r\nhello\r\n"
NO_STARTTLS = b"250-sink.test\r\n250 PIPELINING\r\n"
REQUIRED = b"Sorry, no server would take the message over TLS, as control/tlsdestinations line %d requires ("


@pytest.fixture(autouse=True)
def need_tlsc_io(installed):
    if not os.path.exists(os.path.join(installed, "tlsc-io")):
        pytest.skip("tlsc-io is not installed (commands/tlsc-io missing)")


def setup(home, server, pki, *lines, cert=None, strictness=None, anchors=None, **script):
    """A STARTTLS-capable scripted server behind the route example.org -> 127.0.0.1:PORT,
    and control/tlsdestinations holding lines (PORT in a line is replaced by the port)."""
    s = server(tls_cert=cert or pki.server("127.0.0.1"), **script)
    home.route("example.org:127.0.0.1:%d" % s.port)
    home.control("timeoutconnect", "5\n")
    if anchors:
        home.control("trustanchors", anchors + "\n")
    if strictness is not None:
        home.control("tlsstrictness", "%d\n" % strictness)
    home.control("tlsdestinations", "".join(line.replace("PORT", "%d" % s.port) + "\n" for line in lines))
    return s


def deliver(home, sender="sender@src.example"):
    return home.remote("example.org", sender, "good@example.org", message=MSG)[1]


def over_tls(raw, verified):
    """K over TLS; verified: True (tlsstrictness 2's "verified"), False, or s/qmail's words."""
    word = {True: b"verified", False: b"unverified"}.get(verified, verified)
    return raw.startswith(b"r\0K127.0.0.1 accepted message. (TLSv1.") and (b" %s, cipher " % word) in raw


# --- `!`: never STARTTLS ---

def test_bang_line_never_starttls_even_at_strictness_2(home, server, pki):
    s = setup(home, server, pki, "!127.0.0.1:", anchors=pki.ca_file, strictness=2)
    raw = deliver(home)
    assert raw == b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0", raw
    session, = s.wait_sessions()
    assert b"STARTTLS" not in session.commands and session.messages == [WIRE_MSG]


# --- an empty line: mandatory STARTTLS, any certificate ---

def test_empty_line_requires_starttls_without_trustanchors(home, server, pki):
    s = setup(home, server, pki, "# mandatory", "127.0.0.1:", cert=pki.untrusted("127.0.0.1"))
    raw = deliver(home)
    assert over_tls(raw, verified=False), raw
    session, = s.wait_sessions()
    assert session.tls and session.messages == [WIRE_MSG]


@pytest.mark.parametrize("script,why", [
    ({"ehlo": NO_STARTTLS}, b"no STARTTLS offered"),
    ({"starttls": b"454 4.7.0 TLS not available\r\n"}, b"STARTTLS refused: 454 4.7.0 TLS not available"),
    ({"tls_handshake": CLOSE}, b"connection closed during the TLS handshake"),  # through the resume state
])
def test_empty_line_without_tls_is_a_z_naming_the_line(home, server, pki, script, why):
    s = setup(home, server, pki, "# mandatory", "127.0.0.1:", **script)
    raw = deliver(home)
    assert raw.startswith(b"Z" + REQUIRED % 2 + b"127.0.0.1: " + why), raw
    assert raw.endswith(b"(#4.7.5)\n\0")
    assert not any(session.messages for session in s.wait_sessions(len(s.sessions)))


def test_slash_line_is_mandatory_too(home, server, pki):
    setup(home, server, pki, "/127.0.0.1:", ehlo=NO_STARTTLS)
    assert deliver(home).startswith(b"Z" + REQUIRED % 1 + b"127.0.0.1: no STARTTLS offered")


# --- `?`: cleartext after a failed handshake, even under tlsstrictness 2 ---

def test_question_line_falls_back_to_cleartext_after_a_failed_handshake(home, server, pki):
    s = setup(home, server, pki, "?127.0.0.1:", anchors=pki.ca_file, strictness=2, tls_handshake=CLOSE)
    raw = deliver(home)
    assert raw.startswith(b"r\0K127.0.0.1 accepted message. (sent in cleartext: the TLS handshake failed ("
                          b"connection closed during the TLS handshake"), raw
    first, second = s.wait_sessions(2)
    assert first.commands == [b"EHLO me.example", b"STARTTLS"] and not first.messages
    assert b"STARTTLS" not in second.commands and second.messages == [WIRE_MSG]


def test_question_line_uses_tls_when_it_works(home, server, pki):
    setup(home, server, pki, "?127.0.0.1:", cert=pki.untrusted("127.0.0.1"))
    assert over_tls(deliver(home), verified=False)


# --- global rules: `*:` opportunistic, `+*:` `=*:` `~*:` verified with control/trustanchors ---

def test_star_global_rule_is_opportunistic_without_trustanchors(home, server, pki):
    s = setup(home, server, pki, "*:", cert=pki.untrusted("127.0.0.1"))
    assert over_tls(deliver(home), verified=False)
    s2 = setup(home, server, pki, "*:", ehlo=NO_STARTTLS)
    assert deliver(home).startswith(b"r\0K127.0.0.1 accepted message.\n")
    assert s.wait_sessions() and s2.wait_sessions()


@pytest.mark.parametrize("rule,words", [("+*:", b"verified CA"), ("=*:", b"verified CA+DN"),
                                        ("~*:", b"verified CA+DN*")])
def test_verifying_global_rules_verify_against_trustanchors(home, server, pki, rule, words):
    """The K says how, in s/qmail's words: the chain (+), and the name exactly (=) or with
    wildcards (~)."""
    setup(home, server, pki, rule, anchors=pki.ca_file)
    assert over_tls(deliver(home), verified=words)


def test_ca_only_rule_takes_a_certificate_for_another_name(home, server, pki):
    """`+*:` (and a line's cafile) validate the chain only, as s/qmail's "verified CA"."""
    setup(home, server, pki, "+*:", anchors=pki.ca_file, cert=pki.server("elsewhere.test"))
    assert over_tls(deliver(home), verified=b"verified CA")


@pytest.fixture
def dns_stub():
    from tests.support.dnsserver import DNSServer
    stub = DNSServer()
    yield stub
    stub.stop()


def test_exact_name_rule_refuses_a_wildcard_the_wildcard_rule_takes(home, server, pki, dns_stub):
    """`=` wants the FQDN itself; `~` takes a wildcard certificate (doc/tlsdestinations.html)."""
    wildcard = pki.server("*.example.test")
    s = setup(home, server, pki, "=*:", anchors=pki.ca_file, cert=wildcard)
    home.route("example.org:mx.example.test:%d" % s.port)
    dns_stub.add("mx.example.test", "A", "127.0.0.1")
    env = {"DNSCACHEIP": dns_stub.address()}
    raw = home.remote("example.org", "sender@src.example", "good@example.org", message=MSG, **env)[1]
    assert raw.startswith(b"Z" + REQUIRED % 1 + b"127.0.0.1: certificate name mismatch"), raw
    home.control("tlsdestinations", "~*:\n")
    raw = home.remote("example.org", "sender@src.example", "good@example.org", message=MSG, **env)[1]
    assert raw.startswith(b"r\0K127.0.0.1 accepted message. (TLSv1.") and b" verified CA+DN*, " in raw, raw


@pytest.mark.parametrize("rule", ["+*:", "=*:", "~*:"])
def test_verifying_global_rules_refuse_an_untrusted_certificate(home, server, pki, rule):
    s = setup(home, server, pki, "# global", rule, anchors=pki.ca_file, cert=pki.untrusted("127.0.0.1"))
    raw = deliver(home)
    assert raw.startswith(b"Z" + REQUIRED % 2 + b"127.0.0.1: certificate not trusted: "), raw
    assert not any(session.messages for session in s.sessions)


@pytest.mark.parametrize("rule", ["=*:", "~*:"])
def test_name_checking_global_rules_refuse_another_name(home, server, pki, rule):
    setup(home, server, pki, rule, anchors=pki.ca_file, cert=pki.server("127.0.0.9"))
    raw = deliver(home)
    assert raw.startswith(b"Z" + REQUIRED % 1 + b"127.0.0.1: certificate name mismatch"), raw


def test_a_destination_line_wins_over_a_global_rule(home, server, pki):
    setup(home, server, pki, "=*:", "!127.0.0.1:", anchors=pki.ca_file, strictness=2, ehlo=NO_STARTTLS)
    assert deliver(home).startswith(b"r\0K127.0.0.1 accepted message.\n")


def test_cafile_of_a_line_verifies(home, server, pki):
    setup(home, server, pki, "127.0.0.1:%s" % pki.ca_file)
    assert over_tls(deliver(home), verified=b"verified CA")
    setup(home, server, pki, "127.0.0.1:%s" % pki.other_ca_file)
    assert deliver(home).startswith(b"Z" + REQUIRED % 1 + b"127.0.0.1: certificate not trusted: ")


# --- sender-bound lines ---

@pytest.mark.parametrize("line", ["127.0.0.1:|||src.example", "127.0.0.1:;PORT|src.example"])
def test_a_sender_bound_line_applies_to_that_sender_only(home, server, pki, line):
    s = setup(home, server, pki, line, ehlo=NO_STARTTLS)
    assert deliver(home, "a@other.example").startswith(b"r\0K127.0.0.1 accepted message.\n")
    assert deliver(home, "a@src.example").startswith(b"Z" + REQUIRED % 1)
    assert deliver(home, "a@SRC.Example").startswith(b"Z" + REQUIRED % 1)
    assert [bool(session.messages) for session in s.wait_sessions(3)] == [True, False, False]


def test_sender_bound_line_before_the_unbound_one(home, server, pki):
    setup(home, server, pki, "!127.0.0.1:|||src.example", "127.0.0.1:", ehlo=NO_STARTTLS)
    assert deliver(home, "a@src.example").startswith(b"r\0K127.0.0.1 accepted message.\n")
    assert deliver(home, "a@other.example").startswith(b"Z" + REQUIRED % 2)


# --- the port: `;PORT`, `;sPORT`, `;465` (SMTPS) ---

def test_port_of_the_line_overrides_the_route(home, server, pki):
    other = server(tls_cert=pki.server("127.0.0.1"))
    setup(home, server, pki, "127.0.0.1:;%d" % other.port)
    assert over_tls(deliver(home), verified=False)
    session, = other.wait_sessions()
    assert session.messages == [WIRE_MSG]


def test_s_port_is_smtps(home, server, pki):
    cert, key = pki.server("127.0.0.1")
    smtps = TLSServer(cert, key)
    try:
        setup(home, server, pki, "127.0.0.1:;s%d" % smtps.port)
        raw = deliver(home)
        assert over_tls(raw, verified=False), raw
        session, = smtps.wait_sessions()
        assert session.commands[0] == b"EHLO me.example" and session.messages == [WIRE_MSG]
    finally:
        smtps.stop()


def test_port_465_is_smtps(home, server, pki):
    cert, key = pki.server("127.0.0.7")
    try:
        smtps = TLSServer(cert, key, host="127.0.0.7", port=465)
    except OSError as error:
        pytest.skip("cannot listen on 127.0.0.7:465: %s" % error)
    try:
        home.route("example.org:127.0.0.7:2525")
        home.control("tlsdestinations", "127.0.0.7:;465\n")
        raw = deliver(home)
        assert raw.startswith(b"r\0K127.0.0.7 accepted message. (TLSv1."), raw
        assert smtps.wait_sessions()[0].messages == [WIRE_MSG]
    finally:
        smtps.stop()


# --- what cannot be used is a Z naming it ---

@pytest.mark.parametrize("line,why", [
    ("127.0.0.1", b"line 2: no ':' after the destination"),
    ("127.0.0.1:;99999", b"line 2: the port must be a number from 1 to 65535"),
    ("%127.0.0.1:=abc", b"line 2: the fingerprint must be 40, 56, 64, 128 hex digits"),
    ("*:/etc/ssl/ca.pem", b"line 2: a global rule (*:) takes nothing after ':'"),
])
def test_malformed_line_is_a_z_naming_file_and_line(home, server, pki, line, why):
    s = setup(home, server, pki, "# first", line)
    raw = deliver(home)
    assert raw.startswith(b"ZInvalid control file control/tlsdestinations: " + why), raw
    assert s.sessions == []  # before any connection


def test_unreadable_cafile_is_a_z_naming_it_before_any_connection(home, server, pki):
    s = setup(home, server, pki, "127.0.0.1:/nonexistent/ca.pem")
    raw = deliver(home)
    assert raw == (b"ZUnable to use /nonexistent/ca.pem named by control/tlsdestinations line 1: No such file or "
                   b"directory. (#4.3.0)\n\0"), raw
    assert s.sessions == []


def _fingerprint(cert, digest):
    """The digest of the leaf (the first certificate of pki's chain file)."""
    import hashlib
    import ssl
    with open(cert[0]) as f:
        leaf = f.read().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return hashlib.new(digest, ssl.PEM_cert_to_DER_cert(leaf)).hexdigest()


@pytest.mark.parametrize("digest", ["sha1", "sha224", "sha256", "sha512"])
def test_pinning_each_digest_length(home, server, pki, digest):
    """`%host:=fingerprint`: the digest is chosen by its length, colons stripped, any case;
    the certificate need not verify (an untrusted one here): the pin is the check."""
    cert = pki.untrusted("127.0.0.1")
    pin = _fingerprint(cert, digest).upper()
    pin = ":".join(pin[i:i + 2] for i in range(0, len(pin), 2))
    s = setup(home, server, pki, "%127.0.0.1:=" + pin, cert=cert)
    raw = deliver(home)
    assert raw.startswith(b"r\0K127.0.0.1 accepted message. (TLSv1.") and b" CERT pinning, cipher " in raw, raw
    assert s.wait_sessions()[0].messages


def test_pinning_mismatch_defers_and_sends_nothing(home, server, pki):
    s = setup(home, server, pki, "%127.0.0.1:=" + "ab" * 32)
    raw = deliver(home)
    assert raw.startswith(b"ZSorry, no server would take the message over TLS, as control/tlsdestinations line 1 "
                          b"requires (127.0.0.1: certificate pinning failed: "), raw
    assert b"does not match provided fingerprint" in raw
    assert all(not session.messages for session in s.sessions)


# --- domaincerts: the client certificate for the sender's domain ---

def test_domaincerts_presents_the_senders_certificate(home, server, pki):
    s = setup(home, server, pki, "127.0.0.1:", tls_client_ca=pki.ca_file, tls_require_client=True)
    cert, key = pki.client("src.example")
    other, other_key = pki.client("default.example")
    home.control("domaincerts", "*:%s|%s\nsrc.example:%s|%s\n" % (other, other_key, cert, key))
    assert over_tls(deliver(home), verified=False)
    assert over_tls(deliver(home, "a@elsewhere.example"), verified=False)
    first, second = s.wait_sessions(2)
    assert ("DNS", "src.example") in first.client_cert["subjectAltName"]
    assert ("DNS", "default.example") in second.client_cert["subjectAltName"]


def test_domaincerts_with_tlsstrictness_alone(home, server, pki):
    s = server(tls_cert=pki.server("127.0.0.1"), tls_client_ca=pki.ca_file, tls_require_client=True)
    home.route("example.org:127.0.0.1:%d" % s.port)
    home.control("trustanchors", pki.ca_file + "\n")
    cert, key = pki.client("src.example")
    home.control("domaincerts", "src.example:%s|%s\n" % (cert, key))
    assert over_tls(deliver(home), verified=False)
    assert ("DNS", "src.example") in s.wait_sessions()[0].client_cert["subjectAltName"]


def test_domaincerts_missing_file_is_a_z_naming_the_line(home, server, pki):
    s = setup(home, server, pki, "127.0.0.1:")
    home.control("domaincerts", "# certs\n*:/nonexistent/client.pem\n")
    raw = deliver(home)
    assert raw == (b"ZUnable to use /nonexistent/client.pem named by control/domaincerts line 2: No such file or "
                   b"directory. (#4.3.0)\n\0"), raw
    assert s.sessions == []
