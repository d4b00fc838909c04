"""MTA-STS on whole deliveries through the installed chain (doc/mta-sts.html): qmail-remote
asks `_mta-sts.sts.test` TXT beside the MX from the DNS stub ($DNSCACHEIP), fetches the
policy from a real HTTPS host (tests/support/stsserver.py) on 127.0.30.1:443, its name
resolved by the stub and its certificate issued by the test CA (control/mtastsanchors),
and delivers to STARTTLS servers on port 25 of 127.0.30.x. Each delivery is traced
(control/tracedir) and the trace's policy object is checked; the last test runs
qmail-tlsrpt on the day's trace and checks the report against RFC 8460's schema and
counts. Port 25 and 443: root only (skipped otherwise); run in a network namespace."""

import datetime
import json
import os
import subprocess
import threading
import time

import pytest

from tests.support.chain import decode_reports
from tests.support.dnsserver import DNSServer
from tests.support.jsonschema_lite import errors
from tests.support.smtpserver import SMTPServer
from tests.support.stsserver import STSServer
from tests.support.traceschema import check

DOMAIN = "sts.test"
POLICY_HOST = "mta-sts.sts.test"
POLICY_IP = "127.0.30.1"
MSG = b"Subject: sts\n\nhello\n"
SCHEMA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "support", "tlsrpt-schema.json")


def policy(mode="enforce", mx=("mx1.sts.test",), max_age=86400):
    return ("version: STSv1\r\nmode: %s\r\n%smax_age: %d\r\n" % (
        mode, "".join("mx: %s\r\n" % m for m in mx), max_age)).encode()


class Lab:
    def __init__(self, home, pki):
        self.home, self.pki = home, pki
        self.dns = DNSServer()
        self.servers = []
        self.dns.add(POLICY_HOST, "A", POLICY_IP)
        self.txt("one")
        self.sts = STSServer(*pki.server(POLICY_HOST), host=POLICY_IP, port=443)
        self.sts.policy = policy()
        with open(pki.ca_file) as ca:
            home.control("mtastsanchors", ca.read())
        home.control("trustanchors", pki.ca_file + "\n")  # enforce verifies with these, not the system's
        home.control("tlsstrictness", "0\n")               # today: STARTTLS if offered, else cleartext
        self.tracedir = os.path.join(home.path, "trace")
        os.makedirs(self.tracedir)
        home.control("tracedir", self.tracedir + "\n")

    def txt(self, record_id):
        self.dns.records.setdefault("_mta-sts." + DOMAIN, {})["TXT"] = ['"v=STSv1; id=%s;"' % record_id]

    def mx(self, name, ip, pref=10, tls="good"):
        """An MX host: tls "good" (a certificate of the test CA for name), "untrusted",
        or None (no STARTTLS)."""
        cert = {"good": self.pki.server, "untrusted": self.pki.untrusted}[tls](name) if tls else None
        server = SMTPServer(ip, 25, tls_cert=cert)
        self.servers.append(server)
        self.dns.add(DOMAIN, "MX", "%d %s." % (pref, name))
        self.dns.add(name, "A", ip)
        return server

    def deliver(self):
        return self.home.remote(DOMAIN, "s@src.example", "r@sts.test", message=MSG, DNSCACHEIP=self.dns.address())

    def traces(self):
        lines = []
        for name in sorted(os.listdir(self.tracedir)):
            with open(os.path.join(self.tracedir, name), "rb") as f:
                lines += f.read().split(b"\n")[:-1]
        return [check(line) for line in lines]

    def stop(self):
        for server in self.servers + [self.sts, self.dns]:
            server.stop()


@pytest.fixture
def lab(home, pki, installed):
    if os.geteuid() != 0:
        pytest.skip("port 25 and 443 of 127.0.30.x: needs root")
    if not os.path.exists(os.path.join(installed, "tlsc-io")):
        pytest.skip("tlsc-io is not installed")
    try:
        lab = Lab(home, pki)
    except OSError as error:
        pytest.skip("cannot listen on 127.0.30.1:443: %s" % error)
    yield lab
    lab.stop()


def sessions(server):
    return [s for s in server.sessions if s.commands]


STRINGS = ["version: STSv1", "mode: enforce", "mx: mx1.sts.test", "max_age: 86400"]


def test_enforce_matching_mx_with_a_verifying_certificate_is_k_verified(lab):
    mx1 = lab.mx("mx1.sts.test", "127.0.30.11")
    _, raw = lab.deliver()
    assert raw.startswith(b"r\0K127.0.30.11 accepted message. (TLSv1.") and b"verified" in raw, raw
    session, = sessions(mx1)
    assert session.tls and session.sni == "mx1.sts.test" and session.messages
    assert lab.sts.requests == [("GET", "/.well-known/mta-sts.txt", POLICY_HOST, POLICY_HOST)]
    trace, = lab.traces()
    assert trace["policy"] == {"domain": DOMAIN, "decided_by": "mta-sts", "type": "sts", "mode": "enforce",
                               "mx": ["mx1.sts.test"], "strings": STRINGS, "fetch": "fetched"}
    assert trace["tls"]["verified"] is True and trace["tls"]["by"] == "ca+dn*"
    assert ("_mta-sts.sts.test", "TXT") in {(d["name"], d["type"]) for d in trace["dns"]}


