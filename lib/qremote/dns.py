"""DNS for qmail-remote: a domain's MX targets, or a relay's addresses, as Targets.

Its one job: names in, an ordered list of candidates.Target out, or the stock
failure (failures.DnsSoft, DnsHard, NoAddress, NullMX). It is imported only by
resolve.py, and only when a name must be looked up, so a delivery to an IP literal
or an IP route loads none of it.

Rules of this module:
1. The whole wire is read and written here: the header, the question, A/AAAA/MX/CNAME
   rdata (int.from_bytes, inet_ntop), and domain names (Name: labels to wire, wire
   to labels with compression pointers, ASCII case-insensitive comparison, text).
   dnspython is imported for one thing only, internationalised names: a host holding
   a non-ASCII byte is read as UTF-8 and turned into its A-labels (xn--) by
   dns.name, imported inside that branch (query_name), and the ASCII result goes
   through our own encoder like any other host. So a delivery to an ASCII domain
   never imports dnspython: `import dns.name` (dnspython 2.9) costs 85 to 130 ms
   of CPU on the test machine (it pulls importlib.metadata, dataclasses, typing,
   enum), and qmail-remote's whole work for a domain needing DNS (control files,
   lookup, connect, greeting, EHLO) went from 112 ms to 27 ms of CPU without it
   (tests/bench/bench_dns.py; doc/dns.html has the figures). Names read from
   answers are never converted: A-labels stay A-labels.
2. Our own I/O, stub-resolver style: select.poll over _socket sockets, every query
   of a stage in flight at once. Stage 1 is the MX query; stage 2 the A and AAAA
   queries of every MX target together (or of the domain itself: implicit MX; or
   of a relay, which is the only stage of relay_targets).
3. Deadlines: with control/timeoutdns > 0, each stage gets that many seconds of
   its own. With 0 (the default: "no limit", as skarnet's), all the DNS work of a
   delivery shares one overall cap of OVERALL_CAP (60 s), so a dead resolver
   defers the delivery (Z #4.1.2) after a minute instead of hanging it forever.
4. A query is sent over UDP without EDNS (answers fit 512 bytes, as stock), and
   retransmitted to the next nameserver after RETRY seconds, the wait doubling
   after each round of all servers up to MAX_RETRY, until the deadline. A server
   that refuses the port (ICMP, seen on the connected socket) is dead for the rest
   of the stage; SERVFAIL, REFUSED, another error rcode or a malformed answer fail
   that server for that query only, and the next server is asked at once; when
   no server is left the query is a soft failure. A truncated answer (TC) is
   asked again over TCP from the server that sent it; a TCP answer that is
   truncated too fails that server.
5. An answer counts only if it comes from the server's address and port (the
   sockets are connected), has our random query id, is a response to a standard
   query, and repeats our question exactly (case-insensitively). Anything else is
   junk and ignored: a stray or forged packet cannot end a query. An answer that
   passes these checks but cannot be parsed is a malformed answer (rule 4).
6. Results: NOERROR gives records (none: NODATA), NXDOMAIN is hard, the rest soft.
   MX: NXDOMAIN -> DnsHard(host); soft -> DnsSoft; a single MX whose target is the
   root ("0 .", RFC 7505) -> NullMX, with no address query; no MX record (NODATA,
   or an answer holding only a CNAME) -> implicit MX: the addresses of the host
   itself at preference 0. A target that is an IPv4 literal ("127.0.0.7.") is used
   as is, keeping its MX preference (stock gives it preference 0, a quirk not
   kept). After stage 2: targets with addresses are returned even if others
   failed (as stock); none, and some target had a soft failure -> DnsSoft; none
   otherwise -> NoAddress (D #5.4.4). The host itself (implicit MX) or a relay
   without any address: soft -> DnsSoft, else DnsHard(name), as stock.
7. CNAME: the recipient domain is never rewritten (RFC 5321 section 5.1, notqmail's
   choice); a CNAME chain inside an answer is followed (at most MAX_CNAME links)
   and the records of the chain's end are used, which is what a recursive resolver
   gives (stock takes every record of the asked type, whoever owns it). Records
   owned by other names are ignored. No follow-up query is made for a chain the
   server did not complete: it counts as NODATA.
8. Order: MX preference ascending; equal preferences in random order, from
   os.urandom (never a time or pid seed). A target name listed twice keeps its
   best preference. Each target's addresses: IPv6 first (RFC 8305 section 4),
   each family in answer order; connect.interleave() then alternates families.
9. Bounds on what the DNS peer controls: answers up to 65535 bytes (UDP read size
   and TCP length prefix), at most MAX_RECORDS answer records read, MAX_MX
   targets (the best ones), MAX_ADDRESSES addresses per target, MAX_CNAME links.
   A name read from an answer: labels of type 00 (length up to 63) and 11
   (compression pointer) only; a pointer must point before the start of the
   labels being read, at labels that end before that start (so it can never loop,
   and a forward pointer is refused); at most MAX_POINTERS (16) pointers and
   MAX_NAME (255) octets in wire form; anything else is Malformed.
10. Nameservers: $DNSCACHEIP when set and not blank (space-separated `ip` or
   `ip@port`, IPv4 or IPv6, for tests and debugging; a word that is not one is a
   Z naming it), else the `nameserver` lines of /etc/resolv.conf
   (127.0.0.1 when there are none, as the C library does). At most MAX_SERVERS.
   Names are always absolute: no search list, as stock. /etc/hosts is not read.
11. A host to look up (query_name), as dnspython read it before: split at dots, one
   final dot allowed, no empty label, labels of 1 to 63 octets, at most 255 octets
   in wire form, case kept as given; "", "." and "@" are the root, which is no host.
   A host holding a backslash is no host (it would be an escape in zone-file text).
   Names are printed (name_bytes: reports, SNI) without the final dot, a byte that
   is not printable ASCII as \\DDD and one of "().;\\@$ behind a backslash.
"""

