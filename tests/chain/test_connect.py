"""Connecting: connect.race() on loopback (Happy Eyeballs order, refusals, timeouts,
source addresses) and the same through the installed qmail-remote.

A black hole without root or a network namespace: tests/support/net.py BlackHole.
"""

import errno
import os
import time

import pytest

from qremote import connect, failures
from qremote.candidates import AF_INET, AF_INET6, Target
from tests.support.dnsserver import DNSServer
from tests.support.net import blackhole, closed_after, listening, needs_ipv6, needs_root, refusing_port  # noqa: F401 (fixture)

def target(place, pref=0):
    """The connect.race() Target for a listener or black hole."""
    return Target(place.host, AF_INET6 if ":" in place.host else AF_INET, place.port, pref, b"test")


class Listener:
    """A plain listening socket: connections complete in the kernel; accepted() tells who came."""

    def __init__(self, host="127.0.0.1", port=0):
        self.sock = listening(host, port, backlog=16)
        self.host, self.port = host, self.sock.getsockname()[1]

    def accepted(self):
        """Peers of the connections waiting to be accepted."""
        self.sock.setblocking(False)
        peers = []
        while True:
            try:
                conn, peer = self.sock.accept()
            except BlockingIOError:
                return peers
            conn.close()
            peers.append(peer)

    def close(self):
        self.sock.close()


@pytest.fixture
def listener():
    with closed_after(Listener) as make:
        yield make


def race(targets, timeout=30, **kw):
    results = []
    start = time.monotonic()
    sock, winner = connect.race(targets, timeout, lambda t, e, timed_out: results.append((t, e, timed_out)), **kw)
    elapsed = time.monotonic() - start
    if sock is not None:
        sock.close()
    return winner, results, elapsed


# --- connect.race ------------------------------------------------------------------------

def test_black_hole_first_then_the_next_address_wins_after_the_stagger(blackhole, listener):
    hole, up = blackhole(), listener()
    winner, results, elapsed = race([target(hole), target(up)], timeout=30)
    assert winner == target(up)
    assert results == [(target(up), 0, False)]  # the abandoned attempt is not reported
    assert elapsed >= connect.STAGGER * 0.8  # the second attempt waited for the first
    assert elapsed < 10  # and nobody waited for timeoutconnect (30 s): a generous bound


def test_answering_first_wins_and_the_next_is_never_started(listener):
    first, second = listener(), listener()
    winner, results, _ = race([target(first), target(second)])
    assert winner == target(first) and results == [(target(first), 0, False)]
    time.sleep(0.3)
    assert len(first.accepted()) == 1 and second.accepted() == []


def test_a_refusal_starts_the_next_attempt_at_once(listener):
    up = listener()
    with refusing_port() as port:
        refused = Target("127.0.0.1", AF_INET, port, 0, b"refused")
        winner, results, _ = race([refused, target(up)])
    assert winner == target(up)
    assert results == [(refused, errno.ECONNREFUSED, False), (target(up), 0, False)]


def test_every_address_black_holed_each_times_out(blackhole):
    holes = [blackhole(), blackhole()]
    winner, results, elapsed = race([target(h) for h in holes], timeout=1)
    assert winner is None
    assert sorted((t.port, e, timed_out) for t, e, timed_out in results) == sorted(
        (h.port, errno.ETIMEDOUT, True) for h in holes)
    assert elapsed < 10  # timeoutconnect per address, attempts overlapping: not 2 x 1 s in a row, nor a hang


def test_nothing_to_try():
    assert race([]) == (None, [], pytest.approx(0, abs=5))


def test_source_address_is_bound_per_family(listener):
    up = listener()
    winner, _, _ = race([target(up)], sources={AF_INET: "127.0.0.5", AF_INET6: "::1"})
    assert winner == target(up)
    assert [peer[0] for peer in up.accepted()] == ["127.0.0.5"]


@needs_ipv6
def test_source_of_the_other_family_is_not_used(listener):
    up = listener("::1")
    winner, _, _ = race([target(up)], sources={AF_INET: "127.0.0.5"})
    assert winner == target(up) and [peer[0] for peer in up.accepted()] == ["::1"]


