"""DNS and connection decisions without sockets: nameserver lists, the name codec (checked
against dnspython's, an independent implementation), the wire codec of one
question (answers built with dnspython's dns.message, an independent encoder), CNAME
chains, MX ordering and ties, Null MX, address sharing, the failure each outcome gives,
deadlines, the ipme/prefme rule, control/outgoingip, the Happy Eyeballs order."""

import os

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from qremote import candidates, connect, control, failures, hostname, ipme
from qremote.resolver import codec, exchange, mx
from qremote.candidates import AF_INET, AF_INET6, Target

D = dns.name.from_text  # dnspython's Name: builds the test packets


def N(text):
    """Our Name of a text ("." is the root)."""
    return codec.Name(()) if text == "." else codec.name_from_ascii(text.encode())


# --- nameservers -------------------------------------------------------------------------

@pytest.mark.parametrize("text, address, port", [
    ("127.0.0.1", "127.0.0.1", 53),
    ("127.0.0.1@5353", "127.0.0.1", 5353),
    ("::1", "::1", 53),
    ("[::1]@5353", "::1", 5353),
    ("0:0::1", "::1", 53),
    ("fe80::1%lo", "fe80::1%lo", 53),
])
def test_parse_server(text, address, port):
    server = exchange.parse_server(text)
    assert (server.address, server.port) == (address, port)


@pytest.mark.parametrize("text", ["", "localhost", "127.0.0.1@", "127.0.0.1@0", "127.0.0.1@65536",
                                  "127.0.0.1@x", "1.2.3.4%lo", "256.1.1.1", "::1@53@53"])
def test_parse_server_refuses(text):
    assert exchange.parse_server(text) is None


def test_dnscacheip_words_and_duplicates():
    servers = exchange.servers_from_environment(" 127.0.0.1@5300  ::1 127.0.0.1@5300 10.0.0.1 10.0.0.2 ")
    assert [(s.address, s.port) for s in servers] == [("127.0.0.1", 5300), ("::1", 53), ("10.0.0.1", 53)]


def test_dnscacheip_bad_word_is_a_clear_z():
    with pytest.raises(failures.NoResolver) as caught:
        exchange.servers_from_environment("127.0.0.1 dns.example")
    assert caught.value.letter == failures.Z
    assert b"'dns.example'" in caught.value.text() and caught.value.text().endswith(b"(#4.3.0)\n")


def test_blank_dnscacheip_means_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_bytes(b"# comment\nsearch example.org\nnameserver 192.0.2.53\nnameserver bogus\n"
                     b"nameserver 2001:db8::53\nnameserver 192.0.2.54\nnameserver 192.0.2.55\n")
    servers = exchange.nameservers({"DNSCACHEIP": "  "}, str(conf))
    assert [s.address for s in servers] == ["192.0.2.53", "2001:db8::53", "192.0.2.54"]
    assert [s.address for s in exchange.nameservers({"DNSCACHEIP": "127.0.0.9"}, str(conf))] == ["127.0.0.9"]


def test_no_resolv_conf_means_localhost(tmp_path):
    servers = exchange.nameservers({}, str(tmp_path / "absent"))
    assert [(s.address, s.port) for s in servers] == [("127.0.0.1", 53)]
    assert exchange.servers_from_resolv_conf(b"options ndots:2\n")[0].address == "127.0.0.1"


# --- the wire ----------------------------------------------------------------------------

def question(name="mx.test", rdtype=codec.TYPE_MX, ident=0x1234):
    return codec.Question(N(name), rdtype, ident)


