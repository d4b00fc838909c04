"""The DNS I/O stage: the nameservers, and every query of a stage sent to them at once.

Rules 2, 3 (deadlines), 4 (retransmission, failover, TCP), 5 and 10 (nameservers)
of the package docstring (qremote/resolver/__init__.py). The packets themselves are
built and read by codec.py.
"""

import _socket
import errno
import os
import select
import time

from .. import failures
from ..candidates import AF_INET, AF_INET6, normal_ip
from .codec import RCODE_NOERROR, RCODE_NXDOMAIN, Malformed

RESOLV_CONF = "/etc/resolv.conf"
DEFAULT_PORT = 53
OVERALL_CAP = 60.0    # seconds for all the DNS work of a delivery when control/timeoutdns is 0
RETRY = 1.0           # seconds before an unanswered query is sent again (to the next server)
MAX_RETRY = 4.0       # the wait doubles after each round of all servers, up to this
MAX_SERVERS = 3       # as the C library's MAXNS
MAX_PACKET = 65535
MAX_CONFIG = 65536    # bytes of /etc/resolv.conf read

OK, NXDOMAIN, SOFT = "ok", "nxdomain", "soft"  # a query's outcome


# --- nameservers -----------------------------------------------------------------------

class Server:
    """One nameserver: where to send (family, sockaddr) and its canonical address."""

    __slots__ = ("family", "address", "port")

    def __init__(self, family, address, port):
        self.family, self.address, self.port = family, address, port

    def __repr__(self):
        return "Server(%r, %r)" % (self.address, self.port)

    def __eq__(self, other):
        return isinstance(other, Server) and (self.address, self.port) == (other.address, other.port)


def parse_server(text, default_port=DEFAULT_PORT):
    """`ip`, `ip@port`, `[ipv6]` or `[ipv6]@port` -> Server, or None when unusable."""
    address, at, port_text = text.partition("@")
    if at:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    else:
        port = default_port
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    address, percent, scope = address.partition("%")  # fe80::1%eth0: the scope goes to connect
    found = normal_ip(address)
    if found is None or (percent and found[1] != AF_INET6):
        return None
    return Server(found[1], found[0] + percent + scope, port)


def servers_from_environment(value):
    """$DNSCACHEIP -> [Server]; failures.NoResolver when it names no usable server."""
    servers = []
    for word in value.split():
        server = parse_server(word)
        if server is None:
            raise failures.NoResolver("$DNSCACHEIP holds %r, not an IP address (or ip@port)" % word[:60])
        if server not in servers:
            servers.append(server)
    if not servers:
        raise failures.NoResolver("$DNSCACHEIP is set but empty")
    return servers[:MAX_SERVERS]


def servers_from_resolv_conf(data):
    """The nameserver lines of resolv.conf text (bytes); unusable lines are skipped, as libc does."""
    servers = []
    for line in data.split(b"\n"):
        words = line.split()
        if len(words) >= 2 and words[0] == b"nameserver":
            server = parse_server(words[1].decode("latin-1"))
            if server is not None and server not in servers:
                servers.append(server)
    return servers[:MAX_SERVERS] or [Server(AF_INET, "127.0.0.1", DEFAULT_PORT)]


def nameservers(environ=None, resolv_conf=RESOLV_CONF):
    environ = os.environ if environ is None else environ
    if environ.get("DNSCACHEIP", "").strip():
        return servers_from_environment(environ["DNSCACHEIP"])
    try:
        with open(resolv_conf, "rb") as config:
            data = config.read(MAX_CONFIG)
    except FileNotFoundError:
        data = b""
    except OSError as error:
        raise failures.NoResolver("cannot read %s: %s" % (resolv_conf, error.strerror)) from None
    return servers_from_resolv_conf(data)


# --- the exchange: every query of a stage at once --------------------------------------------

class Result:
    """How one query ended: OK (records, maybe none), NXDOMAIN or SOFT; ad: the answer's AD bit
    (the resolver validated it with DNSSEC; never set on SOFT)."""

    __slots__ = ("status", "records", "ad")

    def __init__(self, status, records=(), ad=False):
        self.status, self.records, self.ad = status, records, ad

    def __repr__(self):
        return "Result(%r, %r, ad=%r)" % (self.status, self.records, self.ad)


class _Query:
    """One question's progress through a stage."""

    __slots__ = ("question", "result", "sent", "next_send", "failed", "truncating", "tcp", "tcp_server",
                 "tcp_out", "tcp_in")

    def __init__(self, question):
        self.question = question
        self.result = None
        self.sent = 0             # UDP transmissions so far: picks the next server and the wait
        self.next_send = 0.0
        self.failed = set()       # servers that gave this query no usable answer
        self.truncating = []      # servers that said TC over UDP, to ask over TCP in turn
        self.tcp = None           # the TCP socket to truncating[0]: asked while UDP goes on
        self.tcp_server = None
        self.tcp_out = b""
        self.tcp_in = bytearray()


