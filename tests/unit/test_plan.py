"""The plan of qmail-remote's loop (plan.py) with the opening machine (smtp/opening.py)
deciding what a server offers, the plan's codec, and the TLS texts (failures.py): no sockets."""

import pytest

from qremote import failures
from qremote.candidates import AF_INET, AF_INET6, Target
from qremote.plan import CLEAR, SKIP, MAX_KEPT, Attempt, Plan, Policy
from qremote.smtp.opening import NO_TLS, READY, STARTTLS, Opening
from qremote.smtp.reply import Reply
from qremote.tlsc import parse_failure, server_name

WITH_TLS = Reply(250, b"250-mx.test\n250-PIPELINING\n250 STARTTLS\n")
WITHOUT_TLS = Reply(250, b"250-mx.test\n250 PIPELINING\n")


def targets():
    return [Target("127.0.0.2", AF_INET, 25, 10, b"a.mx.test"), Target("::2", AF_INET6, 25, 10, b"a.mx.test"),
            Target("127.0.0.3", AF_INET, 25, 20, b"b.mx.test")]


def plan(strictness, anchors=b"/ca.pem"):
    return Plan(Policy(strictness, anchors), targets())


def after_ehlo(p, attempt, ehlo_reply):
    """What the loop does once EHLO is answered: STARTTLS, CLEAR or SKIP."""
    opening = Opening(attempt.target.ip.encode(), b"me.test", greeting=False, starttls=p.tls_wanted(attempt))
    assert opening.start() == b"EHLO me.test\r\n"
    sent = opening.receive(ehlo_reply)
    if opening.outcome == NO_TLS:
        return p.without_tls(attempt, opening.why)
    if opening.outcome == READY:
        return CLEAR
    assert opening.state == STARTTLS and sent == b"STARTTLS\r\n"
    return STARTTLS


# --- groups ---

def test_groups_follow_mx_name_and_preference():
    p = plan(0)
    assert [a.target.ip for a in p.next_group()] == ["127.0.0.2", "::2"]
    assert [a.target.ip for a in p.next_group()] == ["127.0.0.3"]
    assert p.next_group() == []


def test_untried_addresses_go_back_in_front():
    p = plan(2)
    first, second = p.next_group()
    p.put_back([second])
    assert p.next_group() == [second]


# --- after EHLO ---

@pytest.mark.parametrize("strictness", [0, 1, 2])
def test_starttls_when_offered_and_anchors_set(strictness):
    p = plan(strictness)
    assert after_ehlo(p, p.next_group()[0], WITH_TLS) == STARTTLS


def test_no_anchors_never_starttls():
    p = plan(2, anchors=None)
    assert after_ehlo(p, p.next_group()[0], WITH_TLS) == CLEAR
    assert p.exhausted(0) is None


def test_not_offered_strictness_0_goes_clear():
    p = plan(0)
    assert after_ehlo(p, p.next_group()[0], WITHOUT_TLS) == CLEAR
    assert not p.reasons


def test_not_offered_strictness_1_skips_then_pass_2_in_cleartext():
    p = plan(1)
    for group in (p.next_group(), p.next_group()):
        assert after_ehlo(p, group[0], WITHOUT_TLS) == SKIP
    pass2 = p.next_group()
    assert p.pass_no == 2
    assert [a.target.ip for a in pass2] == ["127.0.0.2"]  # only the addresses that answered
    assert pass2[0].cleartext and pass2[0].note == failures.NO_TLS_NOTE
    assert after_ehlo(p, pass2[0], WITH_TLS) == CLEAR
    assert p.exhausted(0) is None


def test_strictness_1_later_tls_server_is_preferred():
    p = plan(1)
    assert after_ehlo(p, p.next_group()[0], WITHOUT_TLS) == SKIP
    assert after_ehlo(p, p.next_group()[0], WITH_TLS) == STARTTLS