import _socket
import errno
import os
import select
import time

from . import failures
from .candidates import AF_INET, AF_INET6, Target, normal_ip, parse_literal

RESOLV_CONF = "/etc/resolv.conf"
DEFAULT_PORT = 53
OVERALL_CAP = 60.0    # seconds for all the DNS work of a delivery when control/timeoutdns is 0
RETRY = 1.0           # seconds before an unanswered query is sent again (to the next server)
MAX_RETRY = 4.0       # the wait doubles after each round of all servers, up to this
MAX_SERVERS = 3       # as the C library's MAXNS
MAX_RECORDS = 200     # answer records read from one answer
MAX_MX = 32           # MX targets used, the best ones
MAX_ADDRESSES = 16    # addresses used per target, families shared fairly
MAX_CNAME = 8         # CNAME links followed inside one answer
MAX_PACKET = 65535
MAX_CONFIG = 65536    # bytes of /etc/resolv.conf read
MAX_LABEL = 63
MAX_NAME = 255        # octets of a name in wire form, the final zero included
MAX_POINTERS = 16     # compression pointers followed in one name

TYPE_A, TYPE_CNAME, TYPE_MX, TYPE_AAAA = 1, 5, 15, 28
CLASS_IN = 1
RCODE_NOERROR, RCODE_NXDOMAIN = 0, 3

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


# --- the wire: names (pure) -----------------------------------------------------------------

class Malformed(Exception):
    """An answer to our question that cannot be parsed."""


class Name:
    """An absolute domain name: its labels (bytes, the root's empty label left out).

    Equal names compare and hash alike whatever their ASCII case, as DNS compares
    them (bytes.lower() folds A-Z only); other bytes are compared exactly.
    """

    __slots__ = ("labels", "wire", "key")

    def __init__(self, labels):
        self.labels = tuple(labels)
        self.wire = b"".join([bytes((len(label),)) + label for label in self.labels]) + b"\0"
        self.key = self.wire.lower()  # length octets are < 64: lower() leaves them alone

    def __eq__(self, other):
        return isinstance(other, Name) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        return "Name(%r)" % self.text()

    def is_root(self):
        return not self.labels

    def text(self):
        """bytes without the final dot ("." for the root), odd bytes escaped (rule 11)."""
        if not self.labels:
            return b"."
        return b".".join([_label_text(label) for label in self.labels])