def test_enforce_with_no_matching_mx_is_z_naming_the_policy_and_nothing_is_sent(lab):
    other = lab.mx("mx9.sts.test", "127.0.30.19")
    reports, raw = lab.deliver()
    assert reports[-1][0] == "Z" and b"MTA-STS policy of sts.test" in raw, raw
    assert not other.sessions  # never even connected to
    trace, = lab.traces()
    attempt, = trace["attempts"]
    assert (attempt["name"], attempt["failure"]) == ("mx9.sts.test", "validation-failure")
    assert "not an MX of the MTA-STS policy" in attempt["result"]


def test_enforce_delivers_to_the_matching_mx_only(lab):
    other = lab.mx("mx0.sts.test", "127.0.30.10", pref=5)  # preferred, but not in the policy
    mx1 = lab.mx("mx1.sts.test", "127.0.30.11", pref=10)
    _, raw = lab.deliver()
    assert raw.startswith(b"r\0K127.0.30.11 accepted message. (TLSv1."), raw
    assert not other.sessions and len(sessions(mx1)) == 1
    trace, = lab.traces()
    assert [(a["name"], a["failure"]) for a in trace["attempts"]] == [
        ("mx0.sts.test", "validation-failure"), ("mx1.sts.test", None)]
    assert trace["policy"]["decided_by"] == "mta-sts"


def test_enforce_and_no_starttls_is_z(lab):
    mx1 = lab.mx("mx1.sts.test", "127.0.30.11", tls=None)
    reports, raw = lab.deliver()
    assert reports[-1][0] == "Z" and b"MTA-STS policy of sts.test" in raw, raw
    assert all(not s.messages for s in mx1.sessions)
    trace, = lab.traces()
    assert trace["attempts"][-1]["failure"] == "starttls-not-supported"


def test_enforce_and_a_certificate_that_does_not_verify_is_z(lab):
    mx1 = lab.mx("mx1.sts.test", "127.0.30.11", tls="untrusted")
    reports, raw = lab.deliver()
    assert reports[-1][0] == "Z", raw
    assert all(not s.messages for s in mx1.sessions)
    trace, = lab.traces()
    assert trace["attempts"][0]["failure"] == "certificate-not-trusted"


def test_testing_delivers_as_today_and_says_what_enforce_would_have_done(lab):
    lab.sts.policy = policy("testing", mx=("mx2.sts.test",))
    mx1 = lab.mx("mx1.sts.test", "127.0.30.11", pref=10, tls=None)  # not listed, no STARTTLS
    lab.mx("mx2.sts.test", "127.0.30.12", pref=20)
    _, raw = lab.deliver()
    assert raw.startswith(b"r\0K127.0.30.11 accepted message.\n"), raw  # cleartext, as today
    assert sessions(mx1)[0].messages
    trace, = lab.traces()
    assert trace["policy"]["mode"] == "testing" and trace["policy"]["type"] == "sts"
    assert trace["policy"]["would"] == ["mx1.sts.test: skipped", "mx2.sts.test: tls required"]
    assert trace["policy"]["decided_by"] == "tlsstrictness"
    # tlsstrictness 0 asked for STARTTLS and went on without: RFC 8460's word for it is kept
    assert trace["attempts"][0]["failure"] == "starttls-not-supported"


def test_none_is_as_today(lab):
    lab.sts.policy = policy("none", mx=("mx2.sts.test",))
    lab.mx("mx1.sts.test", "127.0.30.11", tls=None)
    _, raw = lab.deliver()
    assert raw.startswith(b"r\0K127.0.30.11 accepted message.\n"), raw
    trace, = lab.traces()
    assert trace["policy"]["type"] == "no-policy-found" and trace["policy"]["fetch"] == "fetched"


def test_cached_then_max_age_expiry_fetches_again(lab):
    lab.mx("mx1.sts.test", "127.0.30.11")
    lab.deliver()
    lab.deliver()
    assert lab.sts.count() == 1
    assert [t["policy"]["fetch"] for t in lab.traces()] == ["fetched", "cached"]
    lab.sts.policy = policy(max_age=2)
    lab.txt("two")
    lab.deliver()  # the id changed: fetched again (max_age 2 now)
    assert lab.sts.count() == 2
    time.sleep(2.1)
    _, raw = lab.deliver()  # expired: fetched again
    assert raw.startswith(b"r\0K127.0.30.11 accepted message. (TLSv1."), raw
    assert lab.sts.count() == 3
    assert [t["policy"]["fetch"] for t in lab.traces()] == ["fetched", "cached", "fetched", "fetched"]