def test_not_offered_strictness_2_skips_and_exhausted_says_why():
    p = plan(2)
    assert after_ehlo(p, p.next_group()[0], WITHOUT_TLS) == SKIP
    p.next_group()
    assert p.next_group() == [] and p.pass_no == 1
    failure = p.exhausted(0)
    assert isinstance(failure, failures.TLSRequired) and failure.letter == failures.Z
    assert b"127.0.0.2: no STARTTLS offered" in failure.text()
    assert b"tlsstrictness 2" in failure.text()


@pytest.mark.parametrize("strictness,expected", [(0, CLEAR), (1, SKIP), (2, SKIP)])
def test_starttls_refused(strictness, expected):
    p = plan(strictness)
    attempt = p.next_group()[0]
    opening = Opening(b"127.0.0.2", b"me.test", greeting=False, starttls=True)
    opening.start()
    opening.receive(WITH_TLS)
    opening.receive(Reply(454, b"454-busy\n454 4.7.0 TLS not available\n"))
    assert opening.outcome == NO_TLS
    assert p.without_tls(attempt, opening.why) == expected
    if expected == SKIP:
        assert p.reasons.pairs == [(b"127.0.0.2", b"STARTTLS refused: 454 4.7.0 TLS not available")]


# --- handshake failures ---

def test_handshake_failure_strictness_0_reconnects_same_address_alone_with_note():
    p = plan(0)
    attempt, other = p.next_group()
    p.put_back([other])
    p.put_back([attempt])
    p.handshake_failed(b"certificate not trusted: x")
    retry = p.next_group()
    assert len(retry) == 1 and retry[0].target is attempt.target and retry[0].cleartext and retry[0].retry
    assert retry[0].note == b"sent in cleartext: the TLS handshake failed (certificate not trusted: x)"
    assert after_ehlo(p, retry[0], WITH_TLS) == CLEAR
    assert p.next_group() == [other]


def test_handshake_failure_strictness_1_goes_to_pass_2():
    p = plan(1)
    p.put_back(p.next_group()[:1])
    p.handshake_failed(b"TLS handshake error: x")
    assert p.later == [targets()[0]]


def test_handshake_failure_strictness_2_is_a_reason():
    p = plan(2)
    p.put_back(p.next_group()[:1])
    p.handshake_failed(b"certificate name mismatch: x")
    assert p.later == []
    assert b"127.0.0.2: certificate name mismatch: x" in p.exhausted(0).text()


@pytest.mark.parametrize("value,kind,why", [
    ("verify: certificate has expired", "verify", b"certificate not trusted: certificate has expired"),
    ("name: wanted mx.test", "name", b"certificate name mismatch: wanted mx.test"),
    ("timeout: 60 seconds", "timeout", b"TLS handshake timed out: 60 seconds"),
    ("closed: by peer", "closed", b"connection closed during the TLS handshake: by peer"),
    ("handshake: wrong version", "handshake", b"TLS handshake error: wrong version"),
    ("odd text \x01", "handshake", b"TLS handshake error: odd text ?"),
])
def test_tlsc_failure_kinds(value, kind, why):
    found_kind, text = parse_failure(value)
    assert (found_kind, failures.tls_reason(found_kind, text)) == (kind, why)


# --- names ---

@pytest.mark.parametrize("name,ip,expected", [
    (b"mx.test", "127.0.0.2", b"mx.test"),
    (b"mx.test.", "127.0.0.2", b"mx.test"),
    (b"[127.0.0.2]", "127.0.0.2", b"127.0.0.2"),
    (b"127.0.0.2", "127.0.0.2", b"127.0.0.2"),
    (b"[IPv6:::1]", "::1", b"::1"),
    # DNS prints a dot or an odd byte inside a label escaped: no host name for tlsc-io -k
    (b"mx\\..example.net", "127.0.0.2", b"127.0.0.2"),
    (b"mx\\200.example.net", "127.0.0.2", b"127.0.0.2"),
])
def test_server_name(name, ip, expected):
    assert server_name(Target(ip, AF_INET, 25, 0, name)) == expected


