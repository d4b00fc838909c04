"""The fault matrix over STARTTLS (faultserver.tls_matrix): the STARTTLS reply (every
fault) and the handshake (reset, close, stall, 1 byte per second, garbage, cleartext
injected behind the 220) at tlsstrictness 0, 1 and 2; and the stages inside TLS (EHLO
again, MAIL, each RCPT, DATA, the body, the final dot) with every fault at 0 and a
representative subset at 2, so that K/Z/D and "Possible duplicate!" are proved through
tlsc-io's relay too. The rules are faultserver.expected_tls (doc/starttls.html).

Same method as test_faults.py: the cases run in parallel threads once per module, each
test then checks its own case (report, the server's connections, whether the message
went over TLS, K only for a message the server accepted, the time bound, peak memory).
The server strikes the first connection only: a cleartext retry after a failed
handshake must then succeed, and no connection after the first may do TLS.
"""

import os

import pytest

from tests.chain.test_faults import BOUND, MAX_RSS_KB, MESSAGE, RECIPIENTS, TIMEOUT, run_cases
from tests.support.chain import Home, decode_reports
from tests.support.faultserver import (message_files, FAULTS, SLOW_FAULTS, STAGES_TLS, STRICTNESSES,
                                      TLS_HANDSHAKE_FAULTS, FaultServer, expected_tls, run_chain, tls_matrix)

CASES = tls_matrix()


def case_id(case):
    return "%s-%s-s%d" % case


class Outcome:
    __slots__ = ("reports", "run", "sessions", "error")

    def __init__(self, reports=None, run=None, sessions=(), error=None):
        self.reports, self.run, self.sessions, self.error = reports, run, sessions, error


def deliver_with_tls_fault(home, certificate, anchors, stage, fault, level, message_path):
    home.control("timeoutremote", "%d\n" % TIMEOUT)
    home.control("timeoutconnect", "%d\n" % TIMEOUT)  # also bounds the handshake
    home.control("trustanchors", anchors + "\n")
    home.control("tlsstrictness", "%d\n" % level)
    with FaultServer((stage, fault), tls=certificate, once=True) as server:
        host, port = server.address_for()
        home.route("example.org:%s:%d" % (host, port))
        run = run_chain(home, "example.org", "sender@src.example", RECIPIENTS, message_path)
        sessions = list(server.sessions)
    try:
        reports = decode_reports(run.output)
    except AssertionError as error:
        return Outcome(run=run, sessions=sessions, error=str(error))
    return Outcome(reports, run, sessions)


@pytest.fixture(scope="module")
def outcomes(installed, pki, tmp_path_factory):
    if not os.path.exists(os.path.join(installed, "tlsc-io")):
        pytest.skip("tlsc-io is not installed")
    top = tmp_path_factory.mktemp("faults-tls")
    certificate = pki.server("127.0.0.1")  # an IP route: verified at 2 by its iPAddress name
    small, big = message_files(str(top), MESSAGE)

    def one(case):
        stage, fault, level = case
        home = Home(os.path.join(str(top), case_id(case)), installed)
        try:
            return case, deliver_with_tls_fault(home, certificate, pki.ca_file, stage, fault, level,
                                                big if stage == "body" else small)
        except Exception as error:  # noqa: BLE001 - reported by the case's own test
            return case, Outcome(error="%s: %s" % (type(error).__name__, error))

    slow = SLOW_FAULTS + ("inject", "garbage")  # these wait for a timeout or the client's own close
    return run_cases("TLS fault matrix", CASES, one, lambda case: case[1] in slow, case_id)


@pytest.mark.parametrize("stage, fault, level", CASES, ids=[case_id(case) for case in CASES])
def test_tls_fault(outcomes, stage, fault, level):
    outcome = outcomes[(stage, fault, level)]
    assert outcome.error is None, outcome.error
    want = expected_tls(stage, fault, level)
    problem = want.check(outcome.reports) or want.check_sessions(outcome.sessions)
    assert problem is None, "%s: %r" % (problem, outcome.reports)
    assert outcome.run.status == 0
    # never a K for a message no server accepted with a well-formed 2xx to the dot
    if outcome.reports[-1][0] == "K":
        assert any(session.accepted for session in outcome.sessions)
    assert outcome.run.elapsed < BOUND, "took %.1f s" % outcome.run.elapsed
    assert outcome.run.maxrss_kb < MAX_RSS_KB, "peak RSS %d KiB" % outcome.run.maxrss_kb


def test_tls_matrix_is_complete():
    """STARTTLS meets every fault and the handshake every handshake fault at every
    strictness; every stage inside TLS is covered; the rules answer every case."""
    assert {(fault, level) for stage, fault, level in CASES if stage == "starttls"} == {
        (fault, level) for fault in FAULTS for level in STRICTNESSES}
    assert {(fault, level) for stage, fault, level in CASES if stage == "handshake"} == {
        (fault, level) for fault in TLS_HANDSHAKE_FAULTS for level in STRICTNESSES}
    inner = set(STAGES_TLS[2:]) | {"mail", "rcpt1", "rcpt2", "data", "body", "final"}
    assert {stage for stage, _, _ in CASES} == set(STAGES_TLS) | inner
    assert {fault for stage, fault, level in CASES if stage in inner and level == 0} == set(FAULTS)
    assert {level for stage, _, level in CASES if stage in inner} == {0, 2}
    assert all(expected_tls(*case) is not None for case in CASES)
