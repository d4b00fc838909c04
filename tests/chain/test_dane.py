"""DANE (RFC 7672) end to end: whole deliveries through the installed chain, qremote's
resolver pointed at the DNSSEC lab (tests/support/dnssec.py: nsd serving signed zones,
unbound validating them; $DNSCACHEIP), SMTP servers with STARTTLS on 127.0.0.x port 25.

Needs root (port 25 and 53) and a private network namespace (tests/run's advice):
skipped otherwise. One test per case of issue 11's DANE list; each names in a comment
what it proves and how it fails with DANE turned off in the code path it tests.
"""

import os

import pytest

from tests.support.dnssec import DnssecLab, tlsa_data
from tests.support.smtpserver import SMTPServer

SENDER, RCPT = "a@me.example", "b@%s"


def der_digest(pem_path, selector):
    return tlsa_data(pem_path, selector, 1)


@pytest.fixture(scope="module")
def certs(pki, tmp_path_factory):
    """Certificates by MX host name: (certfile, keyfile); "ta" sends its chain (leaf, CA)."""
    made = {}
    for host in ("mx.ee.test", "mx.mismatch.test", "mx.notls.test", "mx.notlsa.test", "mx.plain.test",
                 "mx.pkix.test", "mx1.two.test", "mx2.two.test", "mx.lame.test", "relay.ee.test", "mx.off.test"):
        made[host] = pki.server(host)
    leaf, key = pki.server("mx.ta.test")
    chain = str(tmp_path_factory.mktemp("dane-chain") / "ta.chain")
    with open(chain, "wb") as out:
        for path in (leaf, pki.ca_file):
            with open(path, "rb") as source:
                out.write(source.read())
    made["mx.ta.test"] = (chain, key)
    made["other"] = pki.server("other.test")
    return made


@pytest.fixture(scope="module")
def lab(tmp_path_factory, certs, pki):
    why = DnssecLab.skip_reason()
    if why:
        pytest.skip(why)
    ee = lambda host: "3 1 1 " + der_digest(certs[host][0], 1)  # noqa: E731
    with DnssecLab(tmp_path_factory.mktemp("dane-lab")) as lab:
        lab.mail_domain("ee.test", "127.0.0.31", [ee("mx.ee.test")])
        lab.mail_domain("ta.test", "127.0.0.32", ["2 0 1 " + tlsa_data(pki.ca_file, 0, 1)])
        lab.mail_domain("mismatch.test", "127.0.0.33", ["3 1 1 " + "00" * 32])
        lab.mail_domain("notls.test", "127.0.0.34", [ee("mx.notls.test")])
        lab.mail_domain("notlsa.test", "127.0.0.35")
        # insecure: its (mismatching) TLSA must never be asked, let alone used
        lab.mail_domain("plain.test", "127.0.0.36", ["3 1 1 " + "00" * 32], signed=False)
        lab.mail_domain("bogus.test", "127.0.0.37", bogus="expired")
        lab.mail_domain("lame.test", "127.0.0.38")
        lab.servfail_tlsa("mx.lame.test")
        # PKIX-TA and PKIX-EE only: unusable for SMTP (RFC 7672 3.1.3), so 2.2: mandatory TLS
        lab.mail_domain("pkix.test", "127.0.0.39", ["1 1 1 " + der_digest(certs["mx.pkix.test"][0], 1),
                                                    "0 0 1 " + tlsa_data(pki.ca_file, 0, 1)])
        two = lab.zone("two.test")
        two.add("@", "MX", "10 mx1", "20 mx2")
        two.add("mx1", "A", "127.0.0.40").add("mx2", "A", "127.0.0.41")
        # each host's own records: mx1's match a third certificate ("other"), not its own
        two.add("_25._tcp.mx1", "TLSA", ee("other"))
        two.add("_25._tcp.mx2", "TLSA", ee("mx2.two.test"))
        lab.zone("ee.test").add("relay", "A", "127.0.0.42").add(
            "_587._tcp.relay", "TLSA", ee("relay.ee.test"))
        lab.mail_domain("off.test", "127.0.0.43", ["3 1 1 " + "00" * 32])
        lab.start()
        yield lab


@pytest.fixture
def servers():
    started = []

    def start(ip, cert=None, port=25):
        s = SMTPServer(ip, port, tls_cert=cert)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


