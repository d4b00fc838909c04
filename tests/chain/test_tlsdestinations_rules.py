"""More of control/tlsdestinations through the installed chain (doc/tlsdestinations.html):
a line's cipher list and verification depth, anonymous suites, `=fingerprint` without `%`,
pinning over SMTPS (`;s`) and bound to a sender domain; and s/qmail's own example file
(its lines 9-20) parsed and decided. Helpers: tests/chain/test_tlsdestinations.py."""

import os
import ssl

import pytest

from tests.chain.test_tlsdestinations import (MSG, NO_STARTTLS, REQUIRED, WIRE_MSG, _fingerprint, deliver,
                                              over_tls, setup)
from tests.support.tlsserver import TLSServer


@pytest.fixture(autouse=True)
def need_tlsc_io(installed):
    if not os.path.exists(os.path.join(installed, "tlsc-io")):
        pytest.skip("tlsc-io is not installed (commands/tlsc-io missing)")


SERVER_CIPHER = "ECDHE-ECDSA-AES128-GCM-SHA256"  # trustme's keys are ECDSA


def tls12_only(s, ciphers=SERVER_CIPHER):
    """The STARTTLS server speaks TLS 1.2 with that cipher list only (-C acts on TLS <= 1.2)."""
    s.context.maximum_version = ssl.TLSVersion.TLSv1_2
    s.context.set_ciphers(ciphers)
    return s


# --- `dest:|CIPHERS` ---

def test_cipher_list_the_server_lacks_is_a_z_naming_the_line(home, server, pki):
    s = tls12_only(setup(home, server, pki, "# ciphers", "127.0.0.1:|ECDHE-ECDSA-CHACHA20-POLY1305"))
    raw = deliver(home)
    assert raw.startswith(b"Z" + REQUIRED % 2 + b"127.0.0.1: TLS handshake error: "), raw
    assert not any(session.messages for session in s.wait_sessions(len(s.sessions)))


def test_cipher_list_the_server_has_is_used(home, server, pki):
    s = tls12_only(setup(home, server, pki, "127.0.0.1:|ECDHE-ECDSA-CHACHA20-POLY1305:" + SERVER_CIPHER))
    raw = deliver(home)
    assert raw.startswith(b"r\0K127.0.0.1 accepted message. (TLSv1.2 unverified, cipher %s)"
                          % SERVER_CIPHER.encode()), raw
    assert s.wait_sessions()[0].messages == [WIRE_MSG]


def test_cipher_list_with_cafile_and_depth(home, server, pki):
    """All three positional fields at once: cafile|ciphers|verifydepth."""
    tls12_only(setup(home, server, pki, "127.0.0.1:%s|%s|0" % (pki.ca_file, SERVER_CIPHER)))
    raw = deliver(home)
    assert raw.startswith(b"r\0K127.0.0.1 accepted message. (TLSv1.2 verified CA, cipher %s)"
                          % SERVER_CIPHER.encode()), raw


# --- `dest:CAFILE||DEPTH` against a chain with an intermediate CA ---

def test_verifydepth_too_small_for_the_chain_is_a_z(home, server, pki):
    s = setup(home, server, pki, "127.0.0.1:%s||0" % pki.ca_file, cert=pki.intermediate("127.0.0.1"))
    raw = deliver(home)
    assert raw.startswith(b"Z" + REQUIRED % 1 + b"127.0.0.1: certificate chain too deep: "), raw
    assert not any(session.messages for session in s.wait_sessions(len(s.sessions)))


@pytest.mark.parametrize("depth", ["1", "2", ""])
def test_verifydepth_enough_for_the_chain(home, server, pki, depth):
    setup(home, server, pki, "127.0.0.1:%s||%s" % (pki.ca_file, depth), cert=pki.intermediate("127.0.0.1"))
    assert over_tls(deliver(home), verified=b"verified CA")


# --- anonymous suites: `-dest:`, `-:`, `-*:` against a server without a certificate ---

