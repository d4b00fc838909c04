"""A synthetic delivery trace (doc/trace.html's schema, version 1) for the TLS-RPT tests:
several policy domains, successes and failures, a routed delivery, lines of the days
beside, and malformed lines. EXPECTED holds the counts a report of DAY must show."""

import datetime
import json
import os

DAY = datetime.date(2026, 12, 6)

STS = ["version: STSv1", "mode: enforce", "mx: *.example.com", "max_age: 86400"]
STS_TESTING = ["version: STSv1", "mode: testing", "mx: *.example.com", "max_age: 86400"]
TLSA = ["3 1 1 0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6"]


def line(time, host, attempts, tls=True, policy=None, route="mx", letter="K"):
    record = {"v": 1, "time": time, "duration": 0.2, "host": host, "sender_domain": "me.test",
              "recipient_domains": [host], "recipients": 1, "route": route,
              "dns": [{"name": host, "type": "MX", "status": "ok", "ad": False, "records": ["10 mx1." + host]}],
              "attempts": attempts, "replies": [220, 250, 250, 250, 354, 250],
              "report": {"letter": letter, "text": "x"}}
    if policy is not None:
        record["policy"] = policy
    if tls:
        record["tls"] = {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "verified": True,
                         "by": "ca+dn*", "sni": attempts[-1]["name"] if attempts else host}
    return json.dumps(record)


def ok(name, ip):
    return {"ip": ip, "name": name, "port": 25, "t": 0.01, "result": "connected", "failure": None}


def bad(name, ip, failure, result="tls failed: certificate verify failed", **more):
    return dict({"ip": ip, "name": name, "port": 25, "t": 0.01, "result": result, "failure": failure}, **more)


def sts(strings=STS):
    return {"domain": "example.com", "type": "sts", "decided_by": "mta-sts", "strings": strings,
            "mx": ["*.example.com"], "mode": "enforce", "fetch": "cached"}


MX1, MX2 = ("mx1.example.com", "192.0.2.1"), ("mx2.example.com", "2001:db8::2")

DAY_LINES = [
    line("2026-12-06T01:00:00Z", "example.com", [ok(*MX1)], policy=sts()),
    line("2026-12-06T02:00:00Z", "example.com", [bad(*MX1, "certificate-host-mismatch"), ok(*MX2)], policy=sts()),
    line("2026-12-06T03:00:00Z", "example.com",
         [bad(*MX1, "certificate-host-mismatch"), bad(*MX2, "certificate-expired", result="tls failed: expired",
                                                      local_ip="198.51.100.7")],
         tls=False, policy=sts(), letter="Z"),
    line("2026-12-06T04:00:00Z", "example.com", [bad(*MX1, "certificate-host-mismatch"), ok(*MX2)], policy=sts()),
    # a handshake that failed verification: TLS facts in the trace, yet no successful session
    line("2026-12-06T04:30:00Z", "example.com", [bad(*MX1, "certificate-not-trusted")], policy=sts(), letter="Z"),
    # the policy changed during the day: a second policy entry
    line("2026-12-06T05:00:00Z", "example.com", [ok(*MX1)],
         policy=dict(sts(STS_TESTING), mode="testing")),
    # DANE
    line("2026-12-06T06:00:00Z", "dane.test", [ok("mx.dane.test", "192.0.2.30")],
         policy={"domain": "dane.test", "type": "tlsa", "decided_by": "dane", "strings": TLSA, "mx": []}),
    line("2026-12-06T07:00:00Z", "dane.test", [bad("mx.dane.test", "192.0.2.30", "tlsa-invalid",
                                                   result="tls failed: no TLSA record matched")],
         tls=False, policy={"domain": "dane.test", "type": "tlsa", "decided_by": "dane", "strings": TLSA},
         letter="Z"),
    # no policy object at all: the host's own no-policy-found
    line("2026-12-06T08:00:00Z", "Plain.Test.", [bad("mx.plain.test", "192.0.2.40", "starttls-not-supported",
                                                     result="no STARTTLS")], tls=False),
    line("2026-12-06T09:00:00Z", "plain.test", [ok("mx.plain.test", "192.0.2.40")],
         policy={"domain": "plain.test", "type": "no-policy-found", "decided_by": "tlsstrictness"}),
    # a cleartext delivery that nothing required to be TLS: neither success nor failure
    line("2026-12-06T09:30:00Z", "plain.test", [ok("mx.plain.test", "192.0.2.40")], tls=False),
    # the writer may say per attempt whether it negotiated TLS: then the delivery's "tls" is not used
    line("2026-12-06T09:40:00Z", "plain.test", [dict(ok("mx.plain.test", "192.0.2.40"), tls=True),
                                                dict(ok("mx.plain.test", "192.0.2.40"), tls=False)]),
    # a failure word the report does not know: validation-failure, the word kept
    line("2026-12-06T10:00:00Z", "plain.test",
         [bad("mx.plain.test", "192.0.2.40", "depth", result="tls failed: depth")],
         tls=False),
    # a routed delivery: not with the domain's MX hosts, not reported
    line("2026-12-06T11:00:00Z", "routed.test", [ok("relay.test", "192.0.2.50")], route="smtproutes"),
]
# written just after midnight, started just before it
NEXT_DAY_LINES = [line("2026-12-06T23:59:58Z", "dane.test", [ok("mx.dane.test", "192.0.2.30")],
                       policy={"domain": "dane.test", "type": "tlsa", "decided_by": "dane", "strings": TLSA}),
                  line("2026-12-07T00:10:00Z", "example.com", [ok(*MX1)], policy=sts())]