def response_to(q, rcode=dns.rcode.NOERROR, answers=(), tc=False):
    """An answer to Question q built by dnspython: answers are (owner, type, [values])."""
    query = dns.message.from_wire(q.wire)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if tc:
        response.flags |= dns.flags.TC
    for owner, rdtype, values in answers:
        rrset = dns.rrset.RRset(D(owner), dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        for value in values:
            rrset.add(dns.rdata.from_text(dns.rdataclass.IN, rrset.rdtype, value), ttl=60)
        response.answer.append(rrset)
    return response.to_wire()


def test_question_wire_is_a_standard_recursive_query():
    q = question()
    parsed = dns.message.from_wire(q.wire)
    # RD, and AD: asks the resolver to say whether it validated the answer (RFC 6840 5.7)
    assert parsed.id == 0x1234 and parsed.flags == dns.flags.RD | dns.flags.AD and not parsed.edns >= 0
    assert (parsed.question[0].name, parsed.question[0].rdtype) == (D("mx.test"), dns.rdatatype.MX)


def test_matches_checks_id_qr_opcode_and_question():
    q = question()
    good = response_to(q)
    assert q.matches(good)
    assert q.matches(good[:12] + good[12:].upper())  # names compare case-insensitively
    assert not q.matches(b"\x12\x35" + good[2:])                  # another id
    assert not q.matches(good[:2] + bytes([good[2] & 0x7F]) + good[3:])  # QR clear: a query
    assert not q.matches(good[:2] + bytes([good[2] | 0x08]) + good[3:])  # opcode IQUERY
    assert not q.matches(response_to(question("mx2.test")))       # another question
    assert not q.matches(response_to(question(rdtype=codec.TYPE_A)))
    assert not q.matches(good[:14])


def test_read_mx_a_aaaa_and_a_cname_chain():
    q = question("alias.test", codec.TYPE_A)
    packet = response_to(q, answers=[("alias.test", "CNAME", ["real.test."]),
                                     ("real.test", "A", ["192.0.2.1", "192.0.2.2"]),
                                     ("other.test", "A", ["192.0.2.9"]),
                                     ("real.test", "TXT", ['"x"'])])
    answer = q.read(packet)
    assert answer.rcode == 0 and not answer.truncated
    assert sorted(codec.records_for(N("alias.test"), codec.TYPE_A, answer.records)) == ["192.0.2.1", "192.0.2.2"]
    q6 = question("v6.test", codec.TYPE_AAAA)
    answer = q6.read(response_to(q6, answers=[("v6.test", "AAAA", ["2001:db8::0:1"])]))
    assert codec.records_for(N("v6.test"), codec.TYPE_AAAA, answer.records) == ["2001:db8::1"]
    qm = question()
    answer = qm.read(response_to(qm, answers=[("mx.test", "MX", ["10 a.mx.test.", "0 ."])]))
    assert sorted(codec.records_for(N("mx.test"), codec.TYPE_MX, answer.records)) == [(0, N(".")), (10, N("a.mx.test"))]


def test_cname_loop_is_bounded():
    records = [(N("a.test"), codec.TYPE_CNAME, N("b.test")), (N("b.test"), codec.TYPE_CNAME, N("a.test")),
               (N("a.test"), codec.TYPE_A, "192.0.2.1")]
    assert codec.chain_end(N("a.test"), records) is None  # it returns, and says "unusable"
    assert codec.records_for(N("a.test"), codec.TYPE_A, records) is None


def test_cname_chain_of_max_links_is_followed_one_more_is_not():
    names = [N("c%d.test" % i) for i in range(codec.MAX_CNAME + 2)]
    records = [(a, codec.TYPE_CNAME, b) for a, b in zip(names, names[1:])]
    assert codec.MAX_CNAME >= 16
    assert codec.chain_end(names[1], records) == names[-1]  # MAX_CNAME links
    assert codec.chain_end(names[0], records) is None        # one more


def test_read_rcodes_and_truncation():
    q = question()
    assert q.read(response_to(q, rcode=dns.rcode.NXDOMAIN)).rcode == codec.RCODE_NXDOMAIN
    assert q.read(response_to(q, rcode=dns.rcode.SERVFAIL)).rcode == 2
    answer = q.read(response_to(q, answers=[("mx.test", "MX", ["10 a.mx.test."])], tc=True))
    assert answer.truncated and answer.records == []


@pytest.mark.parametrize("damage", [
    lambda p: p[:-1],                                      # last record cut short
    lambda p: p[:6] + b"\x00\x05" + p[8:],                 # more records announced than sent
    lambda p: p[:6] + b"\x00\x02" + p[8:] + b"\xc0",        # a second record: a dangling pointer
])
def test_read_malformed(damage):
    q = question("a.test", codec.TYPE_A)
    bad = damage(response_to(q, answers=[("a.test", "A", ["192.0.2.1"])]))
    with pytest.raises(codec.Malformed):
        q.read(bad)


def test_read_bad_address_length_and_pointer_loop():
    q = question("a.test", codec.TYPE_A)
    packet = bytearray(response_to(q, answers=[("a.test", "A", ["192.0.2.1"])]))
    packet[-6:-4] = b"\x00\x03"  # rdlength 3 for an A record
    with pytest.raises(codec.Malformed):
        q.read(bytes(packet[:-1]))
    loop = bytearray(response_to(q))
    loop[6:8] = b"\x00\x01"
    at = len(loop)
    loop += bytes([0xC0 | (at >> 8), at & 0xFF])  # an owner name that points at itself
    with pytest.raises(codec.Malformed):
        q.read(bytes(loop))


def test_fresh_ids_distinct():
    ids = codec.fresh_ids(2000)
    assert len(set(ids)) == 2000 and all(0 <= i < 65536 for i in ids)


# --- names: our codec ----------------------------------------------------------------------

@pytest.mark.parametrize("text", ["example.org", "Mail.Example.ORG.", "a", "xn--bcher-kva.test",
                                  "under_score.test", "x" * 63 + ".test", "1.2.3.4.in-addr.arpa"])
def test_encode_round_trips_and_agrees_with_dnspython(text):
    name = codec.name_from_ascii(text.encode())
    assert name.wire == D(text).to_wire()
    back, used = codec.name_from_wire(b"\x00" * 12 + name.wire + b"rest", 12)
    assert back == name and back.labels == name.labels and used == len(name.wire)
    assert name.text() == text.rstrip(".").encode()


def test_encode_refuses_what_dnspython_refused():
    longest = b".".join([b"a" * 63] * 3 + [b"b" * 61])  # 3 * 64 + 62 + the root's 1 = 255 octets
    assert len(codec.name_from_ascii(longest).wire) == 255
    for bad in (b"", b".", b"@", b"..", b".a", b"a..b", b"a.b..", b"x" * 64 + b".test",
                longest + b"b", b"a\\.b", b"exa\\109ple"):
        assert codec.name_from_ascii(bad) is None, bad
    assert codec.name_from_ascii(b"@.test").labels == (b"@", b"test")  # only "@" alone is the root


def pointer(offset):
    return bytes([0xC0 | offset >> 8, offset & 0xFF])


def test_decode_compression_pointers_including_pointer_to_pointer():
    packet = bytearray(12) + D("example.test").to_wire()        # at 12
    bare = len(packet)
    packet += pointer(12)                                        # at bare: only a pointer
    www = len(packet)
    packet += b"\x03www" + pointer(12 + 8)                       # www + "test" (a suffix)
    mail = len(packet)
    packet += b"\x04MAIL" + pointer(bare)                        # a pointer to a pointer
    packet = bytes(packet)
    assert codec.name_from_wire(packet, bare) == (N("example.test"), 2)
    assert codec.name_from_wire(packet, www) == (N("www.test"), 6)
    name, used = codec.name_from_wire(packet, mail)
    assert (name, used, name.labels) == (N("mail.example.test"), 7, (b"MAIL", b"example", b"test"))
    assert dns.name.from_wire(packet, mail) == (D("mail.example.test"), 7)  # dnspython reads it alike


@pytest.mark.parametrize("packet, at", [
    (b"\x01a" + pointer(0), 0),                     # points at its own start: a loop
    (b"\x01a\x00" + pointer(5) + pointer(3), 5),    # two pointers at each other
    (b"\x01a\x00" + pointer(6) + b"\x01b\x00", 3),  # forward pointer
    (b"\x01a\x00" + pointer(0x3FFF), 3),            # beyond the packet
    (b"\x01a" + pointer(0) + b"\x01b" + pointer(2), 4),  # backwards, but into the name that points: overlap
    (b"", 0), (b"\x05ab", 0), (b"\x01a", 0), (b"\xc0", 0), (b"\x00" + b"\xc0", 1),  # cut short
    (b"\x40" + b"a" * 64 + b"\x00", 0),             # label type 01 (a 64-octet label)
    (b"\x80\x00", 0),                               # label type 10
    (b"".join(bytes([63]) + b"a" * 63 for _ in range(4)) + b"\x00", 0),  # 257 octets
])
def test_decode_malformed(packet, at):
    with pytest.raises(codec.Malformed):
        codec.name_from_wire(packet, at)


def test_decode_length_bound_counts_through_pointers():
    long_label = bytes([63]) + b"a" * 63
    base = long_label * 3 + b"\x00"                          # 193 octets: fine
    fits = bytes([60]) + b"b" * 60 + pointer(0)              # 61 + 193 = 254
    over = bytes([62]) + b"b" * 62 + pointer(0)              # 63 + 193 = 256
    packet = base + fits + over
    assert len(codec.name_from_wire(packet, len(base))[0].wire) == 254
    with pytest.raises(codec.Malformed):
        codec.name_from_wire(packet, len(base) + len(fits))


def test_pointer_chain_is_bounded():
    packet, starts = bytearray(b"\x01a\x00"), [0]  # starts[k]: a name read through k pointers
    for _ in range(codec.MAX_POINTERS + 1):
        starts.append(len(packet))
        packet += pointer(starts[-2])
    chain = bytes(packet)
    assert codec.name_from_wire(chain, starts[codec.MAX_POINTERS]) == (N("a"), 2)
    with pytest.raises(codec.Malformed):
        codec.name_from_wire(chain, starts[codec.MAX_POINTERS + 1])


def test_names_compare_ascii_case_insensitively_only():
    assert N("MX.Example.TEST") == N("mx.example.test") and hash(N("MX.TEST")) == hash(N("mx.test"))
    assert {N("A.test"): 1}[N("a.TEST")] == 1
    assert N("mx.test") != N("mx.test.test") and N("ab.test") != N("a.btest")
    assert codec.Name([b"\xc9"]) != codec.Name([b"\xe9"])  # Latin-1 E/e acute: not folded, as DNS
    assert codec.Name([b"@"]) != codec.Name([b"`"])         # 0x40/0x60 are not letters
    assert N("mx.test") != "mx.test" and codec.Name([]).is_root() and not N("a").is_root()


def test_text_escapes_odd_bytes_as_dnspython_did():
    name = codec.Name([b"a b", b"x.y", b"\\", b"\xff\x00", b'"();@$', b"ok-1_"])
    assert name.text() == b'a\\032b.x\\.y.\\\\.\\255\\000.\\"\\(\\)\\;\\@\\$.ok-1_'
    assert dns.name.Name(name.labels + (b"",)).to_text(omit_final_dot=True).encode() == name.text()
    assert mx.name_bytes(codec.Name([])) == b"."


# --- decisions ---------------------------------------------------------------------------

def test_query_name():
    assert mx.query_name(b"Example.ORG") == N("example.org")
    assert mx.query_name(b"Example.ORG").labels == (b"Example", b"ORG")  # case kept as given
    assert mx.query_name("b\u00fccher.test".encode()) == N("xn--bcher-kva.test")
    assert mx.query_name("B\u00dcCHER.test.".encode()) == N("xn--bcher-kva.test")
    assert mx.query_name("b\u00fccher\u3002test".encode()) == N("xn--bcher-kva.test")  # an IDNA dot
    assert mx.query_name(b"exa\\109ple.org") is None  # no escapes smuggled in
    for bad in (b"", b".", b"@", b"a..b", b"x" * 64 + b".test", b"\xff\xfe", "\u00fc..test".encode(),
                "\u00fc\\.test".encode(), "\u00fc".encode() * 60 + b".test"):
        assert mx.query_name(bad) is None, bad


@pytest.mark.parametrize("host, wire_name", [
    ("stra\u00dfe.de", "xn--strae-oqa.de"),               # IDNA 2008 keeps sharp s (2003: strasse.de)
    ("\u03c3\u03c2.test", "xn--3xab.test"),               # final sigma kept (2003: two sigmas)
    ("\u0915\u094d\u200d\u0937.test", "xn--11b2ezcw70k.test"),  # ZWJ after a virama: CONTEXTJ allows it
])
def test_query_name_is_idna_2008(host, wire_name):
    assert mx.query_name(host.encode()) == N(wire_name)
    assert hostname.to_ascii(host) == wire_name


def test_query_name_refuses_what_idna_2008_refuses():
    assert mx.query_name("a\u200db.test".encode()) is None  # a ZWJ not after a virama (CONTEXTJ)
    with pytest.raises(hostname.InvalidName) as caught:
        hostname.to_ascii("a\u200db.test")
    assert "not a valid internationalised host name" in str(caught.value)
    assert hostname.to_ascii("mx.Example.test.") == "mx.Example.test."  # ASCII: as it is


def test_order_mx_by_preference_keeping_best_of_duplicates():
    pairs = [(20, N("b.test")), (10, N("a.test")), (30, N("c.test")), (5, N("b.test"))]
    assert mx.order_mx(pairs) == [(5, N("b.test")), (10, N("a.test")), (30, N("c.test"))]


def test_order_mx_ties_are_random_and_both_orders_happen():
    pairs = [(10, N("a.test")), (10, N("b.test")), (20, N("c.test"))]
    seen = set()
    for _ in range(200):
        ordered = mx.order_mx(pairs)
        assert ordered[2] == (20, N("c.test"))
        seen.add(tuple(n.text() for _, n in ordered[:2]))
    assert seen == {(b"a.test", b"b.test"), (b"b.test", b"a.test")}


def test_order_mx_tie_break_comes_from_the_entropy_source():
    pairs = [(10, N("a.test")), (10, N("b.test"))]
    high_first = iter([b"\xff" * 8, b"\x00" * 8])
    assert mx.order_mx(pairs, lambda n: next(high_first))[0][1] == N("b.test")


def test_null_mx():
    assert mx.is_null_mx([(0, N("."))])
    assert not mx.is_null_mx([(0, N(".")), (10, N("a.test"))])
    assert not mx.is_null_mx([(0, N("a.test"))])


def test_share_addresses_ipv6_first_and_bounded():
    v6 = ["2001:db8::%x" % i for i in range(20)]
    v4 = ["192.0.2.%d" % i for i in range(20)]
    shared = mx.share_addresses(v6, v4)
    assert len(shared) == mx.MAX_ADDRESSES
    assert [f for _, f in shared] == [AF_INET6] * 8 + [AF_INET] * 8
    assert mx.share_addresses(v6[:2], v4) == [(ip, AF_INET6) for ip in v6[:2]] + [(ip, AF_INET) for ip in v4[:14]]
    assert mx.share_addresses([], v4[:1]) == [("192.0.2.0", AF_INET)]


def ok(*records):
    return exchange.Result(exchange.OK, list(records))


SOFT, NX, NODATA = exchange.Result(exchange.SOFT), exchange.Result(exchange.NXDOMAIN), exchange.Result(exchange.OK, [])


def a(name, ip):
    return (N(name), codec.TYPE_A, ip)


def aaaa(name, ip):
    return (N(name), codec.TYPE_AAAA, ip)


def test_mx_list_targets_orders_groups_and_keeps_literal_preference():
    ordered = [(10, N("b.test")), (10, N("a.test")), (20, N("127.0.0.7"))]
    results = {N("a.test"): (ok(a("a.test", "192.0.2.1")), ok(aaaa("a.test", "2001:db8::1"))),
               N("b.test"): (ok(a("b.test", "192.0.2.2")), NODATA)}
    targets = mx.mx_list_targets(ordered, results)
    assert [(t.ip, t.pref, t.name) for t in targets] == [
        ("192.0.2.2", 10, b"b.test"), ("2001:db8::1", 10, b"a.test"), ("192.0.2.1", 10, b"a.test"),
        ("127.0.0.7", 20, b"127.0.0.7")]


def test_mx_list_targets_failures_as_stock():
    ordered = [(10, N("a.test")), (20, N("b.test"))]
    # one target soft, another fine: the fine one is used
    targets = mx.mx_list_targets(ordered, {N("a.test"): (SOFT, SOFT),
                                             N("b.test"): (ok(a("b.test", "192.0.2.2")), NX)})
    assert [t.ip for t in targets] == ["192.0.2.2"]
    with pytest.raises(failures.DnsSoft):  # nothing found, something soft: Z
        mx.mx_list_targets(ordered, {N("a.test"): (NX, SOFT), N("b.test"): (NX, NX)})
    with pytest.raises(failures.NoAddress) as caught:  # nothing found, all hard: the stock D #5.4.4
        mx.mx_list_targets(ordered, {N("a.test"): (NX, NX), N("b.test"): (NODATA, NODATA)})
    assert caught.value.letter == failures.D and b"#5.4.4" in caught.value.text()


def test_one_name_targets():
    targets = mx.one_name_targets(N("relay.test"), b"relay.test", 2525,
                                    (ok(a("relay.test", "192.0.2.3")), ok(aaaa("relay.test", "::1"))))
    assert [(t.ip, t.port, t.pref, t.name) for t in targets] == [("::1", 2525, 0, b"relay.test"),
                                                                 ("192.0.2.3", 2525, 0, b"relay.test")]
    with pytest.raises(failures.DnsSoft):
        mx.one_name_targets(N("r.test"), b"r.test", 25, (NODATA, SOFT))
    with pytest.raises(failures.DnsHard) as caught:
        mx.one_name_targets(N("r.test"), b"r.test", 25, (NX, NODATA))
    assert caught.value.text() == b"Sorry, I couldn't find any host named r.test. (#5.1.2)\n"


def test_failure_texts():
    assert failures.DnsSoft().text() == b"Sorry, I couldn't find any host by that name. (#4.1.2)\n"
    assert failures.DnsHard(b"nx test").text() == b"Sorry, I couldn't find any host named nx?test. (#5.1.2)\n"
    null = failures.NullMX(b"null.test")
    assert null.letter == failures.D and b"null.test does not accept mail" in null.text()


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_deadlines_per_stage_or_overall_cap():
    clock = FakeClock()
    per_stage = exchange.Deadlines(5, clock)
    assert per_stage.next_stage() == 105.0
    clock.now = 103.0
    assert per_stage.next_stage() == 108.0  # each stage gets its own timeoutdns
    capped = exchange.Deadlines(0, clock)
    clock.now = 150.0
    assert capped.next_stage() == 103.0 + exchange.OVERALL_CAP  # one cap for all stages
    assert exchange.Deadlines(None, clock).next_stage() == 150.0 + exchange.OVERALL_CAP


def test_retry_wait_doubles_per_round_of_servers():
    assert [exchange.retry_wait(n, 1) for n in range(1, 6)] == [1, 2, 4, 4, 4]
    assert [exchange.retry_wait(n, 3) for n in range(1, 8)] == [1, 1, 1, 2, 2, 2, 4]


# --- ipme, prefme ------------------------------------------------------------------------

def t(ip, pref, family=AF_INET):
    return Target(ip, family, 25, pref, b"mx")


def test_prefme_keeps_only_strictly_better_mxes():
    me = {"0.0.0.0", "::", "127.0.0.1"}
    targets = [t("192.0.2.1", 10), t("127.0.0.1", 20), t("192.0.2.3", 20), t("192.0.2.4", 30)]
    assert candidates.apply_prefme(targets, me, routed=False) == targets[:1]
    assert candidates.apply_prefme(targets, {"0.0.0.0"}, routed=False) == targets


def test_prefme_best_mx_is_me_bounces_as_stock():
    with pytest.raises(failures.AmbiguousMX) as caught:
        candidates.apply_prefme([t("127.0.0.1", 10), t("192.0.2.2", 20)], {"127.0.0.1"}, routed=False)
    assert caught.value.letter == failures.D and caught.value.text().endswith(b"(#5.4.6)\n")
    assert b"\n" in caught.value.text()[:-1]  # stock's embedded LF, one report


def test_prefme_routed_skips_the_rule_and_v4_mapped_counts():
    mine = [t("127.0.0.1", 0)]
    assert candidates.apply_prefme(mine, {"127.0.0.1"}, routed=True) == mine
    with pytest.raises(failures.AmbiguousMX):
        candidates.apply_prefme([t("::ffff:127.0.0.1", 0, AF_INET6)], {"127.0.0.1"}, routed=False)


def test_ipme_from_control():
    found = ipme.from_control([(1, b"127.0.0.2"), (3, b" 2001:DB8::1 ")])
    assert found == {"0.0.0.0", "::", "127.0.0.2", "2001:db8::1"}
    with pytest.raises(failures.ControlInvalid) as caught:
        ipme.from_control([(1, b"127.0.0.2"), (2, b"me.example")])
    assert b"control/ipme" in caught.value.text() and b"line 2" in caught.value.text()


def test_ipme_from_kernel_has_loopback():
    found = ipme.from_kernel()
    assert "127.0.0.1" in found and "0.0.0.0" in found
    assert "127.0.0.2" not in found  # only exact addresses, as stock
    if os.path.exists("/proc/net/if_inet6") and b"00000000000000000000000000000001" in open(
            "/proc/net/if_inet6", "rb").read():
        assert "::1" in found


# --- control/outgoingip --------------------------------------------------------------------

@pytest.fixture
def controldir(tmp_path, monkeypatch):
    (tmp_path / "control").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path / "control"


def test_outgoingip_absent_or_empty(controldir):
    assert control.outgoing_addresses() == {}
    (controldir / "outgoingip").write_bytes(b"# nothing\n\n")
    assert control.outgoing_addresses() == {}


def test_outgoingip_one_of_each_family(controldir):
    (controldir / "outgoingip").write_bytes(b"2001:DB8::25\r\n# v4:\n192.0.2.25\n")
    assert control.outgoing_addresses() == {AF_INET6: "2001:db8::25", AF_INET: "192.0.2.25"}


@pytest.mark.parametrize("content, why", [
    (b"192.0.2.1\n192.0.2.2\n", b"line 2: a second address of the same family"),
    (b"mail.example\n", b"line 1 is not an IPv4 or IPv6 address"),
    (b"192.0.2.1/24\n", b"line 1 is not"),
])
def test_outgoingip_malformed_is_a_clear_z(controldir, content, why):
    (controldir / "outgoingip").write_bytes(content)
    with pytest.raises(failures.ControlInvalid) as caught:
        control.outgoing_addresses()
    assert caught.value.letter == failures.Z
    assert caught.value.text().startswith(b"Invalid control file control/outgoingip: ") and why in caught.value.text()


def test_source_unusable_text():
    failure = failures.SourceUnusable("192.0.2.1", "Cannot assign requested address", "control/outgoingip")
    assert failure.letter == failures.Z
    assert failure.text() == (b"Unable to bind the source address 192.0.2.1 named by control/outgoingip: "
                              b"Cannot assign requested address. (#4.3.0)\n")


# --- Happy Eyeballs order ----------------------------------------------------------------

def test_interleave_alternates_families_starting_with_the_first():
    v6 = [t("2001:db8::1", 10, AF_INET6), t("2001:db8::2", 10, AF_INET6), t("2001:db8::3", 10, AF_INET6)]
    v4 = [t("192.0.2.1", 10), t("192.0.2.2", 10)]
    assert connect.interleave(v6 + v4) == [v6[0], v4[0], v6[1], v4[1], v6[2]]
    assert connect.interleave(v4 + v6) == [v4[0], v6[0], v4[1], v6[1], v6[2]]
    assert connect.interleave([]) == []


# --- whatever a server sends ------------------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 65535), st.sampled_from([0, 2, 3]))
def test_any_answer_body_parses_or_is_malformed(body, count, rcode):
    q = question("a.test", codec.TYPE_A)
    head = q.wire[:2] + bytes([0x81, 0x80 | rcode]) + b"\x00\x01" + count.to_bytes(2, "big") + b"\x00" * 4
    packet = head + q.section + body
    assert q.matches(packet)
    try:
        answer = q.read(packet)
    except codec.Malformed:
        return
    assert answer.rcode == rcode
    for owner, rdtype, value in answer.records:
        assert rdtype in (codec.TYPE_A, codec.TYPE_AAAA, codec.TYPE_CNAME, codec.TYPE_MX, codec.TYPE_TLSA,
                          codec.TYPE_TXT)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_matches_never_raises(packet):
    assert question().matches(packet) in (True, False)


def wire_names():
    """Packets likely to hold names: runs of short labels, pointers and zeros."""
    piece = st.one_of(st.binary(min_size=1, max_size=4).map(lambda b: bytes([len(b)]) + b),
                      st.integers(0, 40).map(pointer), st.just(b"\x00"), st.binary(max_size=3))
    return st.lists(piece, max_size=24).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.binary(max_size=300), wire_names()), st.integers(0, 310))
