"""The trace's encoder and assembler (lib/qremote/trace.py, tracefile.py), sans chain."""

import json
import os

import pytest

from qremote import trace, tracefile
from tests.support.traceschema import check


@pytest.mark.parametrize("value", [None, True, False, 0, -7, 2 ** 40, 1.5, "", "plain", 'q"uote\\back',
                                   "tab\tnl\ncr\r\0nul\x7fdel\x1b", "é ünïcode ✓", [1, "a", None], {"k": [True]}])
def test_encode_is_json(value):
    assert json.loads(tracefile.encode(value)) == (round(value, 4) if isinstance(value, float) else value)


def test_encode_bytes_and_bounds():
    assert json.loads(tracefile.encode(b"\xff\xfebad \x00 bytes")) == "\ufffd\ufffdbad \x00 bytes"
    assert json.loads(tracefile.encode("x" * 10000)) == "x" * tracefile.MAX_STRING
    assert tracefile.encode(float("nan")) == "null"


def event_line(kind, **fields):
    return ("%s%s" % (kind, "".join("\t%s=%s" % (k, tracefile.encode(v)) for k, v in fields.items()))).encode()


BASE = [event_line("delivery", host="example.com", sender_domain="example.org", recipient_domains=["example.com"],
                   recipients=1),
        event_line("route", route="mx"),
        event_line("dns", name="example.com", type="MX", status="ok", ad=True, records=["10 mx.example.com"])]


def test_assemble_merges_results_and_objects():
    lines = BASE + [event_line("attempt", ip="192.0.2.1", name="mx.example.com", port=25, t=0.01,
                               result="connected", failure=None),
                    event_line("result", result="tls failed: name: mismatch", failure="certificate-host-mismatch"),
                    event_line("attempt", ip="192.0.2.2", name="mx.example.com", port=25, t=0.02,
                               result="connected", failure=None),
                    event_line("policy", domain="example.com", type="sts"),
                    event_line("policy", decided_by="mta-sts", mode="enforce"),
                    event_line("tls", version="TLSv1.3", cipher="X", verified=True, by="ca+dn*", sni="mx.example.com"),
                    event_line("reply", code=220), event_line("reply", code=250),
                    event_line("somebody-elses", note="kept")]
    out = tracefile.assemble(lines, "K", b"192.0.2.2 accepted message.\nRemote host said: 250 ok\n", 1796640000.5, 0.25)
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    t = check(out)
    assert t["time"] == "2026-12-07T10:40:00Z" and t["duration"] == 0.25
    assert [a["failure"] for a in t["attempts"]] == ["certificate-host-mismatch", None]
    assert t["attempts"][0]["result"] == "tls failed: name: mismatch"
    assert t["policy"] == {"domain": "example.com", "type": "sts", "decided_by": "mta-sts", "mode": "enforce"}
    assert t["replies"] == [220, 250] and t["events"] == [{"kind": "somebody-elses", "note": "kept"}]
    assert t["report"] == {"letter": "K", "text": "192.0.2.2 accepted message.\nRemote host said: 250 ok"}
    assert "truncated" not in t


def test_assemble_without_events_still_gives_a_valid_line():
    t = check(tracefile.assemble(BASE, "Z", b"Sorry.\n", 0.0, 0.0))
    assert t["attempts"] == [] and t["tls"] is None and t["policy"] is None and t["replies"] == []


def test_a_line_is_at_most_64_kib_and_says_what_it_dropped():
    lines = BASE + [event_line("reply", code=250)] * 30000 + [
        event_line("dns", name="x" * 2000, type="TXT", status="ok", ad=False, records=["y" * 2000])] * 20
    out = tracefile.assemble(lines, "K", b"\x01" * 10000, 0.0, 1.0)
    assert len(out) <= tracefile.MAX_LINE
    t = check(out)
    kept = len(t["replies"]) + len(t["dns"])
    assert t["truncated"] == 30000 + 21 - kept > 0


def test_finish_appends_one_line(tmp_path, monkeypatch):
    fd = os.memfd_create("t", 0)
    os.write(fd, b"begin\tdir=%s\twall=1796640000.0\tmono=0.0\n" % str(tmp_path).encode().hex().encode())
    os.write(fd, b"\n".join(BASE) + b"\n" + b"reply\tcode=2")  # a last line without LF: left out
    monkeypatch.setattr(trace, "FD", fd)
    tracefile.finish("K", b"ok\n")
    tracefile.finish("Z", b"again\n")
    data = (tmp_path / "2026-12-07.jsonl").read_bytes()
    assert [check(line)["report"]["letter"] for line in data.split(b"\n")[:-1]] == ["K", "Z"]
    assert check(data.split(b"\n")[0])["replies"] == []
    os.close(fd)


def test_event_without_tracing_writes_nothing(monkeypatch):
    monkeypatch.setattr(trace, "FD", None)
    trace.event("reply", code=250)  # nowhere to go: no error either


