"""The resolver's DNSSEC side, sans-IO: the AD bit, TLSA and TXT rdata (strict, dnspython
as the oracle), and the decisions of mx_lookup/relay_lookup (Dane states, the stage's
end, MTA-STS TXT values) on fake Results. Rules 12 and 13 of qremote/resolver/__init__.py."""

import dns.flags
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import given, settings, strategies as st

from qremote.resolver import codec, exchange, mx
from tests.unit.test_dns import N, question, response_to

SHA256 = "a" * 64          # hex of 32 bytes
SHA512 = "b" * 128
EE = (3, 1, 1, bytes.fromhex(SHA256))


def with_ad(packet):
    return packet[:3] + bytes([packet[3] | codec.FLAG_AD]) + packet[4:]


# --- the wire ---------------------------------------------------------------------------------

def test_ad_bit_is_read_on_noerror_and_nxdomain():
    q = question("a.test", codec.TYPE_A)
    plain = response_to(q, answers=[("a.test", "A", ["192.0.2.1"])])
    assert not q.read(plain).ad and q.read(with_ad(plain)).ad
    assert q.read(with_ad(response_to(q, rcode=dns.rcode.NXDOMAIN))).ad


def oracle(packet, rdtype):
    """dnspython's reading of the answer's records of rdtype, in our value form."""
    values = []
    for rrset in dns.message.from_wire(packet).answer:
        if rrset.rdtype != rdtype:
            continue
        for rd in rrset:
            values.append((rd.usage, rd.selector, rd.mtype, rd.cert) if rdtype == codec.TYPE_TLSA
                          else b"".join(rd.strings))
    return sorted(values)


def test_tlsa_and_txt_records_agree_with_dnspython():
    q = question("_25._tcp.mx.test", codec.TYPE_TLSA)
    packet = response_to(q, answers=[("_25._tcp.mx.test", "TLSA", ["3 1 1 " + SHA256, "2 0 2 " + SHA512,
                                                                  "3 0 0 3082aabb", "0 1 1 " + SHA256])])
    records = codec.records_for(N("_25._tcp.mx.test"), codec.TYPE_TLSA, q.read(packet).records)
    assert sorted(records) == oracle(packet, codec.TYPE_TLSA) and len(records) == 4
    assert EE in records
    q = question("_mta-sts.example.test", codec.TYPE_TXT)
    packet = response_to(q, answers=[("_mta-sts.example.test", "TXT", ['"v=STSv1; id=20261207;"',
                                                                       '"v=STS" "v1; id=2"', '""'])])
    values = codec.records_for(N("_mta-sts.example.test"), codec.TYPE_TXT, q.read(packet).records)
    assert sorted(values) == oracle(packet, codec.TYPE_TXT)
    assert set(values) == {b"v=STSv1; id=20261207;", b"v=STSv1; id=2", b""}


def test_tlsa_and_txt_follow_a_cname_chain():
    q = question("_25._tcp.mx.test", codec.TYPE_TLSA)
    packet = response_to(q, answers=[("_25._tcp.mx.test", "CNAME", ["_25._tcp.other.test."]),
                                     ("_25._tcp.other.test", "TLSA", ["3 1 1 " + SHA256])])
    assert codec.records_for(N("_25._tcp.mx.test"), codec.TYPE_TLSA, q.read(packet).records) == [EE]