_ESCAPED = frozenset(b'"().;\\@$')


def _label_text(label):
    if all(0x20 < byte < 0x7F and byte not in _ESCAPED for byte in label):
        return label
    out = bytearray()
    for byte in label:
        if byte in _ESCAPED:
            out += b"\\" + bytes((byte,))
        elif 0x20 < byte < 0x7F:
            out.append(byte)
        else:
            out += b"\\%03d" % byte
    return bytes(out)


def name_from_ascii(host):
    """An ASCII host (bytes) as a Name (rule 11), or None when it is not one."""
    if b"\\" in host or not host.isascii() or host in (b"", b".", b"@"):
        return None
    labels = (host[:-1] if host.endswith(b".") else host).split(b".")
    if not all(0 < len(label) <= MAX_LABEL for label in labels):
        return None
    name = Name(labels)
    return name if len(name.wire) <= MAX_NAME else None


def name_from_wire(packet, at):
    """(Name, octets used at at) of the name at offset at of packet; Malformed if it cannot be one.

    Labels of type 00 and 11 only. A pointer must point before the start of the
    labels being read, and what it points at must end before that start too (it
    cannot overlap them), so no loop is possible; at most MAX_POINTERS pointers
    and MAX_NAME octets (rule 9).
    """
    labels, size, used, pointers = [], 1, None, 0
    start, end = at, len(packet)  # the labels being read start at start and must end before end
    while True:
        if at >= end:
            raise Malformed("name cut short")
        length = packet[at]
        kind = length & 0xC0
        if kind == 0xC0:
            if at + 1 >= end:
                raise Malformed("compression pointer cut short")
            target = (length & 0x3F) << 8 | packet[at + 1]
            if used is None:
                used = at + 2 - start
            pointers += 1
            if target >= start or pointers > MAX_POINTERS:
                raise Malformed("compression pointer not backwards, or too many")
            at, start, end = target, target, start
            continue
        if kind:
            raise Malformed("label type %d" % (kind >> 6))
        if length == 0:
            return Name(labels), (at + 1 - start if used is None else used)
        size += length + 1
        if size > MAX_NAME:
            raise Malformed("name too long")
        if at + 1 + length >= end:  # the zero or pointer that ends the labels must fit too
            raise Malformed("label cut short")
        labels.append(packet[at + 1:at + 1 + length])
        at += length + 1


# --- the wire: one question and its answer (pure) ------------------------------------------


class Answer:
    """A parsed answer: rcode, TC flag, and the answer records as (owner, type, value).

    value: the address text for A/AAAA, the target Name for CNAME, (preference,
    exchange Name) for MX. Records of other types or classes are not kept.
    """

    __slots__ = ("rcode", "truncated", "records")

    def __init__(self, rcode, truncated, records):
        self.rcode, self.truncated, self.records = rcode, truncated, records