def test_source_address_not_on_this_machine_is_a_clear_z(listener):
    up = listener()
    with pytest.raises(failures.SourceUnusable) as caught:
        race([target(up)], sources={AF_INET: "192.0.2.1"})
    assert caught.value.letter == failures.Z and b"control/outgoingip" in caught.value.text()


# --- through qmail-remote ---------------------------------------------------------------------

@needs_root
@needs_ipv6
def test_happy_eyeballs_within_one_mx(home, server, blackhole):
    """The MX's IPv6 address (first) black-holes; its IPv4 address answers."""
    home.control("ipme", "127.0.0.1\n")  # ::1 is not "me" here
    home.control("timeoutconnect", "30\n")
    hole = blackhole("::1", 25)
    try:
        smtp = server(host="127.0.53.21", port=25)
    except OSError as error:
        pytest.skip("cannot listen on 127.0.53.21:25: %s" % error)
    dns_server = DNSServer()
    try:
        dns_server.add("example.test", "MX", "10 mx.example.test.")
        dns_server.add("mx.example.test", "AAAA", "::1").add("mx.example.test", "A", "127.0.53.21")
        start = time.monotonic()
        _, raw = home.remote("example.test", "s@src.example", "r@example.test", DNSCACHEIP=dns_server.address())
        assert time.monotonic() - start < 20  # did not wait for timeoutconnect on the black hole
    finally:
        dns_server.stop()
        smtp.stop()
    assert raw == b"r\0K127.0.53.21 accepted message.\nRemote host said: 250 ok queued\n\0"
    assert len(smtp.wait_sessions()) == 1
    # the abandoned IPv6 attempt left no tcpto6 record
    tcpto6 = os.path.join(home.path, "run", "qmail-remote", "tcpto6")
    assert not os.path.exists(tcpto6) or not any(open(tcpto6, "rb").read())


def test_outgoingip_binds_the_source_address(home, server):
    smtp = server()
    home.route("example.org:127.0.0.1:%d" % smtp.port)
    home.control("outgoingip", "127.0.53.30\n::1\n")
    _, raw = home.remote("example.org", "s@src.example", "r@example.org")
    assert raw.endswith(b"K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0")
    session, = smtp.wait_sessions()
    assert session.peer[0] == "127.0.53.30"


@pytest.mark.parametrize("content, text", [
    ("192.0.2.1\n", b"ZUnable to bind the source address 192.0.2.1 named by control/outgoingip: "
                    b"Cannot assign requested address. (#4.3.0)\n\0"),
    ("mail.example\n", b"ZInvalid control file control/outgoingip: line 1 is not an IPv4 or IPv6 address. "
                      b"(#4.3.0)\n\0"),
    ("127.0.0.2\n127.0.0.3\n", b"ZInvalid control file control/outgoingip: line 2: a second address of the "
                               b"same family. (#4.3.0)\n\0"),
])
def test_outgoingip_mistakes_are_a_clear_z(home, server, content, text):
    smtp = server()
    home.route("example.org:127.0.0.1:%d" % smtp.port)
    home.control("outgoingip", content)
    _, raw = home.remote("example.org", "s@src.example", "r@example.org")
    assert raw == text
    time.sleep(0.2)
    assert smtp.sessions == []


# --- ipme from the kernel ----------------------------------------------------------------------

def test_ipme_ipv4_from_the_kernel_matches_ip_addr():
    """SIOCGIFCONF as stock asks it, against iproute2's list of the addresses of up interfaces."""
    import shutil
    import subprocess
    from qremote import ipme
    if shutil.which("ip") is None:
        pytest.skip("no iproute2 'ip' command here")
    listed = subprocess.run(["ip", "-4", "-o", "addr", "show", "up"], stdout=subprocess.PIPE, check=True).stdout
    expected = {line.split()[3].decode().split("/")[0] for line in listed.splitlines() if b" inet " in line}
    assert ipme.interface_ipv4() == expected
    assert "127.0.0.1" in expected
