"""DNS against real servers on loopback: the wire stub (tests/support/dnsserver.py) for
scripted misbehaviour, and Debian's dnsmasq for at least one real-server path.

Two levels: qremote.resolver called in this process with the server as its only nameserver
(fast, every corner), and the installed qmail-remote with DNSCACHEIP=127.0.0.1@PORT
delivering to scripted SMTP servers. MX targets are reached on port 25, so those
tests need root (skipped otherwise); each MX host gets its own loopback address in
127.0.53.0/24, which nothing else here uses.
"""

import os
import shutil
import socket
import subprocess
import time

import pytest

from qremote.resolver import codec, exchange, mx
from qremote import failures
from tests.support.dnsserver import DNSServer
from tests.support.net import needs_ipv6, needs_root

DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)
needs_dnsmasq = pytest.mark.skipif(DNSMASQ is None, reason="Debian's dnsmasq is not installed")

SOFT_TEXT = b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n\0"
MX1, MX2, MX3, MX4 = "127.0.53.1", "127.0.53.2", "127.0.53.3", "127.0.53.4"


@pytest.fixture
def stub():
    server = DNSServer()
    yield server
    server.stop()


def lookup(server, host, timeoutdns=0):
    """qremote.resolver.mx_targets against server: [(ip, pref, name)] or (letter, text)."""
    try:
        targets = mx.mx_targets(host.encode(), timeoutdns, exchange.nameservers({"DNSCACHEIP": server.address()}))
    except failures.Failure as failure:
        return failure.letter, failure.text()
    return [(t.ip, t.pref, t.name.decode()) for t in targets]


PORT25 = []  # servers on port 25, halted after each test


def smtp25(server, ip, **replies):
    """A scripted SMTP server on ip:25 (skips the test when that cannot be bound)."""
    try:
        smtp = server(host=ip, port=25, **replies)
    except OSError as error:
        pytest.skip("cannot listen on %s:25: %s" % (ip, error))
    PORT25.append(smtp)
    return smtp


def halt(smtp):
    """Stop listening now: the port is free (refusing) once the accept thread is gone."""
    smtp.stop()
    smtp.thread.join(5)


@pytest.fixture(autouse=True)
def free_port25(server):  # asks for server so as to be torn down before it closes the listeners
    yield
    while PORT25:
        halt(PORT25.pop())


def remote(home, dns_server, host="example.test", timeout=60, **env):
    env.setdefault("DNSCACHEIP", dns_server.address() if hasattr(dns_server, "address") else dns_server)
    return home.remote(host, "sender@src.example", "rcpt@" + host, timeout=timeout, **env)


def accepted_by(ip):
    return b"K%s accepted message.\nRemote host said: 250 ok queued\n\0" % ip.encode()


# --- resolution rules, in process, against the stub --------------------------------------

def test_mx_order_by_preference_with_families(stub):
    stub.add("example.test", "MX", "30 c.mx.test.", "10 a.mx.test.", "20 b.mx.test.")
    stub.add("a.mx.test", "A", "192.0.2.1").add("a.mx.test", "AAAA", "2001:db8::1")
    stub.add("b.mx.test", "AAAA", "2001:db8::2")
    stub.add("c.mx.test", "A", "192.0.2.3", "192.0.2.4")
    found = lookup(stub, "example.test")
    assert found[:3] == [("2001:db8::1", 10, "a.mx.test"), ("192.0.2.1", 10, "a.mx.test"),
                         ("2001:db8::2", 20, "b.mx.test")]
    # the stub's records of one set come in any order (dnspython keeps them in a set)
    assert sorted(found[3:]) == [("192.0.2.3", 30, "c.mx.test"), ("192.0.2.4", 30, "c.mx.test")]


def test_equal_preferences_come_in_both_orders(stub):
    stub.add("example.test", "MX", "10 a.mx.test.", "10 b.mx.test.", "20 c.mx.test.")
    for name, ip in (("a", "192.0.2.1"), ("b", "192.0.2.2"), ("c", "192.0.2.3")):
        stub.add(name + ".mx.test", "A", ip)
    orders = set()
    for _ in range(40):
        found = lookup(stub, "example.test")
        assert found[2] == ("192.0.2.3", 20, "c.mx.test")
        orders.add(tuple(ip for ip, _, _ in found[:2]))
    assert orders == {("192.0.2.1", "192.0.2.2"), ("192.0.2.2", "192.0.2.1")}


