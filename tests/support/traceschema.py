"""A checker for trace lines (doc/trace.html, schema version 1), without jsonschema.

check(line) parses one line (bytes or str, with or without its LF) and raises
AssertionError naming the first field that breaks the schema; it returns the object.
Extra fields are allowed where the schema says so (it grows by adding fields only).
"""

import json
import re

RESULT_TYPES = {"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
                "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
                "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"}
ROUTES = {"mx", "smtproutes", "qmtproutes", "authsenders"}
DECIDERS = {"tlsstrictness", "tlsdestinations", "dane", "mta-sts", "memory", "none"}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
NUMBER = (int, float)


def _is(value, kinds, where, nullable=False):
    if value is None and nullable:
        return
    assert isinstance(value, kinds) and not (isinstance(value, bool) and bool not in (
        kinds if isinstance(kinds, tuple) else (kinds,))), "%s: %r" % (where, value)


def check(line):
    if isinstance(line, bytes):
        line = line.decode("utf-8")
    assert "\n" not in line.rstrip("\n"), "more than one line"
    trace = json.loads(line)
    assert isinstance(trace, dict), "not an object"
    assert trace.get("v") == 1, "v"
    for name in ("time", "duration", "host", "sender_domain", "recipient_domains", "recipients", "route", "dns",
                 "policy", "attempts", "tls", "replies", "report"):
        assert name in trace, "missing %s" % name
    assert TIME.match(trace["time"]), "time %r" % trace["time"]
    _is(trace["duration"], NUMBER, "duration")
    assert trace["duration"] >= 0
    _is(trace["host"], str, "host")
    _is(trace["sender_domain"], str, "sender_domain")
    _is(trace["recipient_domains"], list, "recipient_domains")
    for domain in trace["recipient_domains"]:
        _is(domain, str, "recipient_domains[]")
    _is(trace["recipients"], int, "recipients")
    assert trace["route"] in ROUTES or trace["route"] is None, "route %r" % trace["route"]
    _is(trace["dns"], list, "dns")
    for answer in trace["dns"]:
        _is(answer, dict, "dns[]")
        _is(answer.get("name"), str, "dns[].name")
        _is(answer.get("type"), str, "dns[].type")
        assert answer.get("status") in ("ok", "nxdomain", "soft"), "dns[].status"
        _is(answer.get("ad"), bool, "dns[].ad")
        _is(answer.get("records"), list, "dns[].records")
        for record in answer["records"]:
            _is(record, str, "dns[].records[]")
    policy = trace["policy"]
    if policy is not None:
        _is(policy, dict, "policy")
        if "type" in policy:
            assert policy["type"] in ("sts", "tlsa", "no-policy-found"), "policy.type"
        if "decided_by" in policy:
            assert policy["decided_by"] in DECIDERS, "policy.decided_by"
        if "mode" in policy:
            assert policy["mode"] in ("enforce", "testing", None), "policy.mode"
    _is(trace["attempts"], list, "attempts")
    for attempt in trace["attempts"]:
        _is(attempt, dict, "attempts[]")
        _is(attempt.get("ip"), str, "attempts[].ip")
        _is(attempt.get("name"), str, "attempts[].name")
        _is(attempt.get("port"), int, "attempts[].port")
        _is(attempt.get("t"), NUMBER, "attempts[].t")
        _is(attempt.get("result"), str, "attempts[].result")
        assert "failure" in attempt, "attempts[].failure"
        assert attempt["failure"] is None or attempt["failure"] in RESULT_TYPES, "failure %r" % attempt["failure"]
    tls = trace["tls"]
    if tls is not None:
        _is(tls, dict, "tls")
        _is(tls.get("version"), str, "tls.version")
        _is(tls.get("cipher"), str, "tls.cipher")
        _is(tls.get("verified"), bool, "tls.verified")
        _is(tls.get("by"), str, "tls.by", nullable=True)
        _is(tls.get("sni"), str, "tls.sni", nullable=True)
    _is(trace["replies"], list, "replies")
    for code in trace["replies"]:
        _is(code, int, "replies[]", nullable=True)
    report = trace["report"]
    _is(report, dict, "report")
    assert report.get("letter") in ("K", "Z", "D"), "report.letter"
    _is(report.get("text"), str, "report.text")
    if "truncated" in trace:
        _is(trace["truncated"], int, "truncated")
    return trace