# --- the resume codec ---

def round_trip(p, first=None):
    return Plan.load(p.dump(first))


def test_resume_round_trip():
    p = Plan(Policy(1, b"/ca dir/", b"/c.pem", b"/k.pem"), targets(), deadline=12345.25, budget=3600)
    a, b = p.next_group()
    p.without_tls(a, b"no STARTTLS offered")
    p.put_back([Attempt(b.target, cleartext=True, note=b"a note; with, odd/bytes", retry=True)])
    p.unreachable(targets()[2], "connect timed out")
    back = round_trip(p)
    assert back.pass_no == 1 and back.later == p.later and back.reasons.pairs == p.reasons.pairs
    assert back.tried.pairs == p.tried.pairs
    assert [(x.target, x.cleartext, x.note, x.retry) for x in back.todo] == [
        (x.target, x.cleartext, x.note, x.retry) for x in p.todo]
    policy = back.policy
    assert (policy.strictness, policy.anchors, policy.clientcert, policy.clientkey) == (
        1, b"/ca dir/", b"/c.pem", b"/k.pem")
    assert (back.deadline, back.budget) == (12345.25, 3600)


def test_resume_puts_the_handed_attempt_first():
    p = plan(2)
    first, second = p.next_group()
    p.put_back([second])
    back = round_trip(p, first)
    assert [a.target for a in back.todo] == [first.target, second.target, targets()[2]]
    back.handshake_failed(b"certificate not trusted: x")
    assert [a.target for a in back.todo] == [second.target, targets()[2]]


def test_the_policy_travels_in_the_state():
    """A resumed qmail-remote applies the policy the plan was built under, not today's file."""
    p = plan(2)
    first = p.next_group()[0]
    back = round_trip(p, first)
    assert back.policy.strictness == 2 and back.policy.verify
    back.handshake_failed(b"certificate not trusted: x")
    assert not any(a.cleartext for a in back.todo)  # strictness 2: no cleartext retry


def test_resume_keeps_the_last_server_failure():
    p = plan(0)
    first = p.next_group()[0]
    p.server_failed(first, failures.GreetingFailed(b"127.0.0.2", None))
    back = round_trip(p, first)
    assert (back.exhausted(0).letter, back.exhausted(0).text()) == (failures.Z, p.last_failure.text())
    p.last_failure = None
    assert round_trip(p, first).exhausted(0) is None


def test_the_largest_plan_fits_one_argv_word():
    """32 MX names of 240 octets, 16 IPv6 addresses each: the state stays under
    MAX_ARG_STRLEN (128 KiB), which execve() enforces per word."""
    name = lambda i: (b"%02d" % i + b"x" * 61 + b".") * 3 + b"y" * 48
    many = [Target("2001:db8:%x:ffff:ffff:ffff:ffff:%x" % (i, j), AF_INET6, 25, i, name(i))
            for i in range(32) for j in range(16)]
    assert all(len(t.name) == 240 for t in many)
    p = Plan(Policy(1, b"/" + b"a" * 4000, b"/" + b"c" * 4000, b"/" + b"k" * 4000), many, 1.5, 3600)
    first = p.next_group()[0]
    for t in many[16:]:
        p.without_tls(Attempt(t), b"STARTTLS refused: " + b"x" * 300)
    state = p.dump(first)
    assert len(("--qremote-resume=" + state).encode()) < 128 * 1024
    back = Plan.load(state)
    assert len(back.todo) == 512 - 15 and len(back.later) == 512 - 16
    assert len(back.reasons.pairs) == MAX_KEPT and back.reasons.more == 512 - 16 - MAX_KEPT