def test_implicit_mx_and_no_cname_rewriting(stub):
    stub.add("aonly.test", "A", "192.0.2.7")
    assert lookup(stub, "aonly.test") == [("192.0.2.7", 0, "aonly.test")]
    stub.add("alias.test", "CNAME", "aonly.test.")
    before = len(stub.asked("aonly.test"))
    # the chain inside the answer is followed; the target keeps the name asked for
    assert lookup(stub, "alias.test") == [("192.0.2.7", 0, "alias.test")]
    assert stub.asked("alias.test", "MX") and len(stub.asked("aonly.test")) == before  # no follow-up query


def test_null_mx_without_address_queries(stub):
    stub.add("null.test", "MX", "0 .")
    assert lookup(stub, "null.test") == (failures.D, failures.NullMX(b"null.test").text())
    assert stub.asked() == [("null.test", "MX", "udp")]


def test_root_target_among_others_is_skipped(stub):
    stub.add("half.test", "MX", "0 .", "10 a.mx.test.").add("a.mx.test", "A", "192.0.2.1")
    assert lookup(stub, "half.test") == [("192.0.2.1", 10, "a.mx.test")]


def test_nxdomain_is_the_stock_bounce(stub):
    assert lookup(stub, "nx.test") == (failures.D, b"Sorry, I couldn't find any host named nx.test. (#5.1.2)\n")


@pytest.mark.parametrize("behaviour", ["servfail", "refused", "garbage"])
def test_server_failures_defer(stub, behaviour):
    stub.add("example.test", "MX", "10 a.mx.test.").behave("example.test", behaviour)
    assert lookup(stub, "example.test") == (failures.Z, SOFT_TEXT[1:-1])


def test_a_resolver_that_never_answers_is_bounded_by_timeoutdns(stub):
    stub.behave("example.test", "silent")
    start = time.monotonic()
    assert lookup(stub, "example.test", timeoutdns=1) == (failures.Z, SOFT_TEXT[1:-1])
    assert time.monotonic() - start < 15  # a generous bound: it does not hang
    assert len(stub.asked("example.test", "MX")) >= 1


def test_no_server_listening_defers_at_once():
    refusing = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    refusing.bind(("127.0.0.1", 0))
    port = refusing.getsockname()[1]
    refusing.close()
    servers = exchange.nameservers({"DNSCACHEIP": "127.0.0.1@%d" % port})
    with pytest.raises(failures.DnsSoft):
        mx.mx_targets(b"example.test", 30, servers)


def test_the_next_nameserver_is_asked_when_one_is_dead(stub):
    stub.add("example.test", "MX", "10 127.0.53.9.")
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))  # bound, never read: silent
    try:
        servers = exchange.nameservers({"DNSCACHEIP": "127.0.0.1@%d %s" % (dead.getsockname()[1], stub.address())})
        targets = mx.mx_targets(b"example.test", 10, servers)
        assert [t.ip for t in targets] == ["127.0.53.9"]
    finally:
        dead.close()


def test_truncated_answer_is_asked_again_over_tcp(stub):
    stub.add("example.test", "MX", "10 a.mx.test.").behave("example.test", "truncate")
    stub.add("a.mx.test", "A", "192.0.2.1").behave("a.mx.test", "truncate", "A")
    assert lookup(stub, "example.test") == [("192.0.2.1", 10, "a.mx.test")]
    assert stub.asked("example.test", "MX", "tcp") and stub.asked("a.mx.test", "A", "tcp")
    assert not stub.asked("a.mx.test", "AAAA", "tcp")


def test_truncated_over_tcp_too_defers(stub):
    stub.add("example.test", "MX", "10 a.mx.test.").behave("example.test", "truncate-always")
    assert lookup(stub, "example.test") == (failures.Z, SOFT_TEXT[1:-1])
    assert stub.asked("example.test", "MX", "tcp")