@pytest.mark.parametrize("breakage,failure,fetch", [
    ("500", "sts-policy-fetch-error", "fetch failed: HTTP 500"),
    ("redirect", "sts-policy-fetch-error", "fetch failed: HTTP 301: redirect refused"),
    ("64k", "sts-policy-fetch-error", "fetch failed: policy larger than 64 KiB"),
    ("invalid", "sts-policy-invalid", "fetch failed: invalid policy: mode missing"),
    ("untrusted", "sts-webpki-invalid", None),
])
def test_a_failed_fetch_without_a_cached_policy_delivers_as_today_and_is_traced(lab, pki, breakage, failure, fetch):
    if breakage == "500":
        lab.sts.status = 500
    elif breakage == "redirect":
        lab.sts.status = 301
        lab.sts.headers = {"Content-Type": "text/plain", "Location": "https://elsewhere.test/"}
    elif breakage == "64k":
        lab.sts.policy += b"x: " + b"y" * 65536 + b"\r\n"
    elif breakage == "invalid":
        lab.sts.policy = b"version: STSv1\r\nmx: mx1.sts.test\r\nmax_age: 86400\r\n"
    else:
        lab.sts.stop()
        lab.sts = STSServer(*pki.untrusted(POLICY_HOST), host=POLICY_IP, port=443)
    lab.mx("mx9.sts.test", "127.0.30.19", tls=None)  # not in the policy, no STARTTLS: today's delivery
    _, raw = lab.deliver()
    assert raw.startswith(b"r\0K127.0.30.19 accepted message.\n"), raw
    # one request, no redirect followed; none past a certificate that does not verify
    assert lab.sts.count() == (0 if breakage == "untrusted" else 1)
    trace, = lab.traces()
    assert trace["policy"]["type"] == "sts" and trace["policy"]["failure"] == failure, trace["policy"]
    if fetch:
        assert trace["policy"]["fetch"] == fetch
    else:
        assert trace["policy"]["fetch"].startswith("fetch failed: certificate")


def test_ten_concurrent_deliveries_ask_the_policy_host_once(lab):
    mx1 = lab.mx("mx1.sts.test", "127.0.30.11")
    lab.sts.delay = 0.5
    outputs = [None] * 10

    def one(n):
        outputs[n] = lab.deliver()[1]
    threads = [threading.Thread(target=one, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(out and out.startswith(b"r\0K127.0.30.11 accepted message. (TLSv1.") for out in outputs), outputs
    assert lab.sts.count() == 1 and len(sessions(mx1)) == 10
    assert sorted(t["policy"]["fetch"] for t in lab.traces()) == ["cached"] * 9 + ["fetched"]


# --- TLS-RPT from these deliveries' real trace ------------------------------------------------

def test_tlsrpt_report_from_real_deliveries(lab, tmp_path):
    good = lab.mx("mx1.sts.test", "127.0.30.11")
    lab.deliver()
    lab.deliver()                                                  # 2 successes (verified TLS)
    good.stop()
    lab.servers.remove(good)
    lab.dns.records["mx1.sts.test"]["A"] = ["127.0.30.13"]
    lab.servers.append(SMTPServer("127.0.30.13", 25))              # mx1 without STARTTLS now
    lab.deliver()                                                  # 1 failure: starttls-not-supported
    lab.dns.records["mx1.sts.test"]["A"] = ["127.0.30.14"]
    lab.servers.append(SMTPServer("127.0.30.14", 25, tls_cert=lab.pki.untrusted("mx1.sts.test")))
    lab.deliver()                                                  # 1 failure: certificate-not-trusted
    lab.dns.records[DOMAIN]["MX"] = ["10 mx9.sts.test."]
    lab.dns.add("mx9.sts.test", "A", "127.0.30.19")
    lab.deliver()                                                  # 1 failure: validation-failure (not listed)
    assert len(lab.traces()) == 5
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    out = tmp_path / "reports"
    out.mkdir()
    done = subprocess.run([os.path.join(lab.home.bindir, "qmail-tlsrpt"), "--out", str(out), "--day", today],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=lab.home.env(), timeout=60)
    assert done.returncode == 0, done.stdout
    name, = os.listdir(out)
    assert DOMAIN in name
    path = out / name
    data = path.read_bytes()
    if name.endswith(".gz"):
        import gzip
        data = gzip.decompress(data)
    report = json.loads(data)
    with open(SCHEMA) as f:
        assert errors(json.load(f), report) == []
    policy, = report["policies"]
    assert policy["policy"]["policy-type"] == "sts" and policy["policy"]["policy-domain"] == DOMAIN
    assert policy["policy"]["policy-string"] == STRINGS
    assert policy["policy"]["mx-host"] == ["mx1.sts.test"]
    assert policy["summary"] == {"total-successful-session-count": 2, "total-failure-session-count": 3}
    details = {(d["result-type"], d.get("receiving-mx-hostname"), d.get("receiving-ip")): d["failed-session-count"]
               for d in policy["failure-details"]}
    assert details == {("starttls-not-supported", "mx1.sts.test", "127.0.30.13"): 1,
                       ("certificate-not-trusted", "mx1.sts.test", "127.0.30.14"): 1,
                       ("validation-failure", "mx9.sts.test", "127.0.30.19"): 1}
