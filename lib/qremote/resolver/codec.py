"""The DNS wire, pure (no I/O): domain names, one question's packet, its answer's records.

Rules 1, 5 (the checks on an answer), 7 (CNAME chains), 9 (bounds on what the peer
controls) and 11 (names) of the package docstring (qremote/resolver/__init__.py).
"""

import _socket
import os

from ..candidates import AF_INET, AF_INET6

MAX_RECORDS = 200     # answer records read from one answer
MAX_CNAME = 16        # CNAME links followed inside one answer (stock follows 9 and more)
MAX_LABEL = 63
MAX_NAME = 255        # octets of a name in wire form, the final zero included
MAX_POINTERS = 16     # compression pointers followed in one name

TYPE_A, TYPE_CNAME, TYPE_MX, TYPE_TXT, TYPE_AAAA, TYPE_TLSA = 1, 5, 15, 16, 28, 52
TYPE_NAMES = {TYPE_A: "A", TYPE_CNAME: "CNAME", TYPE_MX: "MX", TYPE_TXT: "TXT", TYPE_AAAA: "AAAA", TYPE_TLSA: "TLSA"}
KEPT_TYPES = frozenset(TYPE_NAMES)
CLASS_IN = 1
FLAG_AD = 0x20        # in the header's fourth octet: the resolver validated the answer (DNSSEC)
RCODE_NOERROR, RCODE_NXDOMAIN = 0, 3
ERROR_RCODES = (1, 2, 4, 5)  # FORMERR, SERVFAIL, NOTIMP, REFUSED: the server failed the query


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
    """A parsed answer: rcode, TC flag, AD flag, and the answer records as (owner, type, value).

    value: the address text for A/AAAA, the target Name for CNAME, (preference,
    exchange Name) for MX, (usage, selector, matching type, data bytes) for TLSA, one
    bytes value for TXT (its character-strings joined). Records of other types or
    classes are not kept.
    """

    __slots__ = ("rcode", "truncated", "ad", "records")

    def __init__(self, rcode, truncated, records, ad=False):
        self.rcode, self.truncated, self.records, self.ad = rcode, truncated, records, ad


class Question:
    """One query (name, type) with its id: the packet to send, and the checks on answers."""

    __slots__ = ("name", "rdtype", "ident", "wire", "section")

    def __init__(self, name, rdtype, ident):
        self.name, self.rdtype, self.ident = name, rdtype, ident
        self.section = name.wire + rdtype.to_bytes(2, "big") + CLASS_IN.to_bytes(2, "big")
        # id, flags RD (recursion desired) and AD (tell us whether you validated it: RFC 6840
        # section 5.7, without EDNS's DO bit), 1 question, no other records
        self.wire = ident.to_bytes(2, "big") + b"\x01\x20\x00\x01\x00\x00\x00\x00\x00\x00" + self.section

    def __repr__(self):
        return "Question(%r, %d, %d)" % (self.name, self.rdtype, self.ident)

    def matches(self, packet):
        """Is packet a response to this very question (id, QR, opcode 0, same question)?"""
        end = 12 + len(self.section)
        return (len(packet) >= end and packet[:2] == self.wire[:2]
                and packet[2] & 0xF8 == 0x80  # QR set, opcode QUERY
                and packet[4:6] == b"\x00\x01"
                and packet[12:end].lower() == self.section.lower())

    def bare_error(self, packet):
        """Is packet an error reply to our id with no question section (FORMERR, SERVFAIL,
        NOTIMP, REFUSED)? Some servers answer so; it is that server's answer, not junk."""
        return (len(packet) >= 12 and packet[:2] == self.wire[:2]
                and packet[2] & 0xF8 == 0x80
                and packet[4:6] == b"\x00\x00"
                and packet[3] & 0x0F in ERROR_RCODES)

    def read(self, packet):
        """The Answer in packet (which matches()); Malformed when it cannot be parsed."""
        rcode = packet[3] & 0x0F
        truncated = bool(packet[2] & 0x02)
        ad = bool(packet[3] & FLAG_AD)
        records = []
        if rcode != RCODE_NOERROR or truncated:
            return Answer(rcode, truncated, records, ad)
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
            if rdclass == CLASS_IN and rdtype in KEPT_TYPES:
                records.append((owner, rdtype, _rdata(packet, rdtype, start, at)))
        return Answer(rcode, truncated, records, ad)


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
    if rdtype == TYPE_TLSA:
        if end - start < 3:  # usage, selector, matching type (empty data: unusable, not malformed)
            raise Malformed("TLSA data length")
        return packet[start], packet[start + 1], packet[start + 2], packet[start + 3:end]
    if rdtype == TYPE_TXT:
        return _txt(packet, start, end)
    if end - start < 3:
        raise Malformed("MX data length")
    exchange, used = name_from_wire(packet, start + 2)
    if start + 2 + used != end:
        raise Malformed("MX data length")
    return int.from_bytes(packet[start:start + 2], "big"), exchange


def _txt(packet, start, end):
    """A TXT record's character-strings (one or more, each length-prefixed), joined."""
    if start == end:
        raise Malformed("TXT data empty")
    strings = []
    while start < end:
        stop = start + 1 + packet[start]
        if stop > end:
            raise Malformed("TXT string cut short")
        strings.append(packet[start + 1:stop])
        start = stop
    return b"".join(strings)


def record_text(rdtype, value):
    """A record's value as text for the trace (str): presentation format, data in hex."""
    if rdtype in (TYPE_A, TYPE_AAAA):
        return value
    if rdtype == TYPE_CNAME:
        return value.text().decode("ascii", "backslashreplace") + "."
    if rdtype == TYPE_MX:
        return "%d %s." % (value[0], value[1].text().decode("ascii", "backslashreplace").rstrip("."))
    if rdtype == TYPE_TLSA:
        return "%d %d %d %s" % (value[0], value[1], value[2], value[3].hex())
    return value.decode("ascii", "backslashreplace")


def _alias_of(name, records):
    for owner, rdtype, value in records:
        if rdtype == TYPE_CNAME and owner == name:
            return value
    return None


def chain_end(name, records):
    """Where name's CNAME chain in records ends (name itself when there is none), or None
    when it goes on past MAX_CNAME links (a loop does too): no answer we can use."""
    for _ in range(MAX_CNAME):
        alias = _alias_of(name, records)
        if alias is None:
            return name
        name = alias
    return None if _alias_of(name, records) is not None else name


def records_for(name, rdtype, records):
    """The values of rdtype owned by the end of name's CNAME chain, in answer order;
    None when the chain is too long (rule 7)."""
    owner = chain_end(name, records)
    if owner is None:
        return None
    return [value for who, kind, value in records if kind == rdtype and who == owner]


def fresh_ids(count, entropy=os.urandom, taken=()):
    """count distinct random 16-bit query ids, none of them in taken."""
    ids = []
    while len(ids) < count:
        ident = int.from_bytes(entropy(2), "big")
        if ident not in ids and ident not in taken:
            ids.append(ident)
    return ids