def test_servfail_from_one_server_asks_the_next_at_once(stub):
    stub.add("example.test", "MX", "10 a.mx.test.").add("a.mx.test", "A", "192.0.2.1")
    failing = DNSServer()
    try:
        failing.behave("example.test", "servfail").behave("a.mx.test", "servfail")
        servers = exchange.nameservers({"DNSCACHEIP": "%s %s" % (failing.address(), stub.address())})
        targets = mx.mx_targets(b"example.test", 30, servers)
        assert [t.ip for t in targets] == ["192.0.2.1"]
        assert failing.asked("example.test", "MX") and stub.asked("example.test", "MX")
    finally:
        failing.stop()


@pytest.mark.parametrize("behaviour", ["servfail-bare", "refused-bare", "formerr-bare", "notimp-bare"])
def test_error_reply_without_question_fails_that_server_at_once(stub, behaviour):
    # an error reply with our id but no question section is that server's answer, not
    # junk: one server, it is asked once and the stage fails (not retried until the
    # deadline); two servers, the second is asked at once, well inside a 1 s stage (the
    # first retransmission would only go at the deadline)
    stub.add("example.test", "MX", "10 a.mx.test.").behave("example.test", behaviour)
    stub.add("a.mx.test", "A", "192.0.2.1")
    assert lookup(stub, "example.test", timeoutdns=3) == (failures.Z, SOFT_TEXT[1:-1])
    assert len(stub.asked("example.test", "MX")) == 1
    good = DNSServer()
    try:
        good.add("example.test", "MX", "10 a.mx.test.").add("a.mx.test", "A", "192.0.2.1")
        servers = exchange.nameservers({"DNSCACHEIP": "%s %s" % (stub.address(), good.address())})
        assert [t.ip for t in mx.mx_targets(b"example.test", 1, servers)] == ["192.0.2.1"]
    finally:
        good.stop()


def test_truncated_then_stalled_tcp_does_not_block_the_other_servers(stub):
    # the first server says TC and then never answers over TCP: the second is asked over
    # UDP on the usual retry schedule meanwhile, and its answer wins
    stub.behave("example.test", "truncate-stall").behave("a.mx.test", "truncate-stall")
    good = DNSServer()
    try:
        good.add("example.test", "MX", "10 a.mx.test.").add("a.mx.test", "A", "192.0.2.1")
        servers = exchange.nameservers({"DNSCACHEIP": "%s %s" % (stub.address(), good.address())})
        assert [t.ip for t in mx.mx_targets(b"example.test", 4, servers)] == ["192.0.2.1"]
        assert stub.asked("example.test", "MX", "tcp") and good.asked("example.test", "MX", "udp")
    finally:
        good.stop()


def cname_chain(stub, first, links, last_records):
    """first -> c1.test -> ... -> (links links) whose end holds last_records [(type, value)]."""
    names = [first] + ["c%d.chain.test" % i for i in range(1, links + 1)]
    for owner, target in zip(names, names[1:]):
        stub.add(owner, "CNAME", target + ".")
    for rdtype, value in last_records:
        stub.add(names[-1], rdtype, value)


def test_cname_chains_up_to_16_links_are_followed(stub):
    # stock delivers through a 9-link chain: so do we, up to MAX_CNAME (16) links
    cname_chain(stub, "example.test", 9, [("MX", "10 mx.test.")])
    stub.add("mx.test", "A", "192.0.2.9")
    assert lookup(stub, "example.test") == [("192.0.2.9", 10, "mx.test")]
    assert codec.MAX_CNAME >= 16
    cname_chain(stub, "sixteen.test", 16, [("A", "192.0.2.16")])
    assert lookup(stub, "sixteen.test") == [("192.0.2.16", 0, "sixteen.test")]


def test_a_longer_cname_chain_defers_never_bounces(stub):
    cname_chain(stub, "example.test", 17, [("MX", "10 mx.test.")])
    stub.add("mx.test", "A", "192.0.2.9")
    assert lookup(stub, "example.test") == (failures.Z, SOFT_TEXT[1:-1])
    stub.add("mx2.test", "MX", "10 far.test.")
    cname_chain(stub, "far.test", 17, [("A", "192.0.2.17")])
    assert lookup(stub, "mx2.test") == (failures.Z, SOFT_TEXT[1:-1])