@pytest.mark.parametrize("kind,text,expected", [
    ("verify", "certificate verify failed: certificate has expired", "certificate-expired"),
    ("verify", "certificate verify failed: self-signed certificate", "certificate-not-trusted"),
    ("name", "hostname mismatch", "certificate-host-mismatch"),
    ("depth", "chain too long", "certificate-not-trusted"),
    ("dane", "no TLSA record matched", "tlsa-invalid"),  # RFC 8460 4.3.2.1: no record valid
    ("closed", "the server closed the connection", "validation-failure"),
    ("local", "unable to read the key", None),
    ("some-new-kind", "", "validation-failure"),
])
def test_tls_failure_kinds_as_rfc8460_result_types(kind, text, expected):
    assert tracefile.result_type(kind, text) == expected


# --- the policy object of an MX delivery (tracefile.policy_facts) ---

from qremote.candidates import Target  # noqa: E402
from qremote.mtasts.policy import parse_policy  # noqa: E402
from qremote.tlsrule import Rule  # noqa: E402


class _Dane:
    def __init__(self, state, records=()):
        self.state, self.records = state, list(records)


def _targets(*names):
    return [Target("127.0.0.%d" % (n + 1), 2, 25, 10 * n, name) for n, name in enumerate(names)]


STS_TEXT = b"version: STSv1\nmode: %s\nmx: mx1.example.com\nmax_age: 600\n"


def test_policy_facts_dane_wins_over_mta_sts():
    targets = _targets(b"mx1.example.com")
    enforce = parse_policy(STS_TEXT % b"enforce", "id1", 0)
    fields, skipped = tracefile.policy_facts(b"Example.COM.", targets, [Rule("must", "dane", verify="dane")],
                                             {b"mx1.example.com": _Dane("secure", [(3, 1, 1, b"\xab" * 32)])},
                                             (enforce, "cached"))
    assert (fields["type"], fields["decided_by"], fields["domain"]) == ("tlsa", "dane", b"example.com")
    assert fields["strings"] == ["3 1 1 " + "ab" * 32] and fields["mx"] == [b"mx1.example.com"]
    assert skipped == []


def test_policy_facts_testing_says_what_enforce_would_have_done():
    targets = _targets(b"mx0.example.com", b"mx1.example.com")
    testing = parse_policy(STS_TEXT % b"testing", "id1", 0)
    fields, skipped = tracefile.policy_facts(b"example.com", targets, [Rule("may", "tlsstrictness")] * 2, {},
                                             (testing, "fetched"))
    assert (fields["type"], fields["mode"], fields["decided_by"]) == ("sts", "testing", "tlsstrictness")
    assert fields["would"] == ["mx0.example.com: skipped", "mx1.example.com: tls required"]
    assert fields["strings"] == ["version: STSv1", "mode: testing", "mx: mx1.example.com", "max_age: 600"]


def test_policy_facts_enforce_skips_are_attempts_with_their_failure():
    targets = _targets(b"mx0.example.com", b"mx1.example.com")
    enforce = parse_policy(STS_TEXT % b"enforce", "id1", 0)
    rules = [Rule("skip", "mta-sts", why=b"not an MX"), Rule("must", "mta-sts", verify="ca+dn*")]
    fields, skipped = tracefile.policy_facts(b"example.com", targets, rules, {}, (enforce, "cached"))
    assert fields["decided_by"] == "mta-sts" and fields["mode"] == "enforce"
    assert skipped == [(targets[0], b"not an MX", "validation-failure")]
    rules = [Rule("skip", "dane", why=b"TLSA lookup failed"), Rule("may", "tlsstrictness")]
    assert tracefile.policy_facts(b"example.com", targets, rules, {}, None)[1] == [
        (targets[0], b"TLSA lookup failed", "dane-required")]


@pytest.mark.parametrize("event,kind,failure", [
    ("fetch failed: HTTP 500", "sts", "sts-policy-fetch-error"),
    ("fetch failed: invalid policy: mode missing", "sts", "sts-policy-invalid"),
    ("fetch failed: certificate: unable to get local issuer certificate", "sts", "sts-webpki-invalid"),
    ("TXT lookup failed", "no-policy-found", None),
    ("no record", "no-policy-found", None),
])
def test_policy_facts_without_a_policy(event, kind, failure):
    fields, _ = tracefile.policy_facts(b"example.com", _targets(b"mx.example.com"), [Rule("may", "tlsstrictness")],
                                       {}, (None, event))
    assert (fields["type"], fields.get("failure"), fields["fetch"]) == (kind, failure, event)


def test_policy_facts_domain_is_the_a_label_form():
    """qmail-tlsrpt takes only host names for a policy-domain: an IDN host is its A-labels."""
    fields, _ = tracefile.policy_facts("Bücher.Example.".encode(), _targets(b"mx.example"),
                                       [Rule("may", "tlsstrictness")], {}, None)
    assert fields["domain"] == b"xn--bcher-kva.example"
    assert tracefile.policy_facts(b"\xff.example", [], [], {}, None)[0]["domain"] == b"\xff.example"
