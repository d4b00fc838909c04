"""The fault matrix: every stage x every fault (tests/support/faultserver.py), with and
without PIPELINING and without ESMTP (faultserver.MODES), through the installed plaintext chain. Each case asserts the report
against the rules (faultserver.expected), that a K came only for a message the server
accepted, that the delivery ended within a generous bound over timeoutremote, and the
peak memory of the chain.

The cases run in parallel threads once per module (the stall cases wait for the timeout);
each test then checks its own case, so a failure names its mode, stage and fault.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.chain import Home, decode_reports
from tests.support.faultserver import (EARLY_MESSAGE_SIZE, message_files, MODES, SLOW_FAULTS, FaultServer, Expected,
                                      early_message_file, expected, matrix, run_chain)

TIMEOUT = 2          # control/timeoutremote and timeoutconnect for every case
BOUND = TIMEOUT * 4 + 20  # seconds: against hangs, not a speed test (two cores, many cases at once)
MAX_RSS_KB = 64 * 1024
MESSAGE = b"Subject: fault matrix\n\nhello\n.dot\n"
RECIPIENTS = ("one@example.org", "two@example.org")
CASES = [(mode, stage, fault) for mode in MODES for stage, fault in matrix()]
WORKERS = 8


class Outcome:
    __slots__ = ("reports", "run", "accepted", "error")

    def __init__(self, reports=None, run=None, accepted=False, error=None):
        self.reports, self.run, self.accepted, self.error = reports, run, accepted, error


def deliver_with_fault(home, mode, stage, fault, message_path):
    home.control("timeoutremote", "%d\n" % TIMEOUT)
    home.control("timeoutconnect", "%d\n" % TIMEOUT)
    with FaultServer((stage, fault), mode=mode) as server:
        host, port = server.address_for()
        home.route("example.org:%s:%d" % (host, port))
        run = run_chain(home, "example.org", "sender@src.example", RECIPIENTS, message_path)
        accepted = any(s.accepted for s in server.sessions)
    try:
        reports = decode_reports(run.output)
    except AssertionError as error:
        return Outcome(run=run, error=str(error))
    return Outcome(reports, run, accepted)


@pytest.fixture(scope="module")
def outcomes(installed, tmp_path_factory):
    top = tmp_path_factory.mktemp("faults")
    small, big = message_files(str(top), MESSAGE)

    def one(case):
        mode, stage, fault = case
        home = Home(os.path.join(str(top), "%s-%s-%s" % case), installed)
        try:
            return case, deliver_with_fault(home, mode, stage, fault, big if stage == "body" else small)
        except Exception as error:  # noqa: BLE001 - reported by the case's own test
            return case, Outcome(error="%s: %s" % (type(error).__name__, error))

    return run_cases("fault matrix", CASES, one, lambda case: case[2] in SLOW_FAULTS, "-".join)


def run_cases(label, cases, one, is_slow, case_id):
    """{case: Outcome}: one(case) -> (case, Outcome) for every case, WORKERS at a time, the
    slow cases first so they overlap with the rest; prints the figures (shown with -s)."""
    order = sorted(cases, key=lambda case: not is_slow(case))
    started = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        results = dict(pool.map(one, order))
    runs = [(o.run, case) for case, o in results.items() if o.run is not None]
    if runs:  # figures, not assertions
        rss, rss_case = max((run.maxrss_kb, case) for run, case in runs)
        slowest, slow_case = max((run.elapsed, case) for run, case in runs)
        print("\n%s: %d cases in %.0f s; chain peak RSS %.1f MiB (%s); slowest %.1f s (%s)" % (
            label, len(results), time.monotonic() - started, rss / 1024, case_id(rss_case), slowest,
            case_id(slow_case)))
    return results


@pytest.mark.parametrize("mode, stage, fault", CASES, ids=["%s-%s-%s" % case for case in CASES])
def test_fault(outcomes, mode, stage, fault):
    outcome = outcomes[(mode, stage, fault)]
    assert outcome.error is None, outcome.error
    want = expected(stage, fault)
    problem = want.check(outcome.reports)
    assert problem is None, "%s: %r" % (problem, outcome.reports)
    assert outcome.run.status == 0
    # never a K for a message this server did not accept with a well-formed 2xx to the dot
    if outcome.reports[-1][0] == "K":
        assert outcome.accepted
    assert outcome.run.elapsed < BOUND, "took %.1f s" % outcome.run.elapsed
    assert outcome.run.maxrss_kb < MAX_RSS_KB, "peak RSS %d KiB" % outcome.run.maxrss_kb


@pytest.mark.parametrize("mode", ("pipelined", "lockstep"))
@pytest.mark.parametrize("fault", ("reset", "close"))
def test_drop_early_in_a_one_write_body_is_no_possible_duplicate(installed, tmp_path, mode, fault):
    """A 100 KiB message goes in one write with its final dot; the server drops the
    connection after 1 KiB of it, while the client's write is still blocked far before
    the dot: a plain "connection died", no "Possible duplicate!" (issue 8, item 8).
    A drop after the dot (the matrix's "final" stage) still says it."""
    home = Home(str(tmp_path / "home"), installed)
    path = early_message_file(str(tmp_path))
    assert os.path.getsize(path) <= EARLY_MESSAGE_SIZE <= 256 << 10  # one read, one write with the dot
    outcome = deliver_with_fault(home, mode, "body_early", fault, path)
    assert outcome.error is None, outcome.error
    problem = Expected("rr", "Z", b"but connection died.", duplicate=False).check(outcome.reports)
    assert problem is None, "%s: %r" % (problem, outcome.reports)
    assert outcome.run.status == 0 and not outcome.accepted


def test_matrix_is_complete():
    """Every stage and every fault appears; the rules give an answer for each case."""
    from tests.support.faultserver import FAULTS, STAGES
    assert {stage for _, stage, _ in CASES} == set(STAGES)
    assert {fault for _, _, fault in CASES} == set(FAULTS)
    assert all(expected(stage, fault) is not None for _, stage, fault in CASES)
    assert len(CASES) >= 3 * 90