@needs_ipv6
def test_nameserver_on_ipv6():
    server = DNSServer("::1")
    try:
        server.add("example.test", "MX", "10 a.mx.test.").add("a.mx.test", "AAAA", "2001:db8::7")
        assert server.address().startswith("::1@")
        assert lookup(server, "example.test") == [("2001:db8::7", 10, "a.mx.test")]
        servers = exchange.nameservers({"DNSCACHEIP": "[::1]@%d" % server.port})
        assert [t.ip for t in mx.mx_targets(b"example.test", 5, servers)] == ["2001:db8::7"]
    finally:
        server.stop()


def test_timeoutdns_0_has_an_overall_cap(stub, monkeypatch):
    monkeypatch.setattr(exchange, "OVERALL_CAP", 1.5)
    stub.add("example.test", "MX", "10 a.mx.test.").behave("a.mx.test", "silent")
    stub.delay = 0.5  # the MX stage eats part of the cap; the address stage gets the rest
    start = time.monotonic()
    assert lookup(stub, "example.test", timeoutdns=0) == (failures.Z, SOFT_TEXT[1:-1])
    assert time.monotonic() - start < 10  # one cap for both stages, generously


def test_forged_answer_with_another_id_is_ignored(stub):
    stub.add("example.test", "MX", "10 a.mx.test.").behave("example.test", "wrong-id")
    stub.add("a.mx.test", "A", "192.0.2.1")
    assert lookup(stub, "example.test") == [("192.0.2.1", 10, "a.mx.test")]


def test_aaaa_only_and_literal_targets(stub):
    stub.add("example.test", "MX", "10 six.test.", "20 127.0.53.7.")
    stub.add("six.test", "AAAA", "::1")
    assert lookup(stub, "example.test") == [("::1", 10, "six.test"), ("127.0.53.7", 20, "127.0.53.7")]
    assert not stub.asked("127.0.53.7")  # a literal target is used as is


def test_targets_that_all_fail(stub):
    stub.add("hard.test", "MX", "10 nx1.test.", "20 nodata.test.").add("nodata.test", "TXT", '"x"')
    assert lookup(stub, "hard.test") == (failures.D, failures.NoAddress().text())
    stub.add("soft.test", "MX", "10 nx1.test.", "20 sf.test.").behave("sf.test", "servfail")
    assert lookup(stub, "soft.test") == (failures.Z, SOFT_TEXT[1:-1])


def test_relay_is_resolved_by_a_and_aaaa_only(stub):
    stub.add("relay.test", "MX", "10 elsewhere.test.").add("relay.test", "A", "192.0.2.25")
    targets = mx.relay_targets(b"relay.test", 2525, 0, exchange.nameservers({"DNSCACHEIP": stub.address()}))
    assert [(t.ip, t.port, t.pref) for t in targets] == [("192.0.2.25", 2525, 0)]
    assert sorted(q[1] for q in stub.asked()) == ["A", "AAAA"]
    with pytest.raises(failures.DnsHard) as caught:
        mx.relay_targets(b"gone.test", 25, 0, exchange.nameservers({"DNSCACHEIP": stub.address()}))
    assert caught.value.text() == b"Sorry, I couldn't find any host named gone.test. (#5.1.2)\n"


def test_all_address_queries_of_a_stage_are_in_flight_together(stub):
    stub.add("example.test", "MX", "10 a.mx.test.", "20 b.mx.test.", "30 c.mx.test.")
    for name in "abc":
        stub.add(name + ".mx.test", "A", "192.0.2.1").add(name + ".mx.test", "AAAA", "2001:db8::1")
    stub.delay = 0.3
    assert len(lookup(stub, "example.test")) == 6
    events = [(kind, rdtype) for kind, _, rdtype in stub.events]
    # the MX answer came before any address query; all six address queries arrived
    # before the first address answer went out
    assert events[:2] == [("query", "MX"), ("answer", "MX")]
    assert [kind for kind, _ in events[2:8]] == ["query"] * 6
    assert len(events) == 14


def test_addresses_that_cannot_be_a_mail_server_are_skipped(stub):
    stub.add("example.test", "MX", "10 zero.test.", "20 good.test.")
    stub.add("zero.test", "A", "0.0.0.0", "224.0.0.1").add("zero.test", "AAAA", "::", "::ffff:0.0.0.0")
    stub.add("good.test", "A", "192.0.2.1")
    assert lookup(stub, "example.test") == [("192.0.2.1", 20, "good.test")]
    stub.add("only.test", "MX", "10 zero.test.")
    letter, text = lookup(stub, "only.test")
    assert letter == failures.D and text.startswith(b"Sorry, no address found can be a mail server's; skipped ")
    assert b"0.0.0.0 of zero.test (this network 0.0.0.0/8)" in text and text.endswith(b"(#5.4.4)\n")