def retry_wait(sent, servers):
    """Seconds to wait for an answer to the sent-th transmission, with servers usable."""
    return min(RETRY * 2 ** ((sent - 1) // max(servers, 1)), MAX_RETRY)


class Stage:
    """Sends every question to the nameservers at once and collects a Result for each.

    The I/O shell around Question: one connected UDP socket per server (opened on
    first use), one TCP socket per truncated query, select.poll, one deadline
    (absolute, on clock). Each registered fd maps to an owner record; an event is
    handled only if its fd still has the record it had when poll() returned, so a
    socket closed and its fd number reused within one batch of events is safe.
    """

    def __init__(self, questions, servers, deadline, clock=time.monotonic, enough=None):
        self.queries = [_Query(q) for q in questions]
        # enough([Result or None per question]) -> True when the stage may end with queries
        # still pending (optional ones: they read as SOFT); None: wait for every query
        self.enough = enough
        self.by_ident = {query.question.ident: query for query in self.queries}
        self.servers = servers
        self.clock = clock
        self.deadline = deadline
        self.dead = set()   # server indexes whose port is refused or unreachable
        self.udp = {}       # server index -> socket
        self.owners = {}    # fd -> ("udp", server index) or ("tcp", query): identity matters
        self.poller = select.poll()

    def then(self, questions, deadline, enough=None):
        """The next stage on the same sockets: these questions are added, and the ones still in
        flight (optional ones that enough() did not wait for) go on, unanswered so far."""
        for question in questions:
            query = _Query(question)
            self.queries.append(query)
            self.by_ident[question.ident] = query
        self.deadline, self.enough = deadline, enough
        return self

    def run(self, last=True):
        """[Result] in the order of the questions (all of them, earlier stages' too). A query
        enough() did not wait for reads as SOFT, and with last=False stays in flight, with the
        sockets open, for then(); close() ends it."""
        try:
            while True:
                now = self.clock()
                pending = [q for q in self.queries if q.result is None]
                if not pending:
                    break
                if self.enough is not None and self.enough([q.result for q in self.queries]):
                    break
                if now >= self.deadline:
                    for query in pending:
                        self._finish(query, Result(SOFT))  # timed out
                    break
                for query in pending:
                    if query.result is None and now >= query.next_send:
                        self._send(query, now)
                waiting = [q.next_send for q in self.queries if q.result is None]
                if any(when <= now for when in waiting) or all(q.result is not None for q in pending):
                    continue  # a server died while sending (ask the next now), or all are done
                wake = min([self.deadline] + waiting)
                events = self.poller.poll(max(0.0, wake - self.clock()) * 1000.0)
                ready = [(self.owners.get(fd), events) for fd, events in events]
                for owner, events in ready:
                    if owner is None or self.owners.get(owner[2]) is not owner:
                        continue  # closed while handling an earlier event of this batch
                    if owner[0] == "udp":
                        self._udp_ready(owner[1])
                    elif owner[1].result is None:
                        self._tcp_ready(owner[1], events)
            return [query.result or Result(SOFT) for query in self.queries]
        finally:
            if last:
                self.close()

    def _own(self, sock, kind, key, events):
        fd = sock.fileno()
        self.owners[fd] = (kind, key, fd)
        self.poller.register(fd, events)

    # --- UDP ---
    def _usable(self, query):
        """The servers this query may still be sent to over UDP: not dead, not failed it,
        not already known to truncate it (those are asked over TCP)."""
        return [i for i in range(len(self.servers))
                if i not in self.dead and i not in query.failed and i not in query.truncating]

    def _send(self, query, now):
        usable = self._usable(query)
        if not usable:
            if query.tcp is None:
                self._finish(query, Result(SOFT))
            else:
                query.next_send = self.deadline  # only the TCP exchange is left: wait for it
            return
        index = usable[query.sent % len(usable)]
        query.sent += 1
        query.next_send = now + retry_wait(query.sent, len(usable))
        sock = self._udp_socket(index)
        if sock is None:
            query.next_send = now  # that server is dead: the next one at once
            return
        try:
            sock.send(query.question.wire)
        except BlockingIOError:
            pass  # a full send buffer: the retransmission will go
        except OSError:
            self._server_dead(index)

    def _udp_socket(self, index):
        if index in self.udp:
            return self.udp[index]
        server = self.servers[index]
        try:
            sock = _socket.socket(server.family, _socket.SOCK_DGRAM | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC)
        except OSError:
            self.dead.add(index)
            return None
        try:
            sock.connect((server.address, server.port))
        except OSError:
            sock.close()
            self.dead.add(index)
            return None
        self.udp[index] = sock
        self._own(sock, "udp", index, select.POLLIN)
        return sock

    def _udp_ready(self, index):
        sock = self.udp[index]
        for _ in range(256):  # a flood of junk cannot keep us here
            try:
                packet = sock.recv(MAX_PACKET)
            except BlockingIOError:
                return
            except OSError:  # ECONNREFUSED and the like, from an ICMP error
                self._server_dead(index)
                return
            query = self.by_ident.get(int.from_bytes(packet[:2], "big")) if len(packet) >= 2 else None
            if query is None or query.result is not None or index in query.truncating:
                continue  # not ours, done, or the server already said TC (TCP is on it)
            if query.question.matches(packet):
                self._answered(query, index, packet, via_tcp=False)
            elif query.question.bare_error(packet):
                self._server_failed(query, index)  # the connected socket: it is that server's

    def _server_dead(self, index):
        self.dead.add(index)
        sock = self.udp.pop(index, None)
        if sock is not None:
            self._forget(sock)
        now = self.clock()
        for query in self.queries:
            if query.result is None:
                query.next_send = now  # ask another server now (or fail, if none is left)

    # --- answers ---
    def _answered(self, query, index, packet, via_tcp):
        try:
            answer = query.question.read(packet)
        except Malformed:
            self._server_failed(query, index)
            return
        if answer.truncated:
            if via_tcp:
                self._server_failed(query, index)  # TCP has no excuse for truncation
            else:
                # asked again over TCP (one connection at a time per query); meanwhile the
                # other servers go on being asked over UDP, so a stalled TCP blocks nothing
                query.truncating.append(index)
                if query.tcp is None:
                    self._start_tcp(query, index)
        elif answer.rcode == RCODE_NOERROR:
            self._finish(query, Result(OK, answer.records, answer.ad))
        elif answer.rcode == RCODE_NXDOMAIN:
            self._finish(query, Result(NXDOMAIN, (), answer.ad))
        else:
            self._server_failed(query, index)

    def _server_failed(self, query, index):
        """This server gave no usable answer to this query: ask the next one now."""
        query.failed.add(index)
        query.next_send = self.clock()
        if index in query.truncating:
            query.truncating.remove(index)
        if query.tcp_server == index:  # its TCP exchange failed
            self._close_tcp(query)
            query.tcp_server = None
            if query.truncating:  # another server said TC meanwhile: its turn over TCP
                self._start_tcp(query, query.truncating[0])

    def _finish(self, query, result):
        query.result = result
        self._close_tcp(query)

    # --- TCP, after a truncated answer ---
    def _start_tcp(self, query, index):
        query.tcp_server = index
        server = self.servers[index]
        try:
            sock = _socket.socket(server.family, _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC)
        except OSError:
            self._server_failed(query, index)
            return
        err = sock.connect_ex((server.address, server.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._server_failed(query, index)
            return
        wire = query.question.wire
        query.tcp = sock
        query.tcp_out, query.tcp_in = len(wire).to_bytes(2, "big") + wire, bytearray()
        self._own(sock, "tcp", query, select.POLLOUT)

    def _tcp_ready(self, query, events):
        sock, index = query.tcp, query.tcp_server
        try:
            if query.tcp_out:
                error = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
                if error:
                    raise OSError(error, os.strerror(error))
                query.tcp_out = query.tcp_out[sock.send(query.tcp_out):]
                if not query.tcp_out:
                    self.poller.modify(sock.fileno(), select.POLLIN)
                return
            data = sock.recv(MAX_PACKET + 2 - len(query.tcp_in))
        except BlockingIOError:
            return
        except OSError:
            self._server_failed(query, index)
            return
        if not data:
            self._server_failed(query, index)  # closed before the whole answer came
            return
        query.tcp_in += data
        if len(query.tcp_in) < 2:
            return
        size = int.from_bytes(query.tcp_in[:2], "big")
        if len(query.tcp_in) < 2 + size:
            return
        packet = bytes(query.tcp_in[2:2 + size])
        self._close_tcp(query)
        if query.question.matches(packet):
            self._answered(query, index, packet, via_tcp=True)
        else:
            self._server_failed(query, index)  # nobody forges a TCP answer: the server is wrong

    def _close_tcp(self, query):
        if query.tcp is not None:
            self._forget(query.tcp)
            query.tcp = None

    # --- cleanup ---
    def _forget(self, sock):
        fd = sock.fileno()
        if fd >= 0:
            self.owners.pop(fd, None)
            try:
                self.poller.unregister(fd)
            except KeyError:
                pass
        sock.close()

    def close(self):
        for sock in self.udp.values():
            sock.close()
        self.udp.clear()
        for query in self.queries:
            if query.tcp is not None:
                query.tcp.close()
                query.tcp = None


class Deadlines:
    """Each stage's deadline (rule 3): timeoutdns seconds from the stage's start, or
    one overall cap from the first lookup when timeoutdns is 0."""

    __slots__ = ("timeoutdns", "cap", "clock")

    def __init__(self, timeoutdns, clock=time.monotonic, cap=None):
        self.timeoutdns = timeoutdns if timeoutdns and timeoutdns > 0 else 0
        self.clock = clock
        self.cap = clock() + (OVERALL_CAP if cap is None else cap)

    def next_stage(self):
        return self.clock() + self.timeoutdns if self.timeoutdns else self.cap