@pytest.fixture
def deliver(home, lab):
    def run(domain, **env):
        reports, _ = home.remote(domain, SENDER, RCPT % domain, DNSCACHEIP=lab.resolver, **env)
        return reports
    return run


def final(reports):
    letter, text = reports[-1]
    if os.environ.get("SHOW_REPORTS"):
        print("\n", reports)
    return letter, text.decode("latin-1")


def mails(server):
    return [c for s in server.sessions for c in s.commands if c.upper().startswith(b"MAIL")]


def test_dane_ee_match_is_delivered_and_the_k_says_so(deliver, servers, certs):
    s = servers("127.0.0.31", certs["mx.ee.test"])
    reports = deliver("ee.test")
    letter, text = final(reports)
    assert letter == "K" and "TLSA validated DANE-EE" in text, reports
    session = s.wait_sessions(1)[0]
    assert session.tls and mails(s)
    assert session.sni == "mx.ee.test"  # SNI = the TLSA base domain (RFC 7672 8.1)


def test_dane_ta_with_the_chain_sent(deliver, servers, certs):
    s = servers("127.0.0.32", certs["mx.ta.test"])
    letter, text = final(deliver("ta.test"))
    assert letter == "K" and "TLSA validated DANE-TA" in text, text
    assert s.wait_sessions(1)[0].tls


def test_dane_ta_with_a_certificate_for_another_name_is_refused(deliver, servers, certs, pki, tmp_path):
    # the chain is good, the name is not mx.ta.test: DANE-TA checks the name (RFC 7672 3.2.3)
    leaf, key = certs["other"]
    chain = tmp_path / "other.chain"
    chain.write_bytes(open(leaf, "rb").read() + open(pki.ca_file, "rb").read())
    s = servers("127.0.0.32", (str(chain), key))
    letter, text = final(deliver("ta.test"))
    assert letter == "Z" and "DANE" in text, text
    assert not mails(s)


def test_mismatch_is_deferred_naming_the_host_and_nothing_is_sent(deliver, servers, certs):
    s = servers("127.0.0.33", certs["mx.mismatch.test"])
    letter, text = final(deliver("mismatch.test"))
    assert letter == "Z", text
    assert "127.0.0.33" in text and "DANE verification failed" in text and "no TLSA record matched" in text, text
    assert not mails(s)


def test_a_secure_host_without_starttls_is_deferred(deliver, servers):
    s = servers("127.0.0.34")  # no STARTTLS offered
    letter, text = final(deliver("notls.test"))
    assert letter == "Z" and "127.0.0.34" in text and "STARTTLS" in text, text
    assert "DANE (the TLSA records of mx.notls.test)" in text, text
    assert not mails(s)


def test_insecure_zone_is_opportunistic_in_cleartext_without_trustanchors(deliver, servers, certs, lab):
    s = servers("127.0.0.36", certs["mx.plain.test"])
    letter, text = final(deliver("plain.test"))
    assert letter == "K", text
    assert mails(s) and not s.sessions[0].tls  # as today: no trustanchors, no STARTTLS


def test_insecure_zone_with_tlsstrictness_0_does_tls_unverified(deliver, servers, certs, home, pki):
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "0\n")
    s = servers("127.0.0.36", certs["mx.plain.test"])
    letter, text = final(deliver("plain.test"))
    assert letter == "K" and "TLS" in text and "TLSA" not in text, text
    assert s.wait_sessions(1)[0].tls


def test_bogus_signatures_defer(deliver, servers, certs):
    s = servers("127.0.0.37", certs["mx.ee.test"])
    letter, text = final(deliver("bogus.test"))
    assert letter == "Z" and "couldn't find any host" in text and "#4.1.2" in text, text  # stock DNS soft failure
    assert not s.sessions


def test_tlsa_servfail_defers_naming_the_host(deliver, servers, certs):
    s = servers("127.0.0.38", certs["mx.lame.test"])
    letter, text = final(deliver("lame.test"))
    assert letter == "Z" and "mx.lame.test" in text, text
    assert "(127.0.0.38: TLSA lookup failed (SERVFAIL or no answer))" in text, text  # said once
    assert not s.sessions  # never connected: it is not DANE-safe to try without its records