def test_a_relay_that_cannot_be_a_mail_server_is_a_z_not_a_connection(home, server):
    # connecting to 0.0.0.0 reaches this very host: a route "[0.0.0.0]" used to deliver
    # to whatever listens here on that port
    smtp = server()
    home.route("example.org:[0.0.0.0]:%d" % smtp.port)
    _, raw = home.remote("example.org", "s@src.example", "r@example.org")
    assert raw == (b"ZSorry, no address found can be a mail server's; skipped 0.0.0.0 of [0.0.0.0] "
                   b"(this network 0.0.0.0/8). (#4.3.0)\n\0")
    assert smtp.sessions == []
    _, raw = home.remote("[0.0.0.0]", "s@src.example", "r@[0.0.0.0]")
    assert raw.startswith(b"DSorry, no address found can be a mail server's; skipped 0.0.0.0")


# --- dnsmasq: a real DNS server -------------------------------------------------------------

class Dnsmasq:
    """Debian's dnsmasq on 127.0.0.1:PORT, authoritative-style for *.test (--local)."""

    def __init__(self, *options):
        for _ in range(20):
            probe_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe_udp.bind(("127.0.0.1", 0))
            self.port = probe_udp.getsockname()[1]
            probe_tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe_tcp.bind(("127.0.0.1", self.port))
            except OSError:
                continue
            finally:
                probe_udp.close()
                probe_tcp.close()
            break
        argv = [DNSMASQ, "--keep-in-foreground", "--port=%d" % self.port, "--listen-address=127.0.0.1",
                "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=",
                "--local=/test/"] + list(options)
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        self._wait_ready()

    def _wait_ready(self):
        import dns.message
        import dns.query
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.skip("dnsmasq did not start: %r" % self.process.stderr.read()[:300])
            try:
                dns.query.udp(dns.message.make_query("ready.test", "A"), "127.0.0.1", port=self.port, timeout=0.2)
                return
            except Exception:
                time.sleep(0.05)
        self.stop()
        pytest.skip("dnsmasq did not answer within 10 s")

    def address(self):
        return "127.0.0.1@%d" % self.port

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stderr.close()


@pytest.fixture
def dnsmasq():
    started = []

    def start(*options):
        server = Dnsmasq(*options)
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


DNSMASQ_ZONE = ("--mx-host=example.test,a.mx.test,10", "--mx-host=example.test,b.mx.test,10",
                "--mx-host=example.test,c.mx.test,20",
                "--host-record=a.mx.test,127.0.53.1", "--host-record=b.mx.test,127.0.53.2,::1",
                "--host-record=c.mx.test,127.0.53.3",
                "--host-record=aonly.test,127.0.53.4", "--mx-host=null.test,.,0")


@needs_dnsmasq
def test_dnsmasq_mx_order_ties_implicit_null_nxdomain(dnsmasq):
    server = dnsmasq(*DNSMASQ_ZONE)
    orders = set()
    for _ in range(30):
        found = lookup(server, "example.test")
        assert sorted(found[:3]) == [("127.0.53.1", 10, "a.mx.test"), ("127.0.53.2", 10, "b.mx.test"),
                                     ("::1", 10, "b.mx.test")]
        assert found[3] == ("127.0.53.3", 20, "c.mx.test")
        orders.add(found[0][2])
    assert orders == {"a.mx.test", "b.mx.test"}  # ties in both orders
    assert lookup(server, "aonly.test") == [("127.0.53.4", 0, "aonly.test")]
    assert lookup(server, "null.test") == (failures.D, failures.NullMX(b"null.test").text())
    assert lookup(server, "nx.test") == (failures.D, failures.DnsHard(b"nx.test").text())


@needs_dnsmasq
@needs_root
def test_dnsmasq_delivery_through_qmail_remote(home, server, dnsmasq):
    dns_server = dnsmasq("--mx-host=example.test,mx.example.test,10", "--host-record=mx.example.test,%s" % MX1)
    smtp = smtp25(server, MX1)
    reports, raw = remote(home, dns_server)
    assert raw == b"r\0" + accepted_by(MX1)
    assert len(smtp.wait_sessions()) == 1