def test_decoder_raises_nothing_but_malformed_and_agrees_with_dnspython(packet, at):
    try:
        name, used = codec.name_from_wire(packet, at)
    except codec.Malformed:
        with pytest.raises(Exception):  # dnspython refuses it too (whatever it raises)
            dns.name.from_wire(packet, at)
        return
    assert 0 < used <= len(packet) - at and len(name.wire) <= codec.MAX_NAME
    assert all(0 < len(label) <= 63 for label in name.labels)
    theirs, their_used = dns.name.from_wire(packet, at)
    assert (name.labels + (b"",), used) == (theirs.labels, their_used)


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=80))
def test_ascii_hosts_read_as_dnspython_read_them(text):
    host = text.encode()
    mine = mx.query_name(host)
    try:
        theirs = D(text)
    except Exception:
        theirs = None
    if b"\\" in host or theirs is None or theirs == dns.name.root:
        assert mine is None
    else:
        assert mine is not None and mine.wire == theirs.to_wire()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=8))
def test_text_matches_dnspython_and_wire_round_trips(labels):
    name = codec.Name(labels)
    assert name.text() == dns.name.Name(name.labels + (b"",)).to_text(omit_final_dot=True).encode()
    assert codec.name_from_wire(name.wire, 0) == (name, len(name.wire))


