"""TLS-RPT's sans-IO core (lib/qremote/tlsrpt.py): reports from a synthetic trace, checked
against RFC 8460's report format (tests/support/tlsrpt-schema.json) and exact counts; the
_smtp._tls record grammar; the mail's form."""

import datetime
import email
import email.policy
import gzip
import json
import os

import pytest

from qremote import tlsrpt
from tests.support import jsonschema_lite, tlsrpt_trace as trace

SCHEMA = json.load(open(os.path.join(os.path.dirname(__file__), "..", "support", "tlsrpt-schema.json")))


def lines_of(directory):
    found = []
    for name in ("2026-12-05.jsonl", "2026-12-06.jsonl", "2026-12-07.jsonl"):
        with open(os.path.join(directory, name), "rb") as f:
            found.extend(f.read().split(b"\n"))
    return found


@pytest.fixture
def reports(tmp_path):
    sessions, malformed = tlsrpt.read_sessions(lines_of(trace.write(tmp_path)), trace.DAY)
    assert malformed == len(trace.MALFORMED)
    return tlsrpt.build_reports(sessions, trace.DAY, "Sender Org", "postmaster@me.test", "me.test")


def test_every_report_follows_rfc_8460s_format(reports):
    assert sorted(reports) == ["dane.test", "example.com", "plain.test"]  # not routed.test
    for report in reports.values():
        assert jsonschema_lite.errors(SCHEMA, report) == []
        assert json.loads(gzip.decompress(tlsrpt.compress(report))) == report


def test_the_validator_can_fail(reports):
    report = json.loads(json.dumps(reports["example.com"]))
    report["policies"][0]["failure-details"][0]["result-type"] = "certificate-revoked"
    del report["policies"][0]["summary"]["total-failure-session-count"]
    report["date-range"]["start-datetime"] = "2026-12-06 00:00"
    assert len(jsonschema_lite.errors(SCHEMA, report)) == 3


def test_exact_counts(reports):
    for domain, expected in trace.EXPECTED.items():
        found = {}
        for entry in reports[domain]["policies"]:
            policy = entry["policy"]
            assert policy["policy-domain"] == domain
            details = {(d["result-type"], d["receiving-mx-hostname"], d["receiving-ip"]): d["failed-session-count"]
                       for d in entry.get("failure-details", [])}
            found[(policy["policy-type"], tuple(policy.get("policy-string", ())))] = (
                entry["summary"]["total-successful-session-count"], entry["summary"]["total-failure-session-count"],
                details)
        assert found == expected, domain


def test_fields_of_the_report(reports):
    report = reports["example.com"]
    assert report["organization-name"] == "Sender Org" and report["contact-info"] == "postmaster@me.test"
    assert report["date-range"] == {"start-datetime": "2026-12-06T00:00:00Z", "end-datetime": "2026-12-06T23:59:59Z"}
    enforce = report["policies"][0]
    assert enforce["policy"]["mx-host"] == ["*.example.com"]
    expired = [d for d in enforce["failure-details"] if d["result-type"] == "certificate-expired"][0]
    assert expired == {"result-type": "certificate-expired", "sending-mta-ip": "198.51.100.7",
                       "receiving-mx-hostname": "mx2.example.com", "receiving-ip": "2001:db8::2",
                       "failed-session-count": 1, "failure-reason-code": "tls failed: expired"}
    unknown = [d for d in reports["plain.test"]["policies"][0]["failure-details"]
               if d["result-type"] == "validation-failure"][0]
    assert unknown["failure-reason-code"] == "depth: tls failed: depth"


def test_report_id_unique_and_stable():
    day = trace.DAY
    first = tlsrpt.report_id("example.com", day, "me.test")
    assert first == tlsrpt.report_id("example.com", day, "me.test")
    others = {tlsrpt.report_id("example.org", day, "me.test"), tlsrpt.report_id("example.com", day, "you.test"),
              tlsrpt.report_id("example.com", day + datetime.timedelta(days=1), "me.test")}
    assert first not in others and len(others) == 3
    assert first.isalnum()  # RFC 8460 5.3's unique-id: 1*(ALPHA / DIGIT)