# --- through the installed qmail-remote ------------------------------------------------------

@needs_root
def test_delivery_goes_to_the_best_mx_then_the_next(home, server, stub):
    stub.add("example.test", "MX", "20 second.test.", "10 first.test.")
    stub.add("first.test", "A", MX1).add("second.test", "A", MX2)
    best, other = smtp25(server, MX1), smtp25(server, MX2)
    _, raw = remote(home, stub)
    assert raw == b"r\0" + accepted_by(MX1)
    best.wait_sessions()
    assert other.sessions == []
    halt(best)  # now MX1 refuses: the next MX takes it
    _, raw = remote(home, stub)
    assert raw == b"r\0" + accepted_by(MX2)


@needs_root
def test_implicit_mx_delivery(home, server, stub):
    stub.add("example.test", "A", MX3)
    smtp = smtp25(server, MX3)
    _, raw = remote(home, stub)
    assert raw == b"r\0" + accepted_by(MX3)
    assert smtp.wait_sessions()


@needs_root
def test_literal_mx_target_delivery(home, server, stub):
    stub.add("example.test", "MX", "10 %s." % MX4)
    smtp25(server, MX4)
    assert remote(home, stub)[1] == b"r\0" + accepted_by(MX4)


def test_null_mx_nxdomain_servfail_reports(home, stub):
    stub.add("null.test", "MX", "0 .")
    stub.add("sf.test", "MX", "10 a.test.").behave("sf.test", "servfail")
    assert remote(home, stub, "null.test")[1] == b"D" + failures.NullMX(b"null.test").text() + b"\0"
    assert remote(home, stub, "nx.test")[1] == b"DSorry, I couldn't find any host named nx.test. (#5.1.2)\n\0"
    assert remote(home, stub, "sf.test")[1] == SOFT_TEXT
    assert not stub.asked("a.test") and not stub.asked(".")


def test_silent_resolver_with_timeoutdns_1(home, stub):
    stub.behave("example.test", "silent")
    home.control("timeoutdns", "1\n")
    start = time.monotonic()
    assert remote(home, stub)[1] == SOFT_TEXT
    assert time.monotonic() - start < 20  # generous: it does not hang


def test_bad_dnscacheip_is_a_clear_z(home):
    _, raw = home.remote("example.test", "s@src.example", "r@example.test", DNSCACHEIP="dns.example")
    assert raw == (b"ZUnable to find a DNS server: $DNSCACHEIP holds 'dns.example', not an IP address "
                   b"(or ip@port). (#4.3.0)\n\0")


@needs_root
def test_truncated_mx_answer_is_fetched_over_tcp(home, server, stub):
    stub.add("example.test", "MX", "10 mx.test.").behave("example.test", "truncate")
    stub.add("mx.test", "A", MX1)
    smtp25(server, MX1)
    assert remote(home, stub)[1] == b"r\0" + accepted_by(MX1)
    assert stub.asked("example.test", "MX", "tcp")


@needs_root
@needs_ipv6
def test_aaaa_only_mx_on_ipv6_loopback(home, server, stub):
    home.control("ipme", "127.0.0.1\n")  # ::1 is not "me" here, or prefme would refuse it
    stub.add("example.test", "MX", "10 six.test.").add("six.test", "AAAA", "::1")
    smtp = smtp25(server, "::1")
    assert remote(home, stub)[1] == b"r\0" + accepted_by("::1")
    assert smtp.wait_sessions()


@needs_root
@needs_ipv6
def test_mixed_families_ipv6_first_then_ipv4(home, server, stub):
    home.control("ipme", "127.0.0.1\n")
    stub.add("example.test", "MX", "10 both.test.").add("both.test", "A", MX2).add("both.test", "AAAA", "::1")
    v6, v4 = smtp25(server, "::1"), smtp25(server, MX2)
    assert remote(home, stub)[1] == b"r\0" + accepted_by("::1")
    v6.wait_sessions()
    halt(v6)  # ::1 now refuses: IPv4 of the same MX takes it at once
    assert remote(home, stub)[1] == b"r\0" + accepted_by(MX2)
    assert v4.wait_sessions()