# --- addresses that cannot be a mail server ----------------------------------------------

@pytest.mark.parametrize("ip, family, why", [
    ("0.0.0.0", AF_INET, "this network"), ("0.1.2.3", AF_INET, "this network"),
    ("224.0.0.1", AF_INET, "multicast"), ("239.255.255.255", AF_INET, "multicast"),
    ("240.0.0.1", AF_INET, "reserved"), ("255.255.255.255", AF_INET, "broadcast"),
    ("::", AF_INET6, "unspecified"), ("ff02::1", AF_INET6, "multicast"),
    ("::ffff:0.0.0.0", AF_INET6, "this network"), ("::ffff:224.0.0.5", AF_INET6, "multicast"),
    ("::ffff:255.255.255.255", AF_INET6, "broadcast"),
])
def test_addresses_that_cannot_be_a_mail_server(ip, family, why):
    assert why in candidates.unusable_reason(ip, family)


@pytest.mark.parametrize("ip, family", [("1.0.0.0", AF_INET), ("223.255.255.255", AF_INET), ("127.0.0.1", AF_INET),
                                         ("::1", AF_INET6), ("2001:db8::1", AF_INET6), ("::ffff:192.0.2.1", AF_INET6),
                                         ("fe80::1", AF_INET6), ("::0.0.0.1", AF_INET6)])