def test_file_name_as_rfc_8460_5_3():
    assert tlsrpt.file_name("me.test", "example.com", trace.DAY, "abc123") == \
        "me.test!example.com!1796515200!1796601599!abc123.json.gz"


def test_a_day_without_sessions_has_no_report(tmp_path):
    sessions, _ = tlsrpt.read_sessions(lines_of(trace.write(tmp_path)), datetime.date(2026, 1, 1))
    assert tlsrpt.build_reports(sessions, datetime.date(2026, 1, 1), "o", "c", "me.test") == {}


@pytest.mark.parametrize("hostile", [b"\xff\xfe", b'{"v":true,"time":"2026-12-06T00:00:00Z","host":"a.test"}', b"{" * 100000, b'{"v":1,"time":"2026-12-06T00:00:00+01:00Z"}',
                                     b'{"v":1,"time":"2026-12-06T00:00:00Z","route":7}',
                                     b'{"v":1,"time":"2026-12-06T00:00:00Z","host":"a.test","tls":[1]}',
                                     b'{"v":1,"time":"2026-12-06T00:00:00Z","host":"a.test",'
                                     b'"attempts":[{"failure":3}]}',
                                     b'{"v":1,"time":"2026-12-06T00:00:00Z","host":"a.test","policy":{"type":"sts",'
                                     b'"domain":"a.test","strings":"x"}}',
                                     b" " + b"x" * (tlsrpt.MAX_LINE + 1)])
def test_hostile_lines_are_counted_not_fatal(hostile):
    assert tlsrpt.read_sessions([hostile], trace.DAY) == ([], 1)


# --- the _smtp._tls record ---------------------------------------------------------------------

@pytest.mark.parametrize("record, uris", [
    (b"v=TLSRPTv1; rua=mailto:tlsrpt@example.com", [b"mailto:tlsrpt@example.com"]),
    (b"v=TLSRPTv1;rua=mailto:a@example.com,https://r.example.com/v1", [b"mailto:a@example.com",
                                                                         b"https://r.example.com/v1"]),
    (b"v=TLSRPTv1 ;\trua=mailto:a@example.com ,\thttps://r.example.com/ ;", [b"mailto:a@example.com",
                                                                              b"https://r.example.com/"]),
    (b"v=TLSRPTv1; x-ext=1; rua=mailto:a@example.com; other.ext=a:b", [b"mailto:a@example.com"]),
    (b"v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com", [b"mailto:a@example.com",
                                                                          b"mailto:b@example.com"]),
    (b"v=TLSRPTv1; rua=mailto:a%2Cb@example.com", [b"mailto:a%2Cb@example.com"]),
])
def test_records_that_follow_the_grammar(record, uris):
    assert tlsrpt.parse_record(record) == uris


@pytest.mark.parametrize("record", [
    b"v=TLSRPTv1", b"v=TLSRPTv1;", b"v=TLSRPTv1; ", b"v=TLSRPTv1; x=1",           # no rua
    b"v=TLSRPTv1; RUA=mailto:a@example.com",                                      # keys are case-sensitive
    b"v=TLSRPTv1; rua=", b"v=TLSRPTv1; rua=mailto:a@example.com,",                # an empty URI
    b"v=TLSRPTv1; rua=mailto:a@example.com;; x=1",                               # an empty field
    b"v=TLSRPTv1; rua=mailto:a b@example.com",                                    # a space in a URI
    b"v=TLSRPTv1; rua=mailto:a@example.com!10m",                                  # "!" must be encoded
    b"v=TLSRPTv1; rua=mailto:%zz@example.com",                                    # a bad escape
    b"v=TLSRPTv1; rua=example.com",                                               # no scheme
    b"v=TLSRPTv1; rua=mailto:a@example.com; bad key=1", b"v=TLSRPTv1; rua=mailto:a@example.com; k=",
    b"v=TLSRPTv1; rua=mailto:a@example.com; k=a=b",
    b"v=TLSRPTv1; rua=mailto:a@example.com; " + b"k" * 33 + b"=1",
    b"v=TLSRPTv2; rua=mailto:a@example.com", b"v=tlsrptv1; rua=mailto:a@example.com",
    b" v=TLSRPTv1; rua=mailto:a@example.com",
])
def test_records_that_do_not(record):
    with pytest.raises(tlsrpt.BadRecord):
        tlsrpt.parse_record(record)


