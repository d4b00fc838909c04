"""The STARTTLS policy as pure decisions (tlspolicy.py), the resume codec (chainargv.py)
and the TLS texts (failures.py): no sockets."""

import pytest

from qremote import chainargv, failures
from qremote.candidates import AF_INET, AF_INET6, Target
from qremote.smtp.ehlo import Capabilities
from qremote.tlspolicy import CLEAR, SKIP, STARTTLS, Attempt, Plan, Policy, handshake_failure, server_name

WITH_TLS = Capabilities({"STARTTLS", "PIPELINING"})
WITHOUT_TLS = Capabilities({"PIPELINING"})


def targets():
    return [Target("127.0.0.2", AF_INET, 25, 10, b"a.mx.test"), Target("::2", AF_INET6, 25, 10, b"a.mx.test"),
            Target("127.0.0.3", AF_INET, 25, 20, b"b.mx.test")]


def plan(strictness, anchors=b"/ca.pem"):
    return Plan(Policy(strictness, anchors), [Attempt(t) for t in targets()])


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
    assert p.after_ehlo(p.next_group()[0], WITH_TLS) == STARTTLS


def test_no_anchors_never_starttls():
    p = plan(2, anchors=None)
    assert p.after_ehlo(p.next_group()[0], WITH_TLS) == CLEAR
    assert p.exhausted() is None


def test_not_offered_strictness_0_goes_clear():
    p = plan(0)
    assert p.after_ehlo(p.next_group()[0], WITHOUT_TLS) == CLEAR
    assert p.reasons == []


def test_not_offered_strictness_1_skips_then_pass_2_in_cleartext():
    p = plan(1)
    for group in (p.next_group(), p.next_group()):
        assert p.after_ehlo(group[0], WITHOUT_TLS) == SKIP
    pass2 = p.next_group()
    assert p.pass_no == 2
    assert [a.target.ip for a in pass2] == ["127.0.0.2"]  # only the addresses that answered
    assert pass2[0].cleartext and pass2[0].note == failures.NO_TLS_NOTE
    assert p.after_ehlo(pass2[0], WITH_TLS) == CLEAR
    assert p.exhausted() is None


def test_strictness_1_later_tls_server_is_preferred():
    p = plan(1)
    assert p.after_ehlo(p.next_group()[0], WITHOUT_TLS) == SKIP
    assert p.after_ehlo(p.next_group()[0], WITH_TLS) == STARTTLS


def test_not_offered_strictness_2_skips_and_exhausted_says_why():
    p = plan(2)
    assert p.after_ehlo(p.next_group()[0], WITHOUT_TLS) == SKIP
    p.next_group()
    assert p.next_group() == [] and p.pass_no == 1
    failure = p.exhausted()
    assert isinstance(failure, failures.TLSRequired) and failure.letter == failures.Z
    assert b"127.0.0.2: no STARTTLS offered" in failure.text()
    assert b"tlsstrictness 2" in failure.text()


@pytest.mark.parametrize("strictness,expected", [(0, CLEAR), (1, SKIP), (2, SKIP)])
def test_starttls_refused(strictness, expected):
    p = plan(strictness)
    attempt = p.next_group()[0]
    assert p.after_starttls_refused(attempt, b"454-busy\n454 4.7.0 TLS not available\n") == expected
    if expected == SKIP:
        assert p.reasons == [(b"127.0.0.2", b"STARTTLS refused: 454 4.7.0 TLS not available")]


# --- handshake failures ---

def test_handshake_failure_strictness_0_reconnects_same_address_alone_with_note():
    p = plan(0)
    attempt, other = p.next_group()
    p.put_back([other])
    p.handshake_failed(attempt, b"certificate not trusted: x")
    retry = p.next_group()
    assert len(retry) == 1 and retry[0].target is attempt.target and retry[0].cleartext and retry[0].retry
    assert retry[0].note == b"sent in cleartext: the TLS handshake failed (certificate not trusted: x)"
    assert p.after_ehlo(retry[0], WITH_TLS) == CLEAR
    assert p.next_group() == [other]


