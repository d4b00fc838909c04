"""The TLS downgrade memory end to end (doc/tlsmemory.html, doc/tlsdestinations.html level 6):
a host that did TLS and then stops offering it, or fails the handshake, is a Z naming the
memory instead of a cleartext delivery; `qmail-tlsmemory forget` lets it go in cleartext
again; the memory never raises an admin's tlsdestinations line; off by default."""

import os

import pytest

from tests.chain.test_tlsmemory import MSG, tool
from tests.support.smtpserver import CLOSE

NO_STARTTLS = b"250-sink.test\r\n250 PIPELINING\r\n"


@pytest.fixture(autouse=True)
def need_tlsc_io(installed):
    if not os.path.exists(os.path.join(installed, "tlsc-io")):
        pytest.skip("tlsc-io is not installed")


@pytest.fixture
def relay(home, server, pki):
    """example.org routed to relay.test; tlsstrictness 0 with trustanchors: STARTTLS when
    offered, cleartext otherwise. Returns a function that moves the route to a new server
    (same name, new port) built with the given script."""
    from tests.support.dnsserver import DNSServer
    dns = DNSServer()
    dns.add("relay.test", "A", "127.0.0.1")
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "0\n")

    def serve(**script):
        s = server(**script)
        home.route("example.org:relay.test:%d" % s.port)
        return s
    serve.env = {"DNSCACHEIP": dns.address()}
    serve.cert = pki.server("relay.test")
    yield serve
    dns.stop()


def deliver(home, relay):
    return home.remote("example.org", "s@src.example", "r@example.org", message=MSG, **relay.env)[1]


CLEAR_K = b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0"


def remembered_z(why):
    return (b"ZSorry, no server would take the message over TLS, as the TLS memory of relay.test (it did encrypted "
            b"TLS on %s, control/tlsmemory) requires (127.0.0.1: %s" % (_today(), why))


def _today():
    import time
    return time.strftime("%Y-%m-%d", time.gmtime()).encode()


def remember(home, relay):
    home.control("tlsmemory", "30\n")
    relay(tls_cert=relay.cert)
    raw = deliver(home, relay)
    assert raw.startswith(b"r\0K127.0.0.1 accepted message. (TLSv1.") and b" unverified, " in raw, raw
    assert tool(home, "list")[1].startswith(b"relay.test encrypted ")


@pytest.mark.parametrize("script,why", [({"ehlo": NO_STARTTLS}, b"no STARTTLS offered"),
                                        ({"tls_handshake": CLOSE}, b"connection closed during the TLS handshake")])
def test_remembered_host_without_tls_is_a_z_until_forgotten(home, relay, script, why):
    remember(home, relay)
    s = relay(tls_cert=relay.cert, **script) if "tls_handshake" in script else relay(**script)
    raw = deliver(home, relay)
    assert raw.startswith(remembered_z(why)), raw
    assert raw.endswith(b"(#4.7.5)\n\0")
    assert not any(session.messages for session in s.wait_sessions(len(s.sessions)))
    assert tool(home, "forget", "relay.test") == (0, b"forgot 1 host\n")
    raw = deliver(home, relay)
    if "tls_handshake" in script:  # tlsstrictness 0: cleartext after the failed handshake
        assert raw.startswith(b"r\0K127.0.0.1 accepted message. (sent in cleartext: the TLS handshake failed ("), raw
    else:
        assert raw == CLEAR_K, raw
    assert s.wait_sessions(len(s.sessions))[-1].messages


def test_memory_raises_a_default_without_tls_too(home, relay):
    """No trustanchors any more (no STARTTLS by default): a remembered host still must do TLS."""
    remember(home, relay)
    home.control("trustanchors", "")
    relay(ehlo=NO_STARTTLS)
    assert deliver(home, relay).startswith(remembered_z(b"no STARTTLS offered"))


def test_memory_raises_a_global_star_rule(home, relay):
    remember(home, relay)
    home.control("tlsdestinations", "*:\n")
    relay(ehlo=NO_STARTTLS)
    assert deliver(home, relay).startswith(remembered_z(b"no STARTTLS offered"))


@pytest.mark.parametrize("line,script,expected", [
    ("!relay.test:", {"ehlo": NO_STARTTLS}, CLEAR_K),
    ("?relay.test:", {"tls_handshake": CLOSE},
     b"r\0K127.0.0.1 accepted message. (sent in cleartext: the TLS handshake failed (connection closed"),
])
def test_memory_never_raises_a_destination_line(home, relay, line, script, expected):
    """An admin's line for the host wins over the memory: `!` stays cleartext, `?` falls back."""
    remember(home, relay)
    home.control("tlsdestinations", line + "\n")
    s = relay(tls_cert=relay.cert, **script) if "tls_handshake" in script else relay(**script)
    raw = deliver(home, relay)
    assert raw.startswith(expected), raw
    assert s.wait_sessions(len(s.sessions))[-1].messages


def test_memory_off_changes_nothing(home, relay):
    """control/tlsmemory 0 (or absent): an entry on disk is not used."""
    remember(home, relay)
    for setting in ("0\n", None):
        if setting is None:
            os.unlink(os.path.join(home.path, "control", "tlsmemory"))
        else:
            home.control("tlsmemory", setting)
        relay(ehlo=NO_STARTTLS)
        assert deliver(home, relay) == CLEAR_K
    assert tool(home, "list")[1].startswith(b"relay.test encrypted ")