def test_deadline_passed_reports_what_was_tried():
    p = Plan(Policy(), targets(), deadline=100.0, budget=30)
    group = p.next_group()
    p.unreachable(group[0].target, "connect timed out")
    p.server_failed(group[1], failures.ConnectionDied(b"::2", why=b"timed out while reading"))
    assert not isinstance(p.exhausted(99.0), failures.OpeningTimedOut)
    failure = p.exhausted(100.0)
    assert isinstance(failure, failures.OpeningTimedOut) and failure.letter == failures.Z
    assert failure.text() == (b"Sorry, no server could be reached within the 30 seconds of control/timeoutopening "
                              b"(127.0.0.2: connect timed out; ::2: Connected to ::2 but connection died. (#4.4.2)). "
                              b"(#4.4.1)\n")


GOOD = "4;1;inf;0;0///;6d78;127.0.0.1/25/0/0/smtp//;;0;0;;;;"


@pytest.mark.parametrize("state", ["", "4;1;inf;0;0///;;;;0;0;;;;", "1;127.0.0.1/25/0///;;;;",
                                   "2;1;inf;0;0///;6d78;127.0.0.1/25/0/0//;;0;0;",  # before QMTP
                                   "4;x;inf;0;0///;6d78;127.0.0.1/25/0/0/smtp//;;0;0;;;;",
                                   "4;1;inf;0;3///;6d78;127.0.0.1/25/0/0/smtp//;;0;0;;;;",
                                   "4;1;inf;0;0///;;127.0.0.1/25/0/0/smtp//;;0;0;;;;",
                                   "4;1;inf;0;0///;zz;127.0.0.1/25/0/0/smtp//;;0;0;;;;",
                                   "4;1;inf;0;0///;6d78;127.0.0.1/25/0/0/smtp/q/;;0;0;;;;",
                                   "4;1;inf;0;0///;6d78;127.0.0.1/25/0/0/lmtp//;;0;0;;;;",
                                   "4;1;inf;0;0///;6d78;127.0.0.1/25/0/0//;;0;0;;;;",
                                   "4;1;inf;0;0///;6d78;999.0.0.1/25/0/0/smtp//;;0;0;;;;",
                                   "4;1;inf;0;0///;6d78;127.0.0.1/25/0/0/smtp//;;0;0;4b;;;",
                                   "4;1;inf;0;0///;6d78;127.0.0.1/25/0/0/smtp//;;0;0;5a0;;;",
                                   "4;1;inf;0;0///;6d78;127.0.0.1/25/0/0/smtp//;;x;0;;;;",
                                   "4;1;inf;0;0///;6d78;127.0.0.1/25/0/0/smtp//;;0;0;;not-an-ip;;",
                                   GOOD + ";",
                                   "3;1;inf;0;0///;6d78;127.0.0.1/25/0/0/smtp//;;0;0;;",  # before SMTPS and AUTH
                                   GOOD[:-1] + "nothex",
                                   GOOD + "smtproutes:1:zz",
                                   GOOD + "passwd:1:61",
                                   GOOD + "smtproutes:x:61"])
def test_malformed_resume_state(state):
    with pytest.raises((ValueError, IndexError)):
        Plan.load(state)


def test_a_wellformed_state_loads():
    loaded = Plan.load(GOOD)
    assert loaded.todo[0].target.name == b"mx" and loaded.todo[0].target.protocol == "smtp"
    assert loaded.source is None


def test_protocol_and_source_travel_in_the_state():
    """QMTPS's handshake fails in tlsc-io: the resumed plan must still know the targets
    are QMTPS (and the route's localip), or it would retry them as SMTP."""
    mixed = [Target("127.0.0.2", AF_INET, 6209, 0, b"relay.test", "qmtps"),
             Target("::2", AF_INET6, 209, 0, b"relay.test", "qmtp")]
    p = Plan(Policy(), mixed, source="127.0.0.9")
    p.later.append(mixed[1])
    back = round_trip(p)
    assert [a.target.protocol for a in back.todo] == ["qmtps", "qmtp"] and back.todo[0].target.port == 6209
    assert back.later[0].protocol == "qmtp" and back.source == "127.0.0.9"