def test_addresses_that_can_be(ip, family):
    assert candidates.unusable_reason(ip, family) is None


def test_unusable_addresses_are_skipped_and_all_unusable_is_like_no_address():
    ordered = [(10, N("bad.test")), (20, N("good.test"))]
    results = {N("bad.test"): (ok(a("bad.test", "0.0.0.0")), ok(aaaa("bad.test", "ff02::1"))),
               N("good.test"): (ok(a("good.test", "192.0.2.1")), NODATA)}
    assert [t.ip for t in mx.mx_list_targets(ordered, results)] == ["192.0.2.1"]
    with pytest.raises(failures.UnusableAddresses) as caught:
        mx.mx_list_targets(ordered[:1], results)
    assert caught.value.letter == failures.D
    assert caught.value.text() == (b"Sorry, no address found can be a mail server's; skipped ff02::1 of bad.test "
                                   b"(multicast ff00::/8); 0.0.0.0 of bad.test (this network 0.0.0.0/8). (#5.4.4)\n")
    soft = {N("bad.test"): results[N("bad.test")], N("good.test"): (SOFT, SOFT)}
    with pytest.raises(failures.DnsSoft):  # another MX may have addresses later: temporary
        mx.mx_list_targets(ordered, soft)
    with pytest.raises(failures.UnusableAddresses) as caught:  # a literal MX target "0.0.0.0."
        mx.mx_list_targets([(10, N("0.0.0.0"))], {})
    with pytest.raises(failures.UnusableAddresses) as caught:  # implicit MX: D
        mx.one_name_targets(N("x.test"), b"x.test", 25, (ok(a("x.test", "240.1.2.3")), NODATA))
    assert caught.value.letter == failures.D
    with pytest.raises(failures.UnusableAddresses) as caught:  # a relay: Z, the admin must fix it
        mx.one_name_targets(N("x.test"), b"x.test", 25, (ok(a("x.test", "0.0.0.0")), NODATA), routed=True)
    assert caught.value.letter == failures.Z and caught.value.text().endswith(b"(#4.3.0)\n")