def anonymous_server(s):
    """The STARTTLS server has no certificate: TLS 1.2 with aNULL suites only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("aNULL@SECLEVEL=0")
    s.context = context
    return s


@pytest.mark.parametrize("lines,strictness", [(["-127.0.0.1:"], None), (["-:"], 0), (["-:"], 1), (["*:", "-:"], None),
                                              (["-*:"], None), (["-127.0.0.1:||aNULL:!kRSA"], None)])
def test_anonymous_rules_take_a_server_without_certificate(home, server, pki, lines, strictness):
    """`-:` alone adds anonymous suites to what tlsstrictness does (TLS only with trustanchors,
    as before tlsdestinations), and to `*:`."""
    anchors = pki.ca_file if strictness is not None else None
    s = anonymous_server(setup(home, server, pki, *lines, strictness=strictness, anchors=anchors))
    raw = deliver(home)
    assert raw.startswith(b"r\0K127.0.0.1 accepted message. (TLSv1.2 unverified, cipher AECDH-"), raw
    session, = s.wait_sessions()
    assert session.tls and session.messages == [WIRE_MSG]


def test_without_the_dash_an_anonymous_server_fails_the_handshake(home, server, pki):
    s = anonymous_server(setup(home, server, pki, "127.0.0.1:"))
    raw = deliver(home)
    assert raw.startswith(b"Z" + REQUIRED % 1 + b"127.0.0.1: TLS handshake error: "), raw
    assert not any(session.messages for session in s.wait_sessions(len(s.sessions)))


# --- `dest:=fingerprint` without `%` (s/qmail's second form of a line) ---

def test_fingerprint_without_percent_pins(home, server, pki):
    cert = pki.untrusted("127.0.0.1")
    setup(home, server, pki, "127.0.0.1:=" + _fingerprint(cert, "sha256"), cert=cert)
    assert over_tls(deliver(home), verified=b"CERT pinning")
    s = setup(home, server, pki, "127.0.0.1:=" + "0" * 64, cert=cert)
    raw = deliver(home)
    assert raw.startswith(b"Z" + REQUIRED % 1 + b"127.0.0.1: certificate pinning failed: "), raw
    assert not any(session.messages for session in s.wait_sessions(len(s.sessions)))


# --- pinning over SMTPS, and bound to a sender domain ---

def test_pinning_over_smtps(home, server, pki):
    cert = pki.untrusted("127.0.0.1")
    smtps = TLSServer(*cert)
    try:
        setup(home, server, pki, "%%127.0.0.1:=%s;s%d" % (_fingerprint(cert, "sha512"), smtps.port))
        raw = deliver(home)
        assert over_tls(raw, verified=b"CERT pinning"), raw
        assert smtps.wait_sessions()[0].messages == [WIRE_MSG]
        setup(home, server, pki, "%%127.0.0.1:=%s;s%d" % ("1" * 40, smtps.port))
        raw = deliver(home)
        assert raw.startswith(b"Z" + REQUIRED % 1 + b"127.0.0.1: certificate pinning failed: "), raw
        assert len(smtps.sessions) == 2 and not smtps.wait_sessions(2)[1].messages
    finally:
        smtps.stop()


@pytest.mark.parametrize("form", ["%%127.0.0.1:=%s|||src.example", "%%127.0.0.1:=%s;PORT|src.example"])
def test_pinning_bound_to_a_sender_domain(home, server, pki, form):
    """The sender's line pins a certificate the server does not have; the unbound line pins
    the one it has: only mail from src.example is deferred."""
    cert = pki.untrusted("127.0.0.1")
    s = setup(home, server, pki, form % ("ab" * 20), "%127.0.0.1:=" + _fingerprint(cert, "sha224"), cert=cert)
    assert over_tls(deliver(home, "a@other.example"), verified=b"CERT pinning")
    raw = deliver(home, "a@src.example")
    assert raw.startswith(b"Z" + REQUIRED % 1 + b"127.0.0.1: certificate pinning failed: "), raw
    assert [bool(session.messages) for session in s.wait_sessions(2)] == [True, False]


# --- s/qmail's example, lines (9) to (20) of its qmail-remote(8) ---

SQMAIL_EXAMPLE = """\
example.com:
securityfirst.com:/etc/ssl/cafile|!SSLv2:HIGH
remote.com:/etc/ssl/certdir/||3;465
mx.partner.com:/etc/ssl/partnerca||2|mydomain.net
=mx.myfriend.com:/etc/ssl/cacert||4
~wildneighbor.net:
-adhonlydomain.com:||aNULL:!kRSA
%peer.partner.com:=E44194C56EF0123456789ABCDEF0123456789ABC
!nosslhost.example.com:
hiddenpartner.org:;35
?tlsold.net:
/nodane.org:
"""


class Policy:  # plan.Policy's fields that decide() reads: no tlsstrictness, no trustanchors
    wanted, strictness, anchors, clientcert, clientkey = False, 0, b"", None, None


def _rule(dests, host, sender_domain=b""):
    from qremote import tlsrule
    return tlsrule.decide(Policy(), dests, host=host, mxname=b"mx1." + host, sender_domain=sender_domain)


def test_sqmail_example_file_each_line():
    """Every line parses, and each destination gets the rule doc/tlsdestinations.html gives
    it (the MX is mx1.DOMAIN, so the domain's line decides, as for a delivery by MX)."""
    from qremote import candidates, tlsdest
    dests = tlsdest.parse(list(enumerate(SQMAIL_EXAMPLE.encode().splitlines(), 1)))
    assert len(dests.table) == 12 and dests.global_rule is None

    def fields(rule):
        return (rule.mode, rule.fallback, rule.verify, rule.anchors, rule.ciphers, rule.depth, rule.anonymous,
                rule.pins, rule.port, rule.protocol, rule.dane_off, rule.origin, rule.required)

    def line(n):
        return "control/tlsdestinations line %d" % n
    expected = {
        b"example.com": ("must", False, None, None, None, None, False, [], None, None, False, line(1)),
        b"securityfirst.com": ("must", False, "ca", b"/etc/ssl/cafile", "!SSLv2:HIGH", None, False, [], None, None,
                               False, line(2)),
        b"remote.com": ("must", False, "ca", b"/etc/ssl/certdir/", None, 3, False, [], 465, candidates.SMTPS,
                        False, line(3)),
        b"mx.partner.com": ("none", False, None, None, None, None, False, [], None, None, False, ""),
        b"mx.myfriend.com": ("must", False, "ca+dn", b"/etc/ssl/cacert", None, 4, False, [], None, None, False,
                             line(5)),
        b"wildneighbor.net": ("must", False, "ca+dn*", None, None, None, False, [], None, None, False, line(6)),
        b"adhonlydomain.com": ("must", False, None, None, "aNULL:!kRSA", None, True, [], None, None, False,
                               line(7)),
        b"peer.partner.com": ("must", False, "pin", None, None, None, False,
                              ["e44194c56ef0123456789abcdef0123456789abc"], None, None, False, line(8)),
        b"nosslhost.example.com": ("none", False, None, None, None, None, False, [], None, None, False, ""),
        b"hiddenpartner.org": ("must", False, None, None, None, None, False, [], 35, None, False, line(10)),
        b"tlsold.net": ("may", True, None, None, None, None, False, [], None, None, False, ""),
        b"nodane.org": ("must", False, None, None, None, None, False, [], None, None, True, line(12)),
    }
    for host, want in expected.items():
        rule = _rule(dests, host)
        origin = "none" if host == b"mx.partner.com" else "tlsdestinations"
        assert fields(rule) == want[:10] + (want[10], origin, want[11]), host
    # line 12 binds mx.partner.com to mail from mydomain.net: mandatory TLS verified against
    # /etc/ssl/partnerca, depth 2; the files are checked before connecting (rule.checks)
    bound = _rule(dests, b"mx.partner.com", b"mydomain.net")
    assert fields(bound) == ("must", False, "ca", b"/etc/ssl/partnerca", None, 2, False, [], None, None, False,
                             "tlsdestinations", line(4))
    assert bound.checks == [("tlsdestinations line 4", b"/etc/ssl/partnerca")]
    # a subdomain of a destination gets its line; `=`/`~` without a cafile: the system store
    assert _rule(dests, b"eu.remote.com").port == 465
    assert _rule(dests, b"wildneighbor.net").system and not _rule(dests, b"mx.myfriend.com").system
    # DANE would win over lines 1-7 and 10, never over `%`, `!` or `/` (tlsrule's level 1)
    assert _rule(dests, b"peer.partner.com").origin == "tlsdestinations"


def test_sqmail_example_file_through_qmail_remote(home, server, pki):
    """The whole example as control/tlsdestinations: a route's relay named like line 17
    (`!nosslhost.example.com:`) goes in cleartext to a server without STARTTLS; the files
    named by other lines are not needed for it."""
    from tests.support.dnsserver import DNSServer
    s = server(ehlo=NO_STARTTLS)
    dns = DNSServer()
    try:
        dns.add("nosslhost.example.com", "A", "127.0.0.1")
        dns.add("mx1.example.com", "A", "127.0.0.1")
        home.route("example.org:nosslhost.example.com:%d" % s.port, "example.com:mx1.example.com:%d" % s.port)
        home.control("tlsdestinations", SQMAIL_EXAMPLE)
        env = {"DNSCACHEIP": dns.address()}
        raw = home.remote("example.org", "a@src.example", "good@example.org", message=MSG, **env)[1]
        assert raw == b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0", raw
        # line 9 `example.com:` (the route's relay is mx1.example.com, a name under it)
        raw = home.remote("example.com", "a@src.example", "good@example.com", message=MSG, **env)[1]
        assert raw.startswith(b"ZSorry, no server would take the message over TLS, as control/tlsdestinations "
                              b"line 1 requires (127.0.0.1: no STARTTLS offered"), raw
    finally:
        dns.stop()


# --- after a failed handshake of a new kind (pin, depth), the resume goes to the next address ---

@pytest.fixture
def two_addresses(home, server, pki):
    """example.org routed to relay.test, which has two addresses (127.0.0.1 first, then
    127.0.0.2) on one port; returns a function (cert_first, cert_second) -> the two servers."""
    from tests.support.dnsserver import DNSServer
    dns = DNSServer()
    dns.add("relay.test", "A", "127.0.0.1")
    dns.add("relay.test", "A", "127.0.0.2")

    def start(first_cert, second_cert):
        first = server(tls_cert=first_cert)
        second = server(tls_cert=second_cert, host="127.0.0.2", port=first.port)
        home.route("example.org:relay.test:%d" % first.port)
        return first, second
    start.env = {"DNSCACHEIP": dns.address()}
    yield start
    dns.stop()


def _deliver_to_relay(home, two_addresses):
    return home.remote("example.org", "a@src.example", "good@example.org", message=MSG, **two_addresses.env)[1]


@pytest.mark.parametrize("bad_first", [True, False])
@pytest.mark.parametrize("kind", ["pin", "depth"])
def test_a_failed_check_skips_the_address_never_cleartext(home, pki, two_addresses, kind, bad_first):
    """A must rule: the address whose certificate fails the pin (or is too deep) gets no
    message and no cleartext reconnection; the other address is tried under the same rule.
    The bad certificate is on each address in turn, so whatever order the addresses come
    in, one case goes through the resume (--qremote-resume) after the failed check."""
    if kind == "pin":
        good, bad = pki.untrusted("relay.test"), pki.untrusted("relay.test")
        home.control("tlsdestinations", "%%relay.test:=%s\n" % _fingerprint(good, "sha256"))
        words = b"CERT pinning"
    else:
        good, bad = pki.server("relay.test"), pki.intermediate("relay.test")
        home.control("tlsdestinations", "relay.test:%s||0\n" % pki.ca_file)
        words = b"verified CA"
    first, second = two_addresses(bad, good) if bad_first else two_addresses(good, bad)
    (bad_server, good_server) = (first, second) if bad_first else (second, first)
    raw = _deliver_to_relay(home, two_addresses)
    assert raw.startswith(b"r\0K%s accepted message. (TLSv1." % good_server.host.encode()), raw
    assert b" %s, cipher " % words in raw, raw
    assert good_server.wait_sessions()[0].messages == [WIRE_MSG]
    assert len(bad_server.sessions) <= 1
    if bad_server.sessions:  # tried first: the check failed, then the resume went on
        assert bad_server.wait_sessions()[0].commands == [b"EHLO me.example", b"STARTTLS"]
        assert not bad_server.sessions[0].messages


def test_every_address_failing_the_pin_is_a_z_naming_each(home, pki, two_addresses):
    first, second = two_addresses(pki.untrusted("relay.test"), pki.untrusted("relay.test"))
    home.control("tlsdestinations", "%relay.test:=" + "cd" * 32 + "\n")
    raw = _deliver_to_relay(home, two_addresses)
    assert raw.startswith(b"Z" + REQUIRED % 1), raw
    assert b"127.0.0.1: certificate pinning failed: " in raw and b"127.0.0.2: certificate pinning failed: " in raw
    assert len(first.sessions) == 1 and len(second.sessions) == 1
    assert not first.wait_sessions()[0].messages and not second.wait_sessions()[0].messages