def test_smtps_helohost_and_auth_travel_in_the_state():
    """SMTPS's handshake fails in tlsc-io: the resumed plan keeps the targets SMTPS, the
    domainips HELO name and the credentials reference (never a secret)."""
    targets = [Target("127.0.0.2", AF_INET, 465, 0, b"relay.test", "smtps")]
    p = Plan(Policy(), targets, source="fe80::1%eth0", helohost=b"mx.example.com", auth="smtproutes:3:6162")
    back = round_trip(p)
    assert back.todo[0].target.protocol == "smtps" and back.source == "fe80::1%eth0"
    assert (back.helohost, back.auth) == (b"mx.example.com", "smtproutes:3:6162")
    assert back.tls_wanted(back.todo[0])  # AUTH wants STARTTLS even without trustanchors
    assert not Plan(Policy(), targets).tls_wanted(Attempt(targets[0]))


@pytest.mark.parametrize("strictness", [0, 1, 2])
def test_smtps_handshake_failure_has_no_cleartext_retry(strictness):
    smtps = [Target("127.0.0.2", AF_INET, 465, 0, b"relay.test", "smtps")]
    p = Plan(Policy(strictness, b"/ca.pem" if strictness else None), smtps, auth="smtproutes:1:61")
    first, = p.next_group()
    back = round_trip(p, first)
    back.handshake_failed(b"TLS handshake error: y")
    assert back.next_group() == []
    failure = back.exhausted(0)
    if strictness < 2:
        assert failure.text() == (b"Connected to 127.0.0.2 but the SMTPS handshake failed: TLS handshake error: y. "
                                  b"(#4.4.2)\n")


@pytest.mark.parametrize("strictness", [0, 1, 2])
def test_qmtps_handshake_failure_has_no_cleartext_retry(strictness):
    """Implicit TLS: port 6209 speaks no cleartext, so a failed handshake moves on to
    the next address at every strictness, and is what is reported when none is left."""
    qmtps = [Target("127.0.0.2", AF_INET, 6209, 0, b"relay.test", "qmtps"),
             Target("127.0.0.3", AF_INET, 6209, 0, b"relay.test", "qmtps")]
    p = Plan(Policy(strictness, b"/ca.pem" if strictness else None), qmtps)
    first, second = p.next_group()
    p.put_back([second])
    back = round_trip(p, first)
    back.handshake_failed(b"TLS handshake error: x")
    assert [(a.target.ip, a.cleartext) for a in back.todo] == [("127.0.0.3", False)]
    back.handshake_failed(b"TLS handshake error: y")
    assert back.next_group() == []
    failure = back.exhausted(0)
    assert failure.letter == failures.Z
    if strictness == 2:
        assert isinstance(failure, failures.TLSRequired)
    else:
        assert failure.text() == (b"Connected to 127.0.0.3 but the QMTPS handshake failed: TLS handshake error: y. "
                                  b"(#4.4.2)\n")


# --- texts ---

def test_accepted_text_over_tls():
    ok = Reply(250, b"250 ok\n")
    text = b"127.0.0.2 accepted message.\nRemote host said: 250 ok\n"
    assert failures.accepted(b"127.0.0.2", ok, b"TLSv1.3", b"TLS_AES_256_GCM_SHA384", True) == (
        b"127.0.0.2 accepted message. (TLSv1.3 verified, cipher TLS_AES_256_GCM_SHA384)\n"
        b"Remote host said: 250 ok\n")
    assert failures.accepted(b"127.0.0.2", ok, b"TLSv1.2", None, False).startswith(
        b"127.0.0.2 accepted message. (TLSv1.2 unverified)\n")
    assert failures.accepted(b"127.0.0.2", ok) == text
    assert failures.accepted(b"127.0.0.2", ok, note=b"sent in cleartext: x").startswith(
        b"127.0.0.2 accepted message. (sent in cleartext: x)\n")
