"""STARTTLS through the installed chain: qmail-remote's policy (control/trustanchors,
tlsstrictness 0/1/2, clientcert/clientkey), tlsc-io's handshake and its failure
continuation (qmail-remote --qremote-resume), and qmail-remote-io's K text over TLS.
Real TLS with generated certificates (the pki fixture) against the scripted loopback
server; names come from a loopback DNS server (tests/support/dnsserver.py)."""

import os
import socket

import pytest

from tests.support.smtpserver import CLOSE, STALL, SMTPServer

MSG = b"Subject: tls\n\nhello over TLS\n.dot line\n"
WIRE_MSG = b"Subject: tls\r\n\r\nhello over TLS\r\n..dot line\r\n"


@pytest.fixture(autouse=True)
def need_tlsc_io(installed):
    if not os.path.exists(os.path.join(installed, "tlsc-io")):
        pytest.skip("tlsc-io is not installed (commands/tlsc-io missing)")


@pytest.fixture
def dns():
    try:
        from tests.support.dnsserver import DNSServer
    except ImportError as error:
        pytest.skip("no DNS test server: %s" % error)
    servers = []

    def start(records):
        server = DNSServer()
        for name, rdtype, *values in records:
            server.add(name, rdtype, *values)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


def tls_setup(home, strictness, anchors):
    home.control("trustanchors", anchors + "\n")
    home.control("tlsstrictness", "%d\n" % strictness)
    home.control("timeoutconnect", "5\n")


def routed(home, server, pki, strictness=0, cert_names=("127.0.0.1",), anchors=None, cert=None, **kw):
    """A TLS-capable scripted server behind an IP route (its certificate names the address)."""
    s = server(tls_cert=cert or pki.server(*cert_names), **kw)
    home.route("example.org:127.0.0.1:%d" % s.port)
    tls_setup(home, strictness, anchors or pki.ca_file)
    return s


def deliver(home, *recipients, **kw):
    kw.setdefault("message", MSG)
    return home.remote("example.org", "sender@src.example", *(recipients or ("good@example.org",)), **kw)


def over_tls(raw, verified):
    word = b"verified" if verified else b"unverified"
    return raw.startswith(b"r\0K127.0.0.1 accepted message. (TLSv1.") and (b" %s, cipher " % word) in raw


def named_route(home, dns, server, name="relay.test", **kw):
    """A server reached through the smtproutes relay NAME (resolved by the test DNS server)."""
    s = server(**kw)
    d = dns([(name, "A", "127.0.0.1")])
    home.route("example.org:%s:%d" % (name, s.port))
    return s, {"DNSCACHEIP": d.address()}


# --- strictness 0 ---

def test_s0_offered_goes_over_tls_and_says_ehlo_again(home, server, pki):
    s = routed(home, server, pki, 0)
    reports, raw = deliver(home)
    assert over_tls(raw, verified=False), raw
    assert raw.endswith(b")\nRemote host said: 250 ok queued\n\0")
    session, = s.wait_sessions()
    assert session.tls and session.tls_version.startswith("TLSv1.")
    assert session.commands[:session.tls_at] == [b"EHLO me.example", b"STARTTLS"]
    assert session.after_tls()[0] == b"EHLO me.example"
    assert session.messages == [WIRE_MSG]
    assert session.sni is None  # an IP route has no name: no SNI (RFC 6066)


def test_s0_not_offered_is_cleartext_without_note(home, server, pki):
    s = routed(home, server, pki, 0, ehlo=b"250-sink.test\r\n250 PIPELINING\r\n")
    _, raw = deliver(home)
    assert raw == b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0"
    session, = s.wait_sessions()
    assert not session.tls and b"STARTTLS" not in session.commands


def test_s0_refused_continues_in_cleartext_on_the_same_connection(home, server, pki):
    s = routed(home, server, pki, 0, starttls=b"454 4.7.0 TLS not available\r\n")
    _, raw = deliver(home)
    assert raw == b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0"
    session, = s.wait_sessions()
    assert session.commands[:3] == [b"EHLO me.example", b"STARTTLS", b"MAIL FROM:<sender@src.example> SIZE=%d"
                                    % (len(MSG) + MSG.count(b"\n"))]  # SIZE= with CRLF line ends
    assert len(s.sessions) == 1