@needs_root
def test_ipme_prefme_through_qmail_remote(home, server, stub):
    home.control("ipme", "%s\n::1\n" % MX1)
    stub.add("meworse.test", "MX", "10 other.test.", "20 me.test.")
    stub.add("mebest.test", "MX", "10 me.test.", "20 other.test.")
    stub.add("me.test", "A", MX1).add("other.test", "A", MX2)
    mine, other = smtp25(server, MX1), smtp25(server, MX2)
    assert remote(home, stub, "meworse.test")[1] == b"r\0" + accepted_by(MX2)
    _, raw = remote(home, stub, "mebest.test")
    assert raw == b"D" + failures.AmbiguousMX().text() + b"\0"
    other.wait_sessions()
    assert len(other.sessions) == 1 and mine.sessions == []
    # a routed delivery skips the rule: a route to one of my addresses is used
    home.route("routed.test:%s" % MX1)
    assert remote(home, stub, "routed.test")[1] == b"r\0" + accepted_by(MX1)


def test_ipme_literal_host_is_me(home):
    home.control("ipme", "127.0.53.11\n")
    _, raw = home.remote("[127.0.53.11]", "s@src.example", "r@[127.0.53.11]")
    assert raw == b"D" + failures.AmbiguousMX().text() + b"\0"


def test_relay_by_name_uses_a_and_aaaa_only(home, server, stub):
    smtp = server()
    stub.add("relayhost.test", "MX", "10 elsewhere.test.").add("relayhost.test", "A", "127.0.0.1")
    home.route("example.test:relayhost.test:%d" % smtp.port)
    assert remote(home, stub)[1] == b"r\0" + accepted_by("127.0.0.1")
    # no MX query at all (DANE asks the relay's TLSA beside its addresses: doc/dane.html)
    assert sorted(q[1] for q in stub.asked()) == ["A", "AAAA", "TLSA"]


# --- dnspython is loaded only for a name that is not ASCII -----------------------------------

HARNESS = r"""
import os, sys
sys.path.insert(0, sys.argv.pop(1))
out = sys.argv.pop(1)
def listing(real):
    def wrapped(path, argv, *env):
        with open(out, "w") as listing:
            listing.write("\n".join(sorted(sys.modules)))
        real(path, argv, *env)
    return wrapped
os.execv, os.execve = listing(os.execv), listing(os.execve)
from qremote.programs.qmail_remote import main
main()
"""


def modules_at_exec(home, tmp_path, host, accepted_ip="127.0.0.1", **env):
    """The modules qmail-remote had loaded when it exec'd qmail-remote-io: the installed
    command's interpreter and library path, with os.execv(e) wrapped to list sys.modules."""
    with open(os.path.join(home.bindir, "qmail-remote")) as command:
        python = command.readline()[2:].split()[0]
        path_line = [line for line in command if line.startswith("import sys; sys.path.insert(0, ")][0]
    libdir = path_line.split("sys.path.insert(0, ", 1)[1].rstrip().rstrip(")")[1:-1]
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    listing = tmp_path / "modules"
    if listing.exists():
        listing.unlink()
    # argv[0] must be the installed qmail-remote: paths.sibling() finds qmail-remote-io beside it
    code = ("import sys; sys.argv[0] = %r; exec(compile(open(%r).read(), %r, 'exec'))"
            % (os.path.join(home.bindir, "qmail-remote"), str(harness), str(harness)))
    argv = [python, "-I", "-S", "-c", code, libdir, str(listing), host, "s@src.example", "r@" + host]
    with open(home.message_file(b"Subject: t\n\nhi\n"), "rb") as message:
        done = subprocess.run(argv, stdin=message, stdout=subprocess.PIPE, env=home.env(**env), timeout=60)
    assert done.stdout.endswith(b"K%s accepted message.\nRemote host said: 250 ok queued\n\0"
                                % accepted_ip.encode()), done.stdout
    return set(listing.read_text().split())


def dnspython_modules(modules):
    return sorted(m for m in modules if m == "dns" or m.startswith("dns."))