class Question:
    """One query (name, type) with its id: the packet to send, and the checks on answers."""

    __slots__ = ("name", "rdtype", "ident", "wire", "section")

    def __init__(self, name, rdtype, ident):
        self.name, self.rdtype, self.ident = name, rdtype, ident
        self.section = name.wire + rdtype.to_bytes(2, "big") + CLASS_IN.to_bytes(2, "big")
        # id, flags RD (recursion desired), 1 question, no other records
        self.wire = ident.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + self.section

    def __repr__(self):
        return "Question(%r, %d, %d)" % (self.name, self.rdtype, self.ident)

    def matches(self, packet):
        """Is packet a response to this very question (id, QR, opcode 0, same question)?"""
        end = 12 + len(self.section)
        return (len(packet) >= end and packet[:2] == self.wire[:2]
                and packet[2] & 0xF8 == 0x80  # QR set, opcode QUERY
                and packet[4:6] == b"\x00\x01"
                and packet[12:end].lower() == self.section.lower())

    def read(self, packet):
        """The Answer in packet (which matches()); Malformed when it cannot be parsed."""
        rcode = packet[3] & 0x0F
        truncated = bool(packet[2] & 0x02)
        records = []
        if rcode != RCODE_NOERROR or truncated:
            return Answer(rcode, truncated, records)
        count = min(int.from_bytes(packet[6:8], "big"), MAX_RECORDS)
        at = 12 + len(self.section)
        for _ in range(count):
            owner, used = name_from_wire(packet, at)
            at += used
            if at + 10 > len(packet):
                raise Malformed("record header cut short")
            rdtype = int.from_bytes(packet[at:at + 2], "big")
            rdclass = int.from_bytes(packet[at + 2:at + 4], "big")
            start = at + 10
            at = start + int.from_bytes(packet[at + 8:at + 10], "big")
            if at > len(packet):
                raise Malformed("record data cut short")
            if rdclass == CLASS_IN and rdtype in (TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_MX):
                records.append((owner, rdtype, _rdata(packet, rdtype, start, at)))
        return Answer(rcode, truncated, records)


def _rdata(packet, rdtype, start, end):
    if rdtype in (TYPE_A, TYPE_AAAA):
        family, size = (AF_INET, 4) if rdtype == TYPE_A else (AF_INET6, 16)
        if end - start != size:
            raise Malformed("address of %d bytes" % (end - start))
        return _socket.inet_ntop(family, packet[start:end])
    if rdtype == TYPE_CNAME:
        target, used = name_from_wire(packet, start)
        if start + used != end:
            raise Malformed("CNAME data length")
        return target
    if end - start < 3:
        raise Malformed("MX data length")
    exchange, used = name_from_wire(packet, start + 2)
    if start + 2 + used != end:
        raise Malformed("MX data length")
    return int.from_bytes(packet[start:start + 2], "big"), exchange


def chain_end(name, records):
    """Where name's CNAME chain in records ends (name itself when there is none)."""
    for _ in range(MAX_CNAME):
        for owner, rdtype, value in records:
            if rdtype == TYPE_CNAME and owner == name:
                name = value
                break
        else:
            break
    return name


def records_for(name, rdtype, records):
    """The values of rdtype owned by the end of name's CNAME chain, in answer order."""
    owner = chain_end(name, records)
    return [value for who, kind, value in records if kind == rdtype and who == owner]


def fresh_ids(count, entropy=os.urandom):
    """count distinct random 16-bit query ids."""
    ids = []
    while len(ids) < count:
        ident = int.from_bytes(entropy(2), "big")
        if ident not in ids:
            ids.append(ident)
    return ids


# --- the exchange: every query of a stage at once --------------------------------------------

class Result:
    """How one query ended: OK (records, maybe none), NXDOMAIN or SOFT."""

    __slots__ = ("status", "records")

    def __init__(self, status, records=()):
        self.status, self.records = status, records

    def __repr__(self):
        return "Result(%r, %r)" % (self.status, self.records)


