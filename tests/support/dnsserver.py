"""A small scriptable DNS server on loopback (UDP and TCP on one port), for tests and
benchmarks, built on dnspython's wire code (dns.message: fine in tests, never in lib).

    server = DNSServer()                      # 127.0.0.1, a free port
    server.add("mx.test", "MX", "10 a.mx.test.", "20 b.mx.test.")
    server.add("a.mx.test", "A", "127.0.0.2")
    server.behave("b.mx.test", "servfail")    # or "silent", "truncate", "refused", "garbage"
    server.delay = 0.1                        # every answer waits 100 ms (concurrently)
    server.late["b.mx.test"] = 0.3            # but b.mx.test's wait 300 ms
    env DNSCACHEIP=server.address()           # "127.0.0.1@PORT"

It answers like a recursive resolver would for its own data: a name it has no
records for at all is NXDOMAIN, a known name without the asked type is NODATA, and a
CNAME chain inside the data is followed and put in the answer. Behaviours, per name
and optionally per type: "servfail", "refused" (rcode only), "silent" (never
answers), "truncate" (UDP answers carry TC and no records; TCP answers are whole),
"truncate-always" (TC over TCP too), "truncate-stall" (TC over UDP, and a TCP
connection that is accepted but never answered), "garbage" (a well-addressed answer
whose records cannot be parsed), "wrong-id" (an answer with another id, then the real
one), "servfail-bare", "refused-bare", "formerr-bare", "notimp-bare" (that rcode with
the right id but no question section, as some servers send). CNAME chains in the data
are followed up to 64 links. `server.ad = True` makes it a "validating resolver": every
answer (NOERROR or NXDOMAIN) carries the AD bit, except for names/types given behaviour
"no-ad" (an insecure zone); never a real validation (tests/support/dnssec.py is).
Every query is logged in `queries` as
(name lowercased without the final dot, type text, "udp" or "tcp"); `events` logs
("query", name, type) on arrival and ("answer", name, type) when the answer goes
out, in order: it shows which queries were in flight together.
"""

import socket
import threading
import time

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from tests.support.net import Stoppable, accept_each, close_quietly


def round_trips(events):
    """The longest chain of round trips in an event log: a query sent after answers went out
    is one deeper than the deepest of them (a late answer to a query nobody waited for, such
    as an optional one, adds nothing)."""
    depth, latest, deepest = {}, 0, 0
    for kind, name, rdtype in events:
        if kind == "query":
            depth.setdefault((name, rdtype), latest + 1)
            deepest = max(deepest, depth[(name, rdtype)])
        else:
            latest = max(latest, depth.get((name, rdtype), 0))
    return deepest


BARE_ERRORS = {"servfail-bare": dns.rcode.SERVFAIL, "refused-bare": dns.rcode.REFUSED,
               "formerr-bare": dns.rcode.FORMERR, "notimp-bare": dns.rcode.NOTIMP}


def _key(name):
    return name.lower().rstrip(".")