def test_ip_literal_delivery_never_imports_dnspython(home, server, tmp_path):
    smtp = server()
    home.route("example.org:[127.0.0.1]:%d" % smtp.port)
    modules = modules_at_exec(home, tmp_path, "example.org")
    assert "qremote.programs.qmail_remote" in modules
    assert not dnspython_modules(modules) and "qremote.resolver" not in modules


def test_ascii_name_lookup_never_imports_dnspython_nor_idna(home, server, stub, tmp_path):
    smtp = server()
    # a relay given by an ASCII name: our resolver and name codec, no dnspython, no idna
    stub.add("relay.test", "A", "127.0.0.1")
    home.route("example.org:relay.test:%d" % smtp.port)
    modules = modules_at_exec(home, tmp_path, "example.org", DNSCACHEIP=stub.address())
    assert "qremote.resolver" in modules and not dnspython_modules(modules) and "idna" not in modules
    assert stub.asked("relay.test", "A")


def test_idn_relay_is_asked_by_its_idna_2008_a_labels(home, server, stub, tmp_path):
    # stra\u00dfe.test is xn--strae-oqa.test in IDNA 2008; IDNA 2003 (dnspython without
    # the idna package, as package/install used to install it) asked for strasse.test,
    # another domain: the mail would have gone there
    smtp = server()
    stub.add("xn--strae-oqa.test", "A", "127.0.0.1").add("strasse.test", "A", "127.0.0.2")
    path = home.control("smtproutes", ("example.org:stra\u00dfe.test:%d\n" % smtp.port).encode())  # UTF-8
    os.utime(path, ns=(time.time_ns(), time.time_ns()))  # the routes cache compares the mtime
    modules = modules_at_exec(home, tmp_path, "example.org", DNSCACHEIP=stub.address())
    assert stub.asked("xn--strae-oqa.test", "A") and stub.asked("xn--strae-oqa.test", "AAAA")
    assert not stub.asked("strasse.test")
    # the installed chain has the idna package, loaded for this name; dnspython not at all
    assert "idna" in modules and not dnspython_modules(modules)


@needs_root
def test_ascii_mx_delivery_never_imports_dnspython(home, server, stub, tmp_path):
    home.control("ipme", "127.0.0.1\n")
    stub.add("example.test", "MX", "10 mx.example.test.").add("mx.example.test", "A", MX2)
    smtp25(server, MX2)
    modules = modules_at_exec(home, tmp_path, "example.test", MX2, DNSCACHEIP=stub.address())
    assert "qremote.resolver" in modules and not dnspython_modules(modules)
    assert stub.asked("example.test", "MX") and stub.asked("mx.example.test", "A")


def test_non_ascii_domain_is_asked_by_its_a_labels(stub):
    stub.add("xn--bcher-kva.test", "MX", "10 mx.xn--bcher-kva.test.")
    stub.add("mx.xn--bcher-kva.test", "A", "192.0.2.8")
    assert lookup(stub, "B\u00fccher.test") == [("192.0.2.8", 10, "mx.xn--bcher-kva.test")]
    assert stub.asked("xn--bcher-kva.test", "MX") and stub.asked("mx.xn--bcher-kva.test", "AAAA")


@needs_root
def test_non_ascii_domain_delivery(home, server, stub):
    home.control("ipme", "127.0.0.1\n")
    stub.add("xn--bcher-kva.test", "MX", "10 mx.xn--bcher-kva.test.").add("mx.xn--bcher-kva.test", "A", MX3)
    smtp = smtp25(server, MX3)
    assert remote(home, stub, "b\u00fccher.test")[1] == b"r\0" + accepted_by(MX3)
    assert smtp.wait_sessions() and stub.asked("xn--bcher-kva.test", "MX")


def test_compressed_and_mixed_case_answers_are_read(stub):
    # dnspython's server compresses every name it can (case-insensitively: the targets'
    # suffix comes out in the question's case); the answer's case differs from ours
    stub.add("example.test", "MX", "10 MX.Example.TEST.", "20 other.example.test.")
    stub.add("mx.example.test", "A", "192.0.2.1").add("other.example.test", "A", "192.0.2.2")
    found = lookup(stub, "EXAMPLE.test")
    assert [(ip, pref, name.lower()) for ip, pref, name in found] == [
        ("192.0.2.1", 10, "mx.example.test"), ("192.0.2.2", 20, "other.example.test")]
