"""The TLS downgrade memory through the installed chain: qmail-remote-io records the server
after a K over TLS when control/tlsmemory is on (tlsc-io's SNI name: a named route here),
and qmail-tlsmemory lists and forgets it. (Requiring TLS of a remembered host is
qmail-remote's TLS rule: wired by the lead, tested there.)"""

import os
import subprocess
import time

import pytest

MSG = b"Subject: memory\n\nhello\n"


@pytest.fixture(autouse=True)
def need_tlsc_io(installed):
    if not os.path.exists(os.path.join(installed, "tlsc-io")):
        pytest.skip("tlsc-io is not installed")


@pytest.fixture
def relay(home, server, pki):
    """example.org routed to relay.test (the test DNS server's A record), a TLS server
    whose certificate names relay.test."""
    from tests.support.dnsserver import DNSServer
    s = server(tls_cert=pki.server("relay.test"))
    dns = DNSServer()
    dns.add("relay.test", "A", "127.0.0.1")
    home.route("example.org:relay.test:%d" % s.port)
    home.control("trustanchors", pki.ca_file + "\n")
    yield s, {"DNSCACHEIP": dns.address()}
    dns.stop()


def tool(home, *args):
    done = subprocess.run([os.path.join(home.bindir, "qmail-tlsmemory")] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=home.env(), timeout=30)
    return done.returncode, done.stdout


def entry(home):
    path = os.path.join(home.path, "run", "qmail-remote", "tlsmemory", "relay.test")
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("strictness,level", [(2, b"verified"), (0, b"encrypted")])
def test_tls_delivery_is_remembered_listed_and_forgotten(home, relay, strictness, level):
    _, env = relay
    home.control("tlsstrictness", "%d\n" % strictness)
    home.control("tlsmemory", "30\n")
    before = int(time.time())
    _, raw = home.remote("example.org", "s@src.example", "r@example.org", message=MSG, **env)
    assert b" accepted message. (TLSv1." in raw, raw
    recorded_level, when = entry(home).split()
    assert recorded_level == level and before <= int(when) <= time.time()
    today = time.strftime("%Y-%m-%d", time.gmtime(int(when))).encode()
    assert tool(home, "list") == (0, b"relay.test %s %s\n" % (level, today))
    home.control("tlsmemory", "0\n")
    assert tool(home, "list") == (0, b"relay.test %s %s (expired)\n" % (level, today))
    assert tool(home, "forget", "Relay.Test.") == (0, b"forgot 1 host\n")
    assert tool(home, "list") == (0, b"")
    assert tool(home, "forget", "relay.test") == (0, b"forgot 0 hosts\n")


def test_off_by_default_and_cleartext_is_never_remembered(home, relay):
    s, env = relay
    home.control("tlsstrictness", "0\n")
    home.remote("example.org", "s@src.example", "r@example.org", message=MSG, **env)
    assert not os.path.exists(os.path.join(home.path, "run", "qmail-remote", "tlsmemory"))
    home.control("tlsmemory", "30\n")
    home.control("trustanchors", "")  # no STARTTLS at all: cleartext
    _, raw = home.remote("example.org", "s@src.example", "r@example.org", message=MSG, **env)
    assert raw.startswith(b"r\0K127.0.0.1 accepted message.\n"), raw
    assert not os.path.exists(os.path.join(home.path, "run", "qmail-remote", "tlsmemory", "relay.test"))


def test_forget_all_and_usage(home, relay):
    _, env = relay
    home.control("tlsmemory", "1\n")
    home.remote("example.org", "s@src.example", "r@example.org", message=MSG, **env)
    assert tool(home, "forget", "all") == (0, b"forgot 1 host\n")
    assert tool(home, "forget")[0] == 100
    assert tool(home, "remember", "x")[0] == 100
    assert tool(home, "forget", "bad/name") == (111, b"fatal: unable to forget bad/name: not a host name\n")