def test_handshake_failure_strictness_1_goes_to_pass_2():
    p = plan(1)
    p.handshake_failed(p.next_group()[0], b"TLS handshake error: x")
    assert p.later == [targets()[0]]


def test_handshake_failure_strictness_2_is_a_reason():
    p = plan(2)
    p.handshake_failed(p.next_group()[0], b"certificate name mismatch: x")
    assert p.later == []
    assert b"127.0.0.2: certificate name mismatch: x" in p.exhausted().text()


@pytest.mark.parametrize("value,kind,why", [
    ("verify: certificate has expired", "verify", b"certificate not trusted: certificate has expired"),
    ("name: wanted mx.test", "name", b"certificate name mismatch: wanted mx.test"),
    ("timeout: 60 seconds", "timeout", b"TLS handshake timed out: 60 seconds"),
    ("closed: by peer", "closed", b"connection closed during the TLS handshake: by peer"),
    ("handshake: wrong version", "handshake", b"TLS handshake error: wrong version"),
    ("odd text \x01", "handshake", b"TLS handshake error: odd text ?"),
])
def test_tlsc_failure_kinds(value, kind, why):
    assert handshake_failure(value) == (kind, why)


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

def test_resume_round_trip():
    p = plan(1)
    a, b = p.next_group()
    p.give_up(a, b"no STARTTLS offered")
    p.todo.insert(0, Attempt(b.target, cleartext=True, note=b"a note; with, odd/bytes", retry=True))
    state, argv = chainargv.take_resume(["qmail-remote", chainargv.encode_resume(p), "host", "s", "r"])
    assert argv == ["qmail-remote", "host", "s", "r"]
    back = chainargv.decode_resume(state, p.policy)
    assert back.pass_no == 1 and back.later == p.later and back.reasons == p.reasons
    assert [(x.target, x.cleartext, x.note, x.retry) for x in back.todo] == [
        (x.target, x.cleartext, x.note, x.retry) for x in p.todo]


def test_resume_keeps_the_last_server_failure():
    p = plan(0)
    p.last_failure = failures.GreetingFailed(b"127.0.0.2", None)
    back = chainargv.decode_resume(chainargv.encode_resume(p)[len(chainargv.RESUME):], p.policy)
    assert (back.exhausted().letter, back.exhausted().text()) == (failures.Z, p.last_failure.text())
    p.last_failure = None
    assert chainargv.decode_resume(chainargv.encode_resume(p)[len(chainargv.RESUME):], p.policy).exhausted() is None


def test_no_resume_option_leaves_argv_alone():
    assert chainargv.take_resume(["qmail-remote", "--qremote-resum", "s", "r"]) == (
        None, ["qmail-remote", "--qremote-resum", "s", "r"])


@pytest.mark.parametrize("state", ["", "1;;;;", "1;127.0.0.1/25/0///;;", "x;127.0.0.1/25/0///;;;",
                                   "1;127.0.0.1/25/0/zz//;;;", "1;127.0.0.1/25/0//q/;;;",
                                   "1;999.0.0.1/25/0///;;;", "1;127.0.0.1/25/0///;;;4b", "1;127.0.0.1/25/0///;;;5a0"])
def test_malformed_resume_state(state):
    with pytest.raises((ValueError, IndexError)):
        chainargv.decode_resume(state, Policy())


# --- texts ---

def test_accepted_text_over_tls():
    text = b"127.0.0.2 accepted message.\nRemote host said: 250 ok\n"
    assert failures.accepted_text(text, b"TLSv1.3", b"TLS_AES_256_GCM_SHA384", True) == (
        b"127.0.0.2 accepted message. (TLSv1.3 verified, cipher TLS_AES_256_GCM_SHA384)\n"
        b"Remote host said: 250 ok\n")
    assert failures.accepted_text(text, b"TLSv1.2", None, False).startswith(
        b"127.0.0.2 accepted message. (TLSv1.2 unverified)\n")
    assert failures.accepted_text(text) == text
    assert failures.accepted_text(text, note=b"sent in cleartext: x").startswith(
        b"127.0.0.2 accepted message. (sent in cleartext: x)\n")