def tlsa_packet(rdata, rdtype=codec.TYPE_TLSA, name="_25._tcp.mx.test"):
    """An answer holding one record of rdtype with raw rdata (whatever it holds)."""
    q = question(name, rdtype)
    head = q.wire[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + q.section
    record = b"\xc0\x0c" + rdtype.to_bytes(2, "big") + b"\x00\x01" + b"\x00\x00\x00\x3c"
    return q, head + record + len(rdata).to_bytes(2, "big") + rdata


@pytest.mark.parametrize("rdtype, rdata", [
    (codec.TYPE_TLSA, b""),                 # no usage
    (codec.TYPE_TLSA, b"\x03\x01"),         # no matching type
    (codec.TYPE_TXT, b""),                  # a TXT needs one string at least
    (codec.TYPE_TXT, b"\x05abc"),           # string longer than the rdata
    (codec.TYPE_TXT, b"\x02ab\x01"),        # second string cut short
])
def test_hostile_tlsa_and_txt_rdata_is_malformed(rdtype, rdata):
    q, packet = tlsa_packet(rdata, rdtype)
    with pytest.raises(codec.Malformed):
        q.read(packet)
    with pytest.raises(Exception):  # dnspython refuses it too
        dns.message.from_wire(packet)


def test_txt_length_octet_cannot_reach_into_the_next_record():
    # rdata of 2 octets whose string says 5: the bytes after it (the next record) are not read
    q, packet = tlsa_packet(b"\x05a", codec.TYPE_TXT)
    second = packet[12 + len(q.section):][:10] + b"\x00\x02\x01b"  # a good TXT record after it
    packet = packet[:7] + b"\x02" + packet[8:] + second
    assert len(packet) > 12 + len(q.section) + 12 + 5  # the bytes the 5 would reach are there
    with pytest.raises(codec.Malformed):
        q.read(packet)


def test_tlsa_digest_of_the_wrong_length_is_read_but_unusable():
    # dnspython refuses the record outright; we read it and call it unusable (RFC 7671 section 4)
    q, packet = tlsa_packet(b"\x03\x01\x01" + b"\xaa" * 31)
    (_, _, value), = q.read(packet).records
    assert value == (3, 1, 1, b"\xaa" * 31) and not mx.usable_tlsa(value)
    with pytest.raises(Exception):
        dns.message.from_wire(packet)
    q, packet = tlsa_packet(b"\x03\x01\x00")  # empty data: read, unusable (dnspython reads it too)
    assert q.read(packet).records[0][2] == (3, 1, 0, b"")


@settings(max_examples=800, deadline=None)
@given(st.sampled_from([codec.TYPE_TLSA, codec.TYPE_TXT]), st.binary(max_size=80))
def test_any_tlsa_or_txt_rdata_is_read_as_dnspython_reads_it_or_is_malformed(rdtype, rdata):
    q, packet = tlsa_packet(rdata, rdtype)
    try:
        records = q.read(packet).records
    except codec.Malformed:
        with pytest.raises(Exception):
            dns.message.from_wire(packet)
        return
    (_, kind, value), = records
    assert kind == rdtype
    if rdtype == codec.TYPE_TLSA and len(value[3]) != {1: 32, 2: 64}.get(value[2], len(value[3])):
        return  # the one deliberate difference (test above)
    assert [value] == oracle(packet, rdtype)


def test_record_texts_for_the_trace():
    assert codec.record_text(codec.TYPE_TLSA, (3, 1, 1, b"\x01\xff")) == "3 1 1 01ff"
    assert codec.record_text(codec.TYPE_MX, (10, N("mx.test"))) == "10 mx.test."
    assert codec.record_text(codec.TYPE_TXT, b"v=STSv1; id=1") == "v=STSv1; id=1"
    assert codec.record_text(codec.TYPE_A, "192.0.2.1") == "192.0.2.1"


# --- the decisions ------------------------------------------------------------------------------

def res(status, records=(), ad=True):
    return exchange.Result(status, list(records), ad)


OK_AD = res(exchange.OK)          # validated NODATA
NX_AD = res(exchange.NXDOMAIN)
SOFT = exchange.Result(exchange.SOFT)
HOST = N("mx.test")
TLSA_OWNER = N("_25._tcp.mx.test")


def a(ip, ad=True):
    return res(exchange.OK, [(HOST, codec.TYPE_A, ip)], ad)


def tlsa(*records, ad=True, owner=TLSA_OWNER):
    return res(exchange.OK, [(owner, codec.TYPE_TLSA, r) for r in records], ad)


def state(result_a, result_aaaa, result_tlsa):
    return mx.dane_state(HOST, 25, result_a, result_aaaa, result_tlsa)


def test_usable_tlsa_records():
    assert mx.usable_tlsa(EE) and mx.usable_tlsa((2, 0, 2, b"\0" * 64)) and mx.usable_tlsa((3, 0, 0, b"\x30"))
    for bad in [(0, 1, 1, b"\0" * 32), (1, 1, 1, b"\0" * 32),   # PKIX-TA, PKIX-EE: unusable for SMTP
                (4, 1, 1, b"\0" * 32), (3, 2, 1, b"\0" * 32), (3, 1, 3, b"\0" * 32),
                (3, 1, 2, b"\0" * 32), (3, 0, 0, b"")]:
        assert not mx.usable_tlsa(bad), bad


def test_dane_states():
    assert state(a("192.0.2.1"), OK_AD, tlsa(EE, (0, 1, 1, b"\0" * 32))) == mx.Dane(
        "secure", [EE], b"mx.test")                                      # the PKIX record left out
    assert state(a("192.0.2.1"), OK_AD, tlsa((1, 1, 1, b"\0" * 32))).state == "unusable"
    assert state(a("192.0.2.1"), OK_AD, OK_AD).state == "none"             # validated NODATA
    assert state(a("192.0.2.1"), NX_AD, NX_AD).state == "none"             # validated NXDOMAIN
    assert state(a("192.0.2.1"), OK_AD, tlsa(EE, ad=False)).state == "insecure"  # TLSA not validated
    assert state(a("192.0.2.1", ad=False), OK_AD, tlsa(EE)).state == "insecure"  # address not validated
    assert state(a("192.0.2.1"), OK_AD, None).state == "insecure"          # MX not validated: not asked
    failed = state(a("192.0.2.1"), OK_AD, SOFT)
    assert failed.state == "failed" and "TLSA lookup failed" in failed.why and failed.base == b"mx.test"
    half = state(a("192.0.2.1"), SOFT, tlsa(EE))                           # AAAA bogus, A validated
    assert half.state == "failed" and "address" in half.why
    assert state(a("192.0.2.1", ad=False), SOFT, SOFT).state == "insecure"
    other = N("_25._tcp.elsewhere.test")                                   # records of another owner
    assert state(a("192.0.2.1"), OK_AD, tlsa(EE, owner=other)).state == "none"


def test_stage_two_ends_without_an_insecure_hosts_tlsa_but_waits_for_a_secure_ones():
    questions, slots = mx.host_questions([HOST, N("b.test")], 25)
    assert [(q.name, q.rdtype) for q in questions] == [
        (HOST, codec.TYPE_A), (HOST, codec.TYPE_AAAA), (TLSA_OWNER, codec.TYPE_TLSA),
        (N("b.test"), codec.TYPE_A), (N("b.test"), codec.TYPE_AAAA), (N("_25._tcp.b.test"), codec.TYPE_TLSA)]
    assert len({q.ident for q in questions}) == 6
    enough = mx.addresses_done(slots)
    insecure = res(exchange.OK, ad=False)
    assert not enough([a("192.0.2.1"), None, None, OK_AD, OK_AD, OK_AD])            # an AAAA pending
    assert not enough([a("192.0.2.1"), OK_AD, None, OK_AD, OK_AD, OK_AD])           # secure host's TLSA
    assert enough([a("192.0.2.1", ad=False), OK_AD, None, OK_AD, OK_AD, OK_AD])     # insecure: not waited
    assert enough([a("192.0.2.1"), SOFT, None, insecure, insecure, None])
    assert enough([a("192.0.2.1"), OK_AD, SOFT, OK_AD, OK_AD, OK_AD])
    questions, slots = mx.host_questions([HOST])                                    # DANE off: no TLSA
    assert len(questions) == 2 and slots == [(0, 1, None)]


def test_stage_two_ids_never_reuse_one_still_in_flight():
    taken = set(range(65536)) - {7, 8, 9}
    questions, slots = mx.host_questions([HOST], 25, first=2, taken=taken)
    assert sorted(q.ident for q in questions) == [7, 8, 9] and slots == [(2, 3, 4)]


def test_a_tlsa_name_too_long_to_exist_is_not_asked():
    long_host = N(".".join(["a" * 63] * 3) + "." + "b" * 60)
    questions, slots = mx.host_questions([long_host], 25)
    assert len(questions) == 2 and slots == [(0, 1, None)]


def test_mta_sts_txt_values():
    owner = N("_mta-sts.example.test")
    found = res(exchange.OK, [(owner, codec.TYPE_TXT, b"v=STSv1; id=1"), (N("x.test"), codec.TYPE_TXT, b"no")])
    assert mx.txt_values(owner, found) == [b"v=STSv1; id=1"]
    assert mx.txt_values(owner, NX_AD) == [] and mx.txt_values(owner, OK_AD) == []
    assert mx.txt_values(owner, SOFT) == "failed"
    assert mx.txt_values(None, SOFT) == []  # a name too long to exist has no record


def test_answer_lines_for_the_trace():
    q = codec.Question(TLSA_OWNER, codec.TYPE_TLSA, 7)
    assert mx.answer_lines([q], [tlsa(EE)]) == [("_25._tcp.mx.test", "TLSA", "ok", True, ["3 1 1 " + SHA256])]
    assert mx.answer_lines([q], [SOFT]) == [("_25._tcp.mx.test", "TLSA", "soft", False, [])]