class _Query:
    """One question's progress through a stage."""

    __slots__ = ("question", "result", "sent", "next_send", "failed", "tcp", "tcp_server",
                 "tcp_out", "tcp_in")

    def __init__(self, question):
        self.question = question
        self.result = None
        self.sent = 0             # UDP transmissions so far: picks the next server and the wait
        self.next_send = 0.0
        self.failed = set()       # servers that gave this query no usable answer
        self.tcp = None           # the TCP socket after a truncated answer
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

    def __init__(self, questions, servers, deadline, clock=time.monotonic):
        self.queries = [_Query(q) for q in questions]
        self.by_ident = {query.question.ident: query for query in self.queries}
        self.servers = servers
        self.clock = clock
        self.deadline = deadline
        self.dead = set()   # server indexes whose port is refused or unreachable
        self.udp = {}       # server index -> socket
        self.owners = {}    # fd -> ("udp", server index) or ("tcp", query): identity matters
        self.poller = select.poll()

    def run(self):
        """[Result] in the order of the questions."""
        try:
            while True:
                now = self.clock()
                pending = [q for q in self.queries if q.result is None]
                if not pending:
                    break
                if now >= self.deadline:
                    for query in pending:
                        self._finish(query, Result(SOFT))  # timed out
                    break
                for query in pending:
                    if query.result is None and query.tcp is None and now >= query.next_send:
                        self._send(query, now)
                waiting = [q.next_send for q in self.queries if q.result is None and q.tcp is None]
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
            return [query.result for query in self.queries]
        finally:
            self._close_all()

    def _own(self, sock, kind, key, events):
        fd = sock.fileno()
        self.owners[fd] = (kind, key, fd)
        self.poller.register(fd, events)

    # --- UDP ---
    def _usable(self, query):
        return [i for i in range(len(self.servers)) if i not in self.dead and i not in query.failed]

    def _send(self, query, now):
        usable = self._usable(query)
        if not usable:
            self._finish(query, Result(SOFT))
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
            if query is not None and query.result is None and query.tcp is None and query.question.matches(packet):
                self._answered(query, index, packet, via_tcp=False)

    def _server_dead(self, index):
        self.dead.add(index)
        sock = self.udp.pop(index, None)
        if sock is not None:
            self._forget(sock)
        now = self.clock()
        for query in self.queries:
            if query.result is None and query.tcp is None:
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
                self._start_tcp(query, index)
        elif answer.rcode == RCODE_NOERROR:
            self._finish(query, Result(OK, answer.records))
        elif answer.rcode == RCODE_NXDOMAIN:
            self._finish(query, Result(NXDOMAIN))
        else:
            self._server_failed(query, index)

    def _server_failed(self, query, index):
        """This server gave no usable answer to this query: ask the next one now."""
        self._close_tcp(query)
        query.failed.add(index)
        query.next_send = self.clock()

    def _finish(self, query, result):
        query.result = result
        self._close_tcp(query)

    # --- TCP, after a truncated answer ---
    def _start_tcp(self, query, index):
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
        query.tcp, query.tcp_server = sock, index
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

    def _close_all(self):
        for sock in self.udp.values():
            sock.close()
        for query in self.queries:
            if query.tcp is not None:
                query.tcp.close()


# --- decisions (pure) ------------------------------------------------------------------------

def query_name(host):
    """A host (bytes) as the Name to ask for, or None if it cannot be one (rule 11).

    A non-ASCII host is UTF-8 to be turned into A-labels (IDNA): the one use of
    dnspython (rule 1), imported here only.
    """
    if host.isascii():
        return name_from_ascii(host)
    if b"\\" in host:
        return None
    try:
        text = host.decode("utf-8")
    except UnicodeDecodeError:
        return None
    import dns.exception
    import dns.name
    try:
        labels = dns.name.from_text(text).labels
    except (dns.exception.DNSException, ValueError):  # UnicodeError is a ValueError
        return None
    return name_from_ascii(b".".join(labels))  # absolute: ends with the root's b"", so a final dot


def name_bytes(name):
    """A Name as Target.name: text without the final dot (rule 11)."""
    return name.text()


def order_mx(exchangers, entropy=os.urandom):
    """(preference, name) pairs by preference, ties in random order; a name keeps its best preference."""
    best = {}
    for preference, name in exchangers:
        if name not in best or preference < best[name]:
            best[name] = preference
    return sorted(((p, n) for n, p in best.items()), key=lambda pair: (pair[0], entropy(8)))


def is_null_mx(exchangers):
    """RFC 7505: the only MX (after merging duplicates) points at the root."""
    return len(exchangers) == 1 and exchangers[0][1].is_root()