def test_validated_no_tlsa_is_the_ordinary_policy(deliver, servers, certs, home, pki):
    s = servers("127.0.0.35", certs["mx.notlsa.test"])
    letter, text = final(deliver("notlsa.test"))
    assert letter == "K" and not s.sessions[0].tls, text  # no trustanchors: cleartext as today
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "2\n")
    letter, text = final(deliver("notlsa.test"))
    assert letter == "K" and "verified" in text and "TLSA" not in text, text


def test_only_unusable_records_mean_mandatory_unauthenticated_tls(deliver, servers, certs):
    # RFC 7672 2.2: a validated TLSA RRset with no usable record still makes TLS mandatory,
    # with no authentication (the PKIX-EE record would match: it is not used)
    s = servers("127.0.0.39", certs["mx.pkix.test"])
    letter, text = final(deliver("pkix.test"))
    assert letter == "K" and "TLSv1.3 unverified" in text and "TLSA" not in text, text
    assert s.wait_sessions(1)[0].tls


def test_only_unusable_records_and_no_starttls_defer(deliver, servers):
    s = servers("127.0.0.39")
    letter, text = final(deliver("pkix.test"))
    assert letter == "Z" and "STARTTLS" in text and "DANE (the TLSA records of mx.pkix.test)" in text, text
    assert not mails(s)


def test_first_mx_fails_dane_the_second_matches_with_its_own_records(deliver, servers, certs):
    # across the resume (tlsc-io failed with mx1, qmail-remote again with the plan): mx2 is
    # checked with its own records, which mx1's would not match
    first = servers("127.0.0.40", certs["mx1.two.test"])   # its TLSA is of "other"
    second = servers("127.0.0.41", certs["mx2.two.test"])
    letter, text = final(deliver("two.test"))
    assert letter == "K" and "TLSA validated DANE-EE" in text, text
    assert not mails(first) and mails(second)
    assert second.sessions[0].sni == "mx2.two.test"  # the resumed attempt: its own name


def test_the_second_mx_is_still_checked_after_the_first_fails(deliver, servers, certs):
    # mx2 serves the certificate mx1's records name: not its own records: Z. Delivered if the
    # resume dropped DANE for mx2, or checked mx2 against mx1's records
    first = servers("127.0.0.40", certs["mx1.two.test"])
    second = servers("127.0.0.41", certs["other"])
    letter, text = final(deliver("two.test"))
    assert letter == "Z" and "DANE verification failed" in text, text
    assert not mails(first) and not mails(second) and len(second.sessions) == 1


def test_relay_route_uses_the_tlsa_at_the_route_port(deliver, servers, certs, home):
    home.route("routed.test:relay.ee.test:587")
    s = servers("127.0.0.42", certs["relay.ee.test"], port=587)
    letter, text = final(deliver("routed.test"))
    assert letter == "K" and "TLSA validated DANE-EE" in text, text
    assert s.sessions[0].sni == "relay.ee.test"


def test_relay_route_tlsa_mismatch_defers(deliver, servers, certs, home):
    home.route("routed.test:relay.ee.test:587")
    s = servers("127.0.0.42", certs["other"], port=587)
    letter, text = final(deliver("routed.test"))
    assert letter == "Z" and "DANE verification failed" in text, text
    assert not mails(s)


def test_tlsdestinations_slash_turns_dane_off_for_the_destination(deliver, servers, certs, home):
    home.control("tlsdestinations", "/mx.mismatch.test:\n")
    s = servers("127.0.0.33", certs["mx.mismatch.test"])
    letter, text = final(deliver("mismatch.test"))
    # the line's rule: TLS mandatory, any certificate; no TLSA check
    assert letter == "K" and "TLS" in text and "TLSA" not in text, text
    assert s.wait_sessions(1)[0].tls and mails(s)


def test_control_dane_0_turns_dane_off(deliver, servers, certs, home):
    home.control("dane", "0\n")
    s = servers("127.0.0.33", certs["mx.mismatch.test"])
    letter, text = final(deliver("mismatch.test"))
    assert letter == "K" and mails(s) and not s.sessions[0].tls, text  # as today: no trustanchors


def test_dane_wins_over_tlsstrictness_0_no_cleartext_fallback(deliver, servers, certs, home, pki):
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "0\n")
    s = servers("127.0.0.43", certs["mx.off.test"])
    letter, text = final(deliver("off.test"))
    assert letter == "Z" and "DANE verification failed" in text, text
    assert not mails(s) and len(s.sessions) == 1  # no second connection in cleartext
