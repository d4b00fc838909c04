"""mx_lookup and relay_lookup (qremote.resolver, in this process) against real servers:

- the DNSSEC lab (tests/support/dnssec.py): nsd serving signed zones, unbound validating
  them; the Dane state of each target, the MTA-STS TXT, bogus zones (needs root: skipped
  otherwise);
- the wire stub (tests/support/dnsserver.py) playing a validating resolver (AD on every
  answer), for what the lab cannot script: delays (the round trips), silence.
"""

import pytest

from qremote import failures
from qremote.resolver import exchange, mx
from tests.support.dnsserver import DNSServer, round_trips
from tests.support.dnssec import DnssecLab, tlsa_data
from tests.support.certs import PKI

NEVER = 1e9


def servers(address):
    return exchange.nameservers({"DNSCACHEIP": address})


# --- the real lab --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    pki = PKI(tmp_path_factory.mktemp("dane-pki"))
    certfile, _ = pki.server("mx.secure.test")
    return {"ee": tlsa_data(certfile, 1, 1), "ta": tlsa_data(pki.ca_file, 0, 1)}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, certs):
    why = DnssecLab.skip_reason()
    if why:
        pytest.skip(why)
    with DnssecLab(tmp_path_factory.mktemp("dnssec")) as lab:
        secure = lab.zone("secure.test")
        secure.add("@", "MX", "10 mx", "20 ta", "30 notlsa", "40 lame")
        secure.add("_mta-sts", "TXT", '"v=STSv1; id=20261207;"')
        for n, host in enumerate(["mx", "ta", "notlsa", "lame", "pkix", "relay"]):
            secure.add(host, "A", "127.0.0.%d" % (60 + n))
        secure.add("_25._tcp.mx", "TLSA", "3 1 1 " + certs["ee"], "1 1 1 " + certs["ee"])
        secure.add("_25._tcp.ta", "TLSA", "2 0 1 " + certs["ta"])
        secure.add("_25._tcp.pkix", "TLSA", "0 0 1 " + certs["ta"])
        secure.add("_587._tcp.relay", "TLSA", "3 1 1 " + certs["ee"])
        lab.servfail_tlsa("lame.secure.test")
        implicit = lab.zone("implicit.test")  # no MX: the host itself, and its TLSA
        implicit.add("@", "A", "127.0.0.70").add("_25._tcp", "TLSA", "3 1 1 " + certs["ee"])
        lab.mail_domain("plain.test", "127.0.0.71", ["3 1 1 " + certs["ee"]], signed=False)
        mixed = lab.zone("mixed.test")  # a secure MX answer naming a host in an insecure zone
        mixed.add("@", "MX", "10 mx.plain.test.")
        for kind in ("expired", "wrong-key"):
            lab.mail_domain("%s.test" % kind, "127.0.0.72", bogus=kind)
        lab.mail_domain("mismatch.test", "127.0.0.73", ["3 1 1 " + "00" * 32])
        lab.mail_domain("v6.test", "::1", ["3 0 2 " + "cd" * 64], mx="smtp")
        lab.start()
        yield lab


def test_the_lab_validates_as_a_resolver_should(lab):
    assert lab.query("secure.test", "MX")[:2] == ("NOERROR", True)
    assert lab.query("plain.test", "MX")[:2] == ("NOERROR", False)
    assert lab.query("expired.test", "MX")[0] == "SERVFAIL"
    assert lab.query("_25._tcp.lame.secure.test", "TLSA")[0] == "SERVFAIL"
    assert lab.query("lame.secure.test", "A") == ("NOERROR", True, ["127.0.0.63"])


def test_secure_mx_hosts_with_their_tlsa_records(lab, certs):
    found = mx.mx_lookup(b"secure.test", 10, servers(lab.resolver), dane=True, sts=True)
    assert [(t.ip, t.name) for t in found.targets] == [
        ("127.0.0.60", b"mx.secure.test"), ("127.0.0.61", b"ta.secure.test"),
        ("127.0.0.62", b"notlsa.secure.test"), ("127.0.0.63", b"lame.secure.test")]
    # DANE-EE 3 1 1 usable; the PKIX-EE record beside it is left out (RFC 7672 3.1.3)
    assert found.dane[b"mx.secure.test"] == mx.Dane("secure", [(3, 1, 1, bytes.fromhex(certs["ee"]))],
                                                    b"mx.secure.test")
    assert found.dane[b"ta.secure.test"] == mx.Dane("secure", [(2, 0, 1, bytes.fromhex(certs["ta"]))],
                                                    b"ta.secure.test")
    assert found.dane[b"notlsa.secure.test"] == mx.Dane("none", [], b"notlsa.secure.test")
    lame = found.dane[b"lame.secure.test"]   # its addresses validated, its TLSA SERVFAILs
    assert lame.state == "failed" and "TLSA lookup failed" in lame.why
    assert found.sts == [b"v=STSv1; id=20261207;"]
    trace = {(name, rdtype): (status, ad) for name, rdtype, status, ad, _ in found.answers}
    assert trace[("secure.test", "MX")] == ("ok", True)
    assert trace[("_25._tcp.lame.secure.test", "TLSA")] == ("soft", False)
    assert ("_mta-sts.secure.test", "TXT", "ok", True, ["v=STSv1; id=20261207;"]) in found.answers