PREVIOUS_DAY_LINES = [line("2026-12-05T12:00:00Z", "example.com", [bad(*MX1, "certificate-expired")], policy=sts())]
MALFORMED = [
    "this is not JSON",
    "[1, 2, 3]",
    json.dumps({"v": 2, "time": "2026-12-06T12:00:00Z", "host": "example.com"}),
    json.dumps({"v": 1, "time": "yesterday", "host": "example.com"}),
    json.dumps({"v": 1, "time": "2026-12-06T12:00:00Z", "host": "example.com", "policy": {"type": "bogus",
                                                                                         "domain": "example.com"}}),
    json.dumps({"v": 1, "time": "2026-12-06T12:00:00Z", "host": "../../etc/passwd"}),
    json.dumps({"v": 1, "time": "2026-12-06T12:00:00Z", "host": "example.com", "attempts": "many"}),
    json.dumps({"v": 1, "time": "2026-12-06T12:00:00Z", "host": "example.com",
                "attempts": [{"ip": "not-an-ip", "failure": "certificate-expired"}]}),
    '{"v": 1, "time": "2026-12-06T12:00:00Z", "host": "exa',  # a torn line
]

# what the report of DAY must say, per policy domain: policy key -> (successes, failures,
# {(result-type, receiving-mx-hostname, receiving-ip): failed-session-count})
EXPECTED = {
    "example.com": {
        ("sts", tuple(STS)): (3, 5, {("certificate-host-mismatch", "mx1.example.com", "192.0.2.1"): 3,
                                     ("certificate-not-trusted", "mx1.example.com", "192.0.2.1"): 1,
                                     ("certificate-expired", "mx2.example.com", "2001:db8::2"): 1}),
        ("sts", tuple(STS_TESTING)): (1, 0, {}),
    },
    "dane.test": {("tlsa", tuple(TLSA)): (2, 1, {("tlsa-invalid", "mx.dane.test", "192.0.2.30"): 1})},
    "plain.test": {("no-policy-found", ()): (2, 2, {("starttls-not-supported", "mx.plain.test", "192.0.2.40"): 1,
                                                    ("validation-failure", "mx.plain.test", "192.0.2.40"): 1})},
}


def write(directory):
    """The trace files into directory (made if needed); returns its path."""
    os.makedirs(directory, exist_ok=True)
    for name, lines in (("2026-12-05.jsonl", PREVIOUS_DAY_LINES),
                        ("2026-12-06.jsonl", DAY_LINES[:5] + MALFORMED + DAY_LINES[5:]),
                        ("2026-12-07.jsonl", NEXT_DAY_LINES)):
        with open(os.path.join(directory, name), "w") as out:
            out.write("\n".join(lines) + "\n")
    with open(os.path.join(directory, "notes.txt"), "w") as out:  # not a trace file: never read
        out.write("not a trace\n")
    return str(directory)