def share_addresses(ipv6, ipv4, limit=MAX_ADDRESSES):
    """At most limit addresses, IPv6 first, each family keeping half unless the other needs less."""
    take6 = min(len(ipv6), max(limit // 2, limit - len(ipv4)))
    take4 = min(len(ipv4), limit - take6)
    return [(ip, AF_INET6) for ip in ipv6[:take6]] + [(ip, AF_INET) for ip in ipv4[:take4]]


def addresses(name, result_a, result_aaaa):
    """(addresses [(ip, family)], soft) of a name from its A and AAAA Results.

    soft: one of the two queries failed softly (NXDOMAIN and NODATA just give nothing).
    """
    ipv4 = records_for(name, TYPE_A, result_a.records) if result_a.status == OK else []
    ipv6 = records_for(name, TYPE_AAAA, result_aaaa.records) if result_aaaa.status == OK else []
    return share_addresses(ipv6, ipv4), SOFT in (result_a.status, result_aaaa.status)


def address_questions(names):
    """The A and AAAA Questions of names, with distinct ids: [A, AAAA] per name, flattened."""
    ids = fresh_ids(2 * len(names))
    questions = []
    for i, name in enumerate(names):
        questions.append(Question(name, TYPE_A, ids[2 * i]))
        questions.append(Question(name, TYPE_AAAA, ids[2 * i + 1]))
    return questions


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


def one_name_targets(name, label, port, results):
    """Targets (preference 0) of one name from its two Results: a relay, or an implicit MX."""
    found, soft = addresses(name, results[0], results[1])
    if found:
        return [Target(ip, family, port, 0, label) for ip, family in found]
    if soft:
        raise failures.DnsSoft()
    raise failures.DnsHard(label)  # stock: no address record for the name itself is "no such host"


def mx_list_targets(ordered, results_by_name, port=25):
    """Targets of ordered (preference, name) pairs, given each looked-up name's two Results."""
    targets, soft = [], False
    for preference, name in ordered:
        label = name_bytes(name)
        literal = parse_literal(label)
        if literal is not None:
            targets.append(Target(literal[0], literal[1], port, preference, label))
            continue
        found, name_soft = addresses(name, *results_by_name[name])
        soft = soft or name_soft
        targets.extend(Target(ip, family, port, preference, label) for ip, family in found)
    if not targets:
        raise failures.DnsSoft() if soft else failures.NoAddress()
    return targets


# --- the API -------------------------------------------------------------------------------

def mx_targets(host, timeoutdns=0, servers=None):
    """The Targets of a mail domain (bytes), MX groups in order; raises the stock DNS failures."""
    servers = nameservers() if servers is None else servers
    deadlines = Deadlines(timeoutdns)
    name = query_name(host)
    if name is None:
        raise failures.DnsHard(host)
    mx_result, = Stage([Question(name, TYPE_MX, fresh_ids(1)[0])], servers, deadlines.next_stage()).run()
    if mx_result.status == SOFT:
        raise failures.DnsSoft()
    if mx_result.status == NXDOMAIN:
        raise failures.DnsHard(host)
    exchangers = order_mx(records_for(name, TYPE_MX, mx_result.records))
    if not exchangers:  # implicit MX
        results = Stage(address_questions([name]), servers, deadlines.next_stage()).run()
        return one_name_targets(name, host, 25, results)
    if is_null_mx(exchangers):
        raise failures.NullMX(host)
    ordered = [(p, n) for p, n in exchangers if not n.is_root()][:MAX_MX]  # a root target among others: unusable
    names = [n for _, n in ordered if parse_literal(name_bytes(n)) is None]
    results = Stage(address_questions(names), servers, deadlines.next_stage()).run() if names else []
    by_name = {n: (results[2 * i], results[2 * i + 1]) for i, n in enumerate(names)}
    return mx_list_targets(ordered, by_name)


def relay_targets(relay, port, timeoutdns=0, servers=None):
    """The Targets of a smtproutes relay name: its A and AAAA records only, never MX."""
    servers = nameservers() if servers is None else servers
    name = query_name(relay)
    if name is None:
        raise failures.DnsHard(relay)
    results = Stage(address_questions([name]), servers, Deadlines(timeoutdns).next_stage()).run()
    return one_name_targets(name, relay, port, results)