def test_only_pkix_records_are_unusable(lab):
    found = mx.relay_lookup(b"pkix.secure.test", 25, 10, servers(lab.resolver))
    assert found.dane == {b"pkix.secure.test": mx.Dane("unusable", [], b"pkix.secure.test")}
    assert found.sts is None


def test_relay_tlsa_is_asked_at_the_relay_port(lab, certs):
    found = mx.relay_lookup(b"relay.secure.test", 587, 10, servers(lab.resolver))
    assert [(t.ip, t.port) for t in found.targets] == [("127.0.0.65", 587)]
    assert found.dane[b"relay.secure.test"].records == [(3, 1, 1, bytes.fromhex(certs["ee"]))]
    assert mx.relay_lookup(b"relay.secure.test", 25, 10, servers(lab.resolver)).dane[
        b"relay.secure.test"].state == "none"


def test_implicit_mx_asks_the_hosts_own_tlsa(lab):
    found = mx.mx_lookup(b"implicit.test", 10, servers(lab.resolver))
    assert [t.ip for t in found.targets] == ["127.0.0.70"]
    assert found.dane[b"implicit.test"].state == "secure" and found.dane[b"implicit.test"].base == b"implicit.test"


def test_insecure_zone_is_insecure_and_its_tlsa_is_never_asked(lab):
    found = mx.mx_lookup(b"plain.test", 10, servers(lab.resolver), sts=True)
    assert [t.ip for t in found.targets] == ["127.0.0.71"]
    assert found.dane == {b"mx.plain.test": mx.Dane("insecure", [], b"mx.plain.test")}
    assert [rdtype for _, rdtype, _, _, _ in found.answers] == ["MX", "TXT", "A", "AAAA"]
    assert found.sts == []  # validated? no, but there is none: the MTA-STS side decides


def test_secure_mx_naming_an_insecure_host_is_insecure(lab):
    found = mx.mx_lookup(b"mixed.test", 10, servers(lab.resolver))
    # the TLSA was asked with the addresses (the MX was validated) but the host is not secure
    assert found.dane[b"mx.plain.test"].state == "insecure"
    assert "TLSA" in [rdtype for _, rdtype, _, _, _ in found.answers]


@pytest.mark.parametrize("domain", ["expired.test", "wrong-key.test"])
def test_bogus_zone_soft_fails_the_mx_lookup(lab, domain):
    with pytest.raises(failures.DnsSoft) as caught:
        mx.mx_lookup(domain.encode(), 10, servers(lab.resolver), sts=True)
    assert caught.value.letter == failures.Z


def test_mail_domain_helper_cases(lab):
    # what the lab's one-line cases give: a mismatching record is still "secure" here (TLS
    # finds the mismatch), an AAAA host, selector 0 with SHA-512
    mismatch = mx.mx_lookup(b"mismatch.test", 10, servers(lab.resolver))
    assert mismatch.dane[b"mx.mismatch.test"].records == [(3, 1, 1, bytes(32))]
    v6 = mx.mx_lookup(b"v6.test", 10, servers(lab.resolver))
    assert [t.ip for t in v6.targets] == ["::1"]
    assert v6.dane[b"smtp.v6.test"] == mx.Dane("secure", [(3, 0, 2, b"\xcd" * 64)], b"smtp.v6.test")


def test_dane_off_asks_no_tlsa_and_says_none(lab):
    found = mx.mx_lookup(b"secure.test", 10, servers(lab.resolver), dane=False)
    assert {name: d.state for name, d in found.dane.items()} == dict.fromkeys(
        [b"mx.secure.test", b"ta.secure.test", b"notlsa.secure.test", b"lame.secure.test"], "none")
    assert "TLSA" not in [rdtype for _, rdtype, _, _, _ in found.answers]
    assert found.sts is None
    assert [t.ip for t in mx.mx_targets(b"secure.test", 10, servers(lab.resolver))] == [
        t.ip for t in found.targets]