def test_exactly_one_record_counts():
    good = b"v=TLSRPTv1; rua=mailto:a@example.com"
    assert tlsrpt.select_record([b"v=spf1 -all", good]) == good
    assert tlsrpt.select_record([good, b"v=TLSRPTv1;rua=mailto:b@example.com"]) is None  # two: no TLSRPT
    assert tlsrpt.select_record([]) is None
    assert tlsrpt.select_record([b"v=TLSRPTv10; rua=mailto:a@example.com"]) is None
    assert tlsrpt.select_record([b"v=TLSRPTv1 ; rua=mailto:a@example.com"]) == b"v=TLSRPTv1 ; rua=mailto:a@example.com"


@pytest.mark.parametrize("uri, expected", [
    (b"mailto:tlsrpt@example.com", ("mailto", "tlsrpt@example.com")),
    (b"mailto:tls-reports_1.x@mail-in.example.com", ("mailto", "tls-reports_1.x@mail-in.example.com")),
    (b"MAILTO:tlsrpt@example.com?subject=x", ("mailto", "tlsrpt@example.com")),
    (b"mailto:tls%2Brpt@example.com", ("mailto", "tls+rpt@example.com")),
    (b"https://reports.example.com:8443/tlsrpt?x=1", ("https", "https://reports.example.com:8443/tlsrpt?x=1")),
])
def test_destinations(uri, expected):
    assert tlsrpt.destination(uri) == expected


@pytest.mark.parametrize("uri", [b"mailto:a%2Cb@example.com", b"mailto:a@b@example.com", b"mailto:nobody",
                                 b"mailto:a@-bad-.example", b"mailto:a%0A@example.com", b"http://example.com/",
                                 b"https:example.com", b"https://user@example.com/", b"ftp://example.com/"])
def test_destinations_refused(uri):
    scheme, why = tlsrpt.destination(uri)
    assert scheme is None and why


# --- the mail ------------------------------------------------------------------------------------

def test_mail_has_rfc_8460s_form(reports):
    report = reports["example.com"]
    gz = tlsrpt.compress(report)
    name = tlsrpt.file_name("me.test", "example.com", trace.DAY, report["report-id"])
    raw = tlsrpt.mail(gz, name, "example.com", "me.test", report["report-id"], "postmaster@me.test",
                      "tlsrpt@example.com", "Mon, 07 Dec 2026 01:00:00 +0000", "<1@me.test>")
    assert b"\r" not in raw  # qmail-inject reads LF line ends
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Subject"] == "Report Domain: example.com Submitter: me.test Report-ID: <%s@me.test>" % \
        report["report-id"]
    assert message["TLS-Report-Domain"] == "example.com" and message["TLS-Report-Submitter"] == "me.test"
    assert message["TLS-Required"] == "No" and message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/report" and message.get_param("report-type") == "tlsrpt"
    parts = list(message.iter_parts())
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "application/tlsrpt+gzip" and parts[1].get_filename() == name
    assert json.loads(gzip.decompress(parts[1].get_payload(decode=True))) == report


def test_a_policy_failure_is_one_failure_beside_the_sessions():
    """qmail-remote's trace of a delivery whose MTA-STS policy could not be fetched: the
    policy object carries the RFC 8460 type; the delivery itself went on as before."""
    policy = dict(trace.sts(), strings=[], mx=[], mode=None, failure="sts-policy-fetch-error",
                  fetch="fetch failed: HTTP 500")
    session = tlsrpt.parse_line(trace.line("2026-12-06T10:00:00Z", "example.com", [trace.ok(*trace.MX1)],
                                           policy=policy).encode())
    assert session.successes == 1
    assert session.failures == [("sts-policy-fetch-error", None, None, None, "fetch failed: HTTP 500")]