@pytest.mark.parametrize("handshake,why", [
    (CLOSE, b"connection closed during the TLS handshake"),
    (STALL, b"TLS handshake timed out"),
])
def test_s0_handshake_failure_reconnects_in_cleartext_with_note(home, server, pki, handshake, why):
    s = routed(home, server, pki, 0, tls_handshake=handshake)
    home.control("timeoutconnect", "2\n")
    _, raw = deliver(home)
    assert raw.startswith(b"r\0K127.0.0.1 accepted message. (sent in cleartext: the TLS handshake failed (" + why)
    first, second = s.wait_sessions(2)
    assert first.commands == [b"EHLO me.example", b"STARTTLS"] and not first.messages
    assert b"STARTTLS" not in second.commands and second.messages == [WIRE_MSG]


def test_s0_untrusted_certificate_is_used_unverified(home, server, pki):
    routed(home, server, pki, 0, cert=pki.untrusted("127.0.0.1"))
    _, raw = deliver(home)
    assert over_tls(raw, verified=False), raw


def test_s2_trusted_certificate_of_an_ip_route_is_verified(home, server, pki):
    routed(home, server, pki, 2)
    _, raw = deliver(home)
    assert over_tls(raw, verified=True), raw


# --- strictness 1 ---

def test_s1_offered_goes_over_tls(home, server, pki):
    s = routed(home, server, pki, 1, cert=pki.expired("127.0.0.1"))  # not verified at 1
    _, raw = deliver(home)
    assert over_tls(raw, verified=False), raw
    assert len(s.wait_sessions()) == 1


@pytest.mark.parametrize("script", [
    {"ehlo": b"250-sink.test\r\n250 PIPELINING\r\n"},
    {"starttls": b"454 4.7.0 TLS not available\r\n"},
    {"tls_handshake": CLOSE},
])
def test_s1_without_tls_second_pass_in_cleartext(home, server, pki, script):
    s = routed(home, server, pki, 1, **script)
    _, raw = deliver(home)
    assert raw.startswith(b"r\0K127.0.0.1 accepted message. (sent in cleartext: no server would do TLS)\n"), raw
    first, second = s.wait_sessions(2)
    assert not first.messages and not first.tls
    assert b"STARTTLS" not in second.commands and second.messages == [WIRE_MSG]