# --- round trips and optional queries, against a stub playing a validating resolver -----------

@pytest.fixture
def validating():
    server = DNSServer()
    server.ad = True
    server.add("example.test", "MX", "10 a.mx.test.", "20 b.mx.test.")
    server.add("_mta-sts.example.test", "TXT", '"v=STSv1; id=1;"')
    for name in "ab":
        server.add(name + ".mx.test", "A", "192.0.2.1").add(name + ".mx.test", "AAAA", "2001:db8::1")
        server.add("_25._tcp.%s.mx.test" % name, "TLSA", "3 1 1 " + "ab" * 32)
    yield server
    server.stop()


def test_tlsa_and_txt_add_queries_but_no_round_trip(validating):
    validating.delay = 0.2  # each answer held back: a slow resolver makes the rounds visible
    plain = mx.mx_lookup(b"example.test", 30, servers(validating.address()), dane=False)
    assert len(validating.queries) == 5 and round_trips(validating.events) == 2
    validating.events.clear()
    validating.queries.clear()
    found = mx.mx_lookup(b"example.test", 30, servers(validating.address()), dane=True, sts=True)
    assert sorted(q[1] for q in validating.queries) == ["A", "A", "AAAA", "AAAA", "MX", "TLSA", "TLSA", "TXT"]
    # MX + TXT, then A + AAAA + TLSA of both hosts: no query waited for a TXT or TLSA answer
    assert round_trips(validating.events) == 2
    assert [t.ip for t in found.targets] == [t.ip for t in plain.targets]
    assert {d.state for d in found.dane.values()} == {"secure"} and found.sts == [b"v=STSv1; id=1;"]


def test_an_unanswered_mta_sts_txt_never_holds_the_delivery(validating):
    validating.behave("_mta-sts.example.test", "silent")
    found = mx.mx_lookup(b"example.test", 30, servers(validating.address()), sts=True)
    assert found.sts == "failed" and len(found.targets) == 4
    # stage 1 ended with the MX answer, the TXT stayed in flight through stage 2, which ended
    # with the addresses: it was never sent again (a retransmission comes after
    # exchange.RETRY, 1 s), so no stage waited for it
    assert len(validating.asked("_mta-sts.example.test", "TXT")) == 1
    assert exchange.RETRY >= 1.0


def test_a_txt_answer_after_the_mx_answer_is_still_caught_in_stage_two(validating):
    # MX answered at 0.3 s, the addresses at 0.6 s: the TXT's answer at 0.45 s, between the
    # two, is taken (it stayed in flight on stage 1's socket: no second query)
    validating.delay = 0.3
    validating.late["_mta-sts.example.test"] = 0.45
    found = mx.mx_lookup(b"example.test", 30, servers(validating.address()), sts=True)
    assert found.sts == [b"v=STSv1; id=1;"]
    assert len(validating.asked("_mta-sts.example.test", "TXT")) == 1


def test_an_insecure_hosts_unanswered_tlsa_is_not_waited_for(validating):
    validating.behave("a.mx.test", "no-ad")  # its addresses are not validated
    validating.behave("_25._tcp.a.mx.test", "silent")
    found = mx.mx_lookup(b"example.test", 30, servers(validating.address()))
    assert found.dane[b"a.mx.test"].state == "insecure" and found.dane[b"b.mx.test"].state == "secure"
    assert len(validating.asked("_25._tcp.a.mx.test", "TLSA")) == 1  # sent once, never waited for


def test_a_secure_hosts_unanswered_tlsa_is_waited_for_until_the_deadline_then_failed(validating):
    validating.behave("_25._tcp.a.mx.test", "silent")
    found = mx.mx_lookup(b"example.test", 2, servers(validating.address()))
    assert len(validating.asked("_25._tcp.a.mx.test", "TLSA")) >= 2  # waited: asked again
    assert found.dane[b"a.mx.test"].state == "failed" and found.dane[b"b.mx.test"].state == "secure"
    assert len(found.targets) == 4  # the addresses are there: the caller decides (skip the host)


def test_tlsa_servfail_for_a_secure_host_is_failed(validating):
    validating.behave("_25._tcp.b.mx.test", "servfail")
    found = mx.mx_lookup(b"example.test", 30, servers(validating.address()))
    assert found.dane[b"b.mx.test"].state == "failed" and found.dane[b"a.mx.test"].state == "secure"


def test_mx_targets_is_unchanged_by_a_validating_resolver(validating):
    targets = mx.mx_targets(b"example.test", 30, servers(validating.address()))
    assert len(targets) == 4
    assert sorted(q[1] for q in validating.queries) == ["A", "A", "AAAA", "AAAA", "MX"]