class DNSServer(Stoppable):
    def __init__(self, host="127.0.0.1", delay=0.0):
        self.host = host
        self.delay = delay
        self.ad = False      # set AD on answers: a validating resolver's "secure"
        self.late = {}       # name -> seconds its answers wait instead of delay
        self.records = {}    # name -> {type text: [rdata text]}
        self.behaviours = {}  # (name, type text or None) -> behaviour
        self.queries = []
        self.events = []
        self.lock = threading.Lock()
        self.stopping = False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(50):  # UDP and TCP on the same free port
            self.udp = socket.socket(family, socket.SOCK_DGRAM)
            self.udp.bind((host, 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(family, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind((host, self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        else:
            raise RuntimeError("no free port for UDP and TCP at once")
        self.tcp.listen(16)
        self.threads = [threading.Thread(target=self._serve_udp, daemon=True),
                        threading.Thread(target=self._serve_tcp, daemon=True)]
        for thread in self.threads:
            thread.start()

    # --- scripting ---
    def add(self, name, rdtype, *values):
        self.records.setdefault(_key(name), {}).setdefault(rdtype.upper(), []).extend(values)
        return self

    def behave(self, name, behaviour, rdtype=None):
        self.behaviours[(_key(name), rdtype and rdtype.upper())] = behaviour
        return self

    def address(self):
        """The $DNSCACHEIP word for this server."""
        return "%s@%d" % (self.host, self.port)

    def asked(self, name=None, rdtype=None, proto=None):
        """The logged queries, filtered."""
        with self.lock:
            return [q for q in self.queries if (name is None or q[0] == _key(name))
                    and (rdtype is None or q[1] == rdtype) and (proto is None or q[2] == proto)]

    def stop(self):
        self.stopping = True
        close_quietly(self.udp, self.tcp)

    # --- answers ---
    def _behaviour(self, name, rdtype):
        return self.behaviours.get((name, rdtype)) or self.behaviours.get((name, None))

    def answer(self, wire, proto):
        """[(packet, name, type)] to send back for one query (empty: say nothing)."""
        try:
            query = dns.message.from_wire(wire)
            question = query.question[0]
        except Exception:  # not a query we can answer: say nothing, as a server would
            return []
        name, rdtype = _key(question.name.to_text()), dns.rdatatype.to_text(question.rdtype)
        with self.lock:
            self.queries.append((name, rdtype, proto))
            self.events.append(("query", name, rdtype))
        behaviour = self._behaviour(name, rdtype)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        if self.ad and behaviour != "no-ad":
            response.flags |= dns.flags.AD
        if behaviour == "silent" or (behaviour == "truncate-stall" and proto == "tcp"):
            return []
        packets = self._packets(query, question, name, rdtype, behaviour, proto, response)
        return [(packet, name, rdtype) for packet in packets]

    def _packets(self, query, question, name, rdtype, behaviour, proto, response):
        if behaviour in BARE_ERRORS:
            response.set_rcode(BARE_ERRORS[behaviour])
            response.question = []
            return [response.to_wire()]
        if behaviour in ("servfail", "refused"):
            response.set_rcode(dns.rcode.SERVFAIL if behaviour == "servfail" else dns.rcode.REFUSED)
            return [response.to_wire()]
        if (behaviour in ("truncate", "truncate-stall") and proto == "udp") or behaviour == "truncate-always":
            response.flags |= dns.flags.TC
            return [response.to_wire()]
        self._fill(response, question.name, question.rdtype)
        packet = response.to_wire()
        if behaviour == "garbage":
            # the header says one more answer record than there is: cut short
            packet = packet[:6] + (int.from_bytes(packet[6:8], "big") + 1).to_bytes(2, "big") + packet[8:] + b"\xc0"
        if behaviour == "wrong-id":
            other = bytearray(packet)
            other[0] ^= 0x55
            return [bytes(other), packet]
        return [packet]

    def _fill(self, response, qname, qtype):
        owner = qname
        for _ in range(64):
            data = self.records.get(_key(owner.to_text()))
            if data is None:
                if owner == qname:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                return
            wanted = dns.rdatatype.to_text(qtype)
            if "CNAME" in data and wanted != "CNAME":
                target = data["CNAME"][0]
                response.answer.append(self._rrset(owner, "CNAME", [target]))
                owner = dns.name.from_text(target)
                continue
            if wanted in data:
                response.answer.append(self._rrset(owner, wanted, data[wanted]))
            return

    @staticmethod
    def _rrset(owner, rdtype, values):
        rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        for value in values:
            rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), value), ttl=60)
        return rrset

    # --- the sockets ---
    def _later(self, send, packets):
        def go():
            wait = self.late.get(packets[0][1], self.delay)
            if wait:
                time.sleep(wait)
            for packet, name, rdtype in packets:
                with self.lock:
                    self.events.append(("answer", name, rdtype))
                try:
                    send(packet)
                except OSError:
                    return
        threading.Thread(target=go, daemon=True).start()

    def _serve_udp(self):
        while not self.stopping:
            try:
                wire, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            packets = self.answer(wire, "udp")
            if packets:
                self._later(lambda packet, peer=peer: self.udp.sendto(packet, peer), packets)

    def _serve_tcp(self):
        accept_each(self, self.tcp, lambda conn, _peer: threading.Thread(
            target=self._serve_tcp_conn, args=(conn,), daemon=True).start())

    def _serve_tcp_conn(self, conn):
        conn.settimeout(30)
        buffer = b""
        try:
            while True:
                while len(buffer) < 2 or len(buffer) < 2 + int.from_bytes(buffer[:2], "big"):
                    more = conn.recv(65535)
                    if not more:
                        conn.close()
                        return
                    buffer += more
                size = int.from_bytes(buffer[:2], "big")
                wire, buffer = buffer[2:2 + size], buffer[2 + size:]
                packets = self.answer(wire, "tcp")
                if packets:
                    self._later(lambda packet: conn.sendall(len(packet).to_bytes(2, "big") + packet), packets)
        except OSError:
            conn.close()