def addresses_on_one_port(count, base="127.0.5."):
    """count listening sockets at base+2, base+3... sharing one port number (for a relay name
    with several addresses: smtproutes gives one port)."""
    for _ in range(20):
        first = socket.socket()
        first.bind((base + "2", 0))
        port = first.getsockname()[1]
        first.close()
        try:
            probes = []
            for i in range(count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind((base + str(2 + i), port))
            return port
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    pytest.skip("no common free port on %s*" % base)


def test_s1_prefers_a_later_tls_address_over_an_earlier_cleartext_one(home, pki, dns):
    port = addresses_on_one_port(2)
    plain = SMTPServer("127.0.5.2", port, ehlo=b"250-plain.test\r\n250 PIPELINING\r\n")
    secure = SMTPServer("127.0.5.3", port, tls_cert=pki.server("relay.test"))
    try:
        d = dns([("relay.test", "A", "127.0.5.2", "127.0.5.3")])
        home.route("example.org:relay.test:%d" % port)
        tls_setup(home, 1, pki.ca_file)
        # one relay name, two addresses in answer order: the cleartext one wins the race, then is left
        _, raw = home.remote("example.org", "s@src.example", "r@example.org", message=MSG,
                             DNSCACHEIP=d.address())
        assert raw.startswith(b"r\0K127.0.5.3 accepted message. (TLSv1."), raw
        secure_session, = secure.wait_sessions()
        assert secure_session.tls and secure_session.sni == "relay.test"
        assert [s.messages for s in plain.sessions] in ([], [[]])  # tried first (if it won the race), no mail
    finally:
        plain.stop()
        secure.stop()


def test_s0_handshake_failure_retries_the_same_address_of_several(home, pki, dns):
    port = addresses_on_one_port(2, base="127.0.6.")
    first = SMTPServer("127.0.6.2", port, tls_cert=pki.server("relay.test"), tls_handshake=CLOSE)
    second = SMTPServer("127.0.6.3", port, tls_cert=pki.server("relay.test"), tls_handshake=CLOSE)
    try:
        d = dns([("relay.test", "A", "127.0.6.2", "127.0.6.3")])
        home.route("example.org:relay.test:%d" % port)
        tls_setup(home, 0, pki.ca_file)
        _, raw = home.remote("example.org", "s@src.example", "r@example.org", message=MSG, DNSCACHEIP=d.address())
        assert b" accepted message. (sent in cleartext: the TLS handshake failed (" in raw, raw
        winner = first if raw.startswith(b"r\0K127.0.6.2") else second
        assert len(winner.sessions) == 2 and winner.sessions[1].messages == [WIRE_MSG]
    finally:
        first.stop()
        second.stop()


# --- strictness 2 ---

def tls_required(raw):
    return raw.startswith(b"ZSorry, no server would take the message over TLS, as control/tlsstrictness 2 "
                          b"requires (127.0.0.1: ")


@pytest.mark.parametrize("script,why", [
    ({"ehlo": b"250-sink.test\r\n250 PIPELINING\r\n"}, b"no STARTTLS offered"),
    ({"starttls": b"454 4.7.0 TLS not available\r\n"}, b"STARTTLS refused: 454 4.7.0 TLS not available"),
    ({"tls_handshake": CLOSE}, b"connection closed during the TLS handshake"),
])
def test_s2_never_cleartext(home, server, pki, script, why):
    s = routed(home, server, pki, 2, **script)
    _, raw = deliver(home)
    assert tls_required(raw) and why in raw, raw
    assert raw.endswith(b"(#4.7.5)\n\0")
    assert all(not session.messages for session in s.wait_sessions(len(s.sessions)))


@pytest.mark.parametrize("make,why", [
    (lambda pki: pki.untrusted("127.0.0.1"), b"certificate not trusted: "),
    (lambda pki: pki.expired("127.0.0.1"), b"certificate not trusted: "),
    (lambda pki: pki.server("127.0.0.9"), b"IP address mismatch"),
])
def test_s2_bad_certificate(home, server, pki, make, why):
    s = routed(home, server, pki, 2, cert=make(pki))
    _, raw = deliver(home)
    assert tls_required(raw) and why in raw, raw
    assert not any(session.messages for session in s.sessions)


def test_s2_expired_says_expired(home, server, pki):
    routed(home, server, pki, 2, cert=pki.expired("127.0.0.1"))
    _, raw = deliver(home)
    assert b"expired" in raw, raw


def test_s2_anchor_directory(home, server, pki):
    routed(home, server, pki, 2, anchors=pki.ca_dir)
    _, raw = deliver(home)
    assert over_tls(raw, verified=True), raw


def test_s2_anchor_directory_does_not_trust_others(home, server, pki):
    routed(home, server, pki, 2, anchors=pki.ca_dir, cert=pki.untrusted("127.0.0.1"))
    _, raw = deliver(home)
    assert tls_required(raw) and b"certificate not trusted" in raw, raw


def test_s2_name_from_route_is_sni_and_verified(home, server, pki, dns):
    s, env = named_route(home, dns, server, tls_cert=pki.server("relay.test"))
    tls_setup(home, 2, pki.ca_file)
    _, raw = deliver(home, **env)
    assert over_tls(raw, verified=True), raw
    session, = s.wait_sessions()
    assert session.sni == "relay.test"


def test_s2_name_mismatch_with_route_name(home, server, pki, dns):
    _, env = named_route(home, dns, server, tls_cert=pki.server("other.test"))
    tls_setup(home, 2, pki.ca_file)
    _, raw = deliver(home, **env)
    assert tls_required(raw) and b"certificate name mismatch" in raw, raw


# --- client certificates and key files ---

def test_client_certificate_presented(home, server, pki):
    s = routed(home, server, pki, 2, tls_client_ca=pki.ca_file, tls_require_client=True)
    cert, key = pki.client("client.test")
    home.control("clientcert", cert + "\n")
    home.control("clientkey", key + "\n")
    _, raw = deliver(home)
    assert over_tls(raw, verified=True), raw
    session, = s.wait_sessions()
    assert session.client_cert is not None
    assert (("commonName", "client.test"),) in session.client_cert["subject"] or \
        ("DNS", "client.test") in session.client_cert.get("subjectAltName", ())


def test_no_client_certificate_without_control_files(home, server, pki):
    s = routed(home, server, pki, 0, tls_client_ca=pki.ca_file)
    _, raw = deliver(home)
    assert over_tls(raw, verified=False), raw
    assert s.wait_sessions()[0].client_cert is None


def test_missing_key_file_is_a_z_naming_it(home, server, pki):
    s = routed(home, server, pki, 0)
    cert, _ = pki.client()
    home.control("clientcert", cert + "\n")
    home.control("clientkey", "/nonexistent/client.key\n")
    _, raw = deliver(home)
    assert raw.startswith(b"ZUnable to use /nonexistent/client.key named by control/clientkey: "), raw
    assert s.sessions == []  # found before any connection


def test_unusable_key_file_is_a_z_naming_it(home, server, pki):
    routed(home, server, pki, 0)
    cert, _ = pki.client()
    bad = home.message_file(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", "bad.key")
    home.control("clientcert", cert + "\n")
    home.control("clientkey", bad + "\n")
    reports, raw = deliver(home)
    assert reports[-1][0] == "Z" and bad.encode() in raw, raw
    assert b"Unable to start TLS" in raw


# --- capabilities inside TLS, injection, environment ---

def test_only_capabilities_announced_inside_tls_are_used(home, server, pki):
    # cleartext: PIPELINING and a SIZE limit the message exceeds; inside TLS: neither
    s = routed(home, server, pki, 0, ehlo=b"250-sink.test\r\n250-PIPELINING\r\n250-SIZE 10\r\n250 STARTTLS\r\n",
               ehlo_tls=b"250-sink.test\r\n250 8BITMIME\r\n")
    _, raw = deliver(home, "a@example.org", "b@example.org")
    assert raw.startswith(b"r\0r\0K127.0.0.1 accepted message. (TLSv1."), raw
    session, = s.wait_sessions()
    assert session.after_tls()[:2] == [b"EHLO me.example", b"MAIL FROM:<sender@src.example>"]
    assert session.batched == 0


@pytest.mark.parametrize("strictness", [0, 2])
def test_plaintext_after_starttls_reply_is_response_injection(home, server, pki, strictness):
    s = routed(home, server, pki, strictness, starttls=b"220 go ahead\r\n250 injected\r\n")
    _, raw = deliver(home)
    why = b"plaintext after the STARTTLS reply (response injection)"
    if strictness == 0:
        assert raw.startswith(b"r\0K127.0.0.1 accepted message. (sent in cleartext: the TLS handshake failed (" + why)
        first, second = s.wait_sessions(2)
        assert second.messages == [WIRE_MSG]
    else:
        assert tls_required(raw) and why in raw, raw
        first, = s.wait_sessions()
    assert not first.tls and first.commands == [b"EHLO me.example", b"STARTTLS"]


def test_ssl_variables_from_outside_never_reach_a_cleartext_k(home, server, pki):
    routed(home, server, pki, 0, ehlo=b"250-sink.test\r\n250 PIPELINING\r\n")
    _, raw = deliver(home, SSL_PROTOCOL="TLSv9", SSL_CIPHER="FAKE", SSL_PEER_VERIFIED="1",
                     TLSC_FAILURE="verify: fake")
    assert raw == b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0"


def test_no_anchors_no_starttls(home, server, pki):
    s = routed(home, server, pki, 2)
    home.control("trustanchors", "\n")
    _, raw = deliver(home)
    assert raw == b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0"
    assert b"STARTTLS" not in s.wait_sessions()[0].commands


def test_large_message_over_tls_arrives_byte_exact(home, server, pki):
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\n"
    body = b"Subject: big\n\n" + line * (2 * 1024 * 1024 // len(line))
    s = routed(home, server, pki, 0)
    _, raw = deliver(home, message=body)
    assert over_tls(raw, verified=False), raw
    assert s.wait_sessions()[0].messages == [body.replace(b"\n", b"\r\n")]


def test_bad_resume_state_is_a_z_not_a_traceback(home):
    out, status = home.run("qmail-remote", ["--qremote-resume=1;garbage;;", "example.org", "s@x", "r@y"])
    assert status == 0 and out.startswith(b"Zqmail-remote: invalid --qremote-resume state (an internal option): "), out


# --- real MX lookups: port 25 (root), names from the test DNS server ---

def port25_server(server, ip, **kw):
    """server(): the conftest fixture, which stops it after the test."""
    if os.geteuid() != 0:
        pytest.skip("port 25 needs root")
    try:
        return server(host=ip, port=25, **kw)
    except OSError as error:
        pytest.skip("cannot listen on %s:25: %s" % (ip, error))


# mx.test: a.mx.test (preference 10) on 127.0.7.2, b.mx.test (20) on 127.0.7.3
TWO_MX = [("mx.test", "MX", "10 a.mx.test.", "20 b.mx.test."), ("a.mx.test", "A", "127.0.7.2"),
          ("b.mx.test", "A", "127.0.7.3")]


def mx_remote(home, d, domain="mx.test"):
    return home.remote(domain, "s@src.example", "r@" + domain, message=MSG, DNSCACHEIP=d.address())


def test_s1_backup_mx_with_tls_preferred_over_primary_without(home, server, pki, dns):
    primary = port25_server(server, "127.0.7.2", ehlo=b"250-primary.test\r\n250 PIPELINING\r\n")
    backup = port25_server(server, "127.0.7.3", tls_cert=pki.server("b.mx.test"))
    d = dns(TWO_MX)
    tls_setup(home, 1, pki.ca_file)
    _, raw = mx_remote(home, d)
    assert raw.startswith(b"r\0K127.0.7.3 accepted message. (TLSv1.3 unverified"), raw
    first, = primary.wait_sessions()
    assert first.commands[-1] == b"QUIT" and not first.messages
    second, = backup.wait_sessions()
    assert second.sni == "b.mx.test" and second.messages == [WIRE_MSG]


def test_s2_verifies_the_mx_host_name_not_the_domain(home, server, pki, dns):
    wrong = port25_server(server, "127.0.7.2", tls_cert=pki.server("mx.test"))  # the domain's name, not the MX's
    right = port25_server(server, "127.0.7.3", tls_cert=pki.server("b.mx.test"))
    d = dns(TWO_MX)
    tls_setup(home, 2, pki.ca_file)
    _, raw = mx_remote(home, d)
    assert raw.startswith(b"r\0K127.0.7.3 accepted message. (TLSv1.3 verified"), raw
    assert wrong.wait_sessions()[0].sni == "a.mx.test" and not wrong.sessions[0].messages


def test_s2_none_verifies_lists_every_reason(home, server, pki, dns):
    plain = port25_server(server, "127.0.7.2", ehlo=b"250-primary.test\r\n250 PIPELINING\r\n")
    untrusted = port25_server(server, "127.0.7.3", tls_cert=pki.untrusted("b.mx.test"))
    d = dns(TWO_MX)
    tls_setup(home, 2, pki.ca_file)
    _, raw = mx_remote(home, d)
    assert raw.startswith(b"ZSorry, no server would take the message over TLS, as control/tlsstrictness 2 "
                          b"requires (127.0.7.2: no STARTTLS offered; 127.0.7.3: certificate not trusted: "), raw


def test_implicit_mx_uses_the_domain_as_name(home, server, pki, dns):
    s = port25_server(server, "127.0.7.4", tls_cert=pki.server("implicit.test"))
    d = dns([("implicit.test", "A", "127.0.7.4")])
    tls_setup(home, 2, pki.ca_file)
    _, raw = mx_remote(home, d, "implicit.test")
    assert raw.startswith(b"r\0K127.0.7.4 accepted message. (TLSv1.3 verified"), raw
    assert s.wait_sessions()[0].sni == "implicit.test"


# --- tcpto across tlsc-io and the resumed qmail-remote ---

def tcpto_table(home, content=b"\0" * 1024):
    path = os.path.join(home.path, "queue", "lock", "tcpto")
    with open(path, "wb") as out:
        out.write(content)
    return path


def test_handshake_timeout_is_not_a_connect_timeout(home, server, pki):
    routed(home, server, pki, 2, tls_handshake=STALL)
    home.control("timeoutconnect", "1\n")
    path = tcpto_table(home)
    _, raw = deliver(home)
    assert tls_required(raw) and b"TLS handshake timed out" in raw, raw
    with open(path, "rb") as table:
        assert table.read() == b"\0" * 1024


def test_connects_before_and_after_resume_each_count_once(home, server, pki):
    import struct
    import time
    when = int(time.time()) - 7200  # an old timeout: not skipped, and cleared by a clean connect
    record = struct.pack("<4sB3sI4s", socket.inet_aton("127.0.0.1"), 1, b"\0\0\0", when, b"\0" * 4)
    path = tcpto_table(home, record + b"\0" * 1008)
    s = routed(home, server, pki, 0, tls_handshake=CLOSE)
    _, raw = deliver(home)
    assert b"sent in cleartext: the TLS handshake failed" in raw, raw
    assert len(s.wait_sessions(2)) == 2
    with open(path, "rb") as table:
        assert table.read() == record[:4] + b"\0" + record[5:] + b"\0" * 1008  # count 0, time kept


def test_client_certificate_with_its_key_in_the_same_file(home, server, pki):
    s = routed(home, server, pki, 2, tls_client_ca=pki.ca_file, tls_require_client=True)
    cert, key = pki.client("client.test")
    with open(cert, "rb") as c, open(key, "rb") as k:
        both = home.message_file(c.read() + k.read(), "client-both.pem")
    home.control("clientcert", both + "\n")
    _, raw = deliver(home)
    assert over_tls(raw, verified=True), raw
    assert s.wait_sessions()[0].client_cert is not None


def test_required_client_certificate_missing_defers(home, server, pki):
    # TLS 1.3: the client's handshake is over before the server judges its (absent)
    # certificate, so the refusal arrives as a dropped connection inside TLS
    s = routed(home, server, pki, 2, tls_client_ca=pki.ca_file, tls_require_client=True)
    reports, raw = deliver(home)
    assert reports[-1][0] == "Z" and b"accepted" not in raw, raw
    assert not any(session.messages for session in s.sessions)


def test_unusable_anchor_file_is_a_z_naming_it(home, server, pki):
    routed(home, server, pki, 2)
    bad = home.message_file(b"not a certificate\n", "anchors.pem")
    home.control("trustanchors", bad + "\n")
    reports, raw = deliver(home)
    assert raw.startswith(b"ZUnable to start TLS: ") and bad.encode() in raw, raw


def test_anchors_are_not_loaded_below_strictness_2(home, server, pki):
    # nothing is verified at 0 and 1, so tlsc-io is not given the anchors to parse
    routed(home, server, pki, 0)
    bad = home.message_file(b"not a certificate\n", "anchors.pem")
    home.control("trustanchors", bad + "\n")
    reports, raw = deliver(home)
    assert reports[-1][0] == "K" and b"unverified" in raw, raw


def test_s2_ipv6_literal_route_verifies_the_address(home, server, pki):
    try:
        s = server(host="::1", tls_cert=pki.server("::1"))
    except OSError:
        pytest.skip("no ::1 here")
    home.route("example.org:[IPv6:::1]:%d" % s.port)
    tls_setup(home, 2, pki.ca_file)
    _, raw = deliver(home)
    assert raw.startswith(b"r\0K::1 accepted message. (TLSv1.3 verified"), raw
    assert s.wait_sessions()[0].sni is None
