#!/usr/bin/env python3
"""Soak: many deliveries through the installed chain, several at a time, each against a
server injecting a fault drawn at random from the fault matrix (tests/support/faultserver.py).

Every report must match the fault's expected class (faultserver.expected), no K may come
for a message the server did not accept with a 2xx to the final dot, and at the end this
process holds as many descriptors, threads and child processes as before, its memory has
not grown without bound, and no chain process is left. Prints the seed, the counts per
outcome and the figures.

    tests/soak/soak.py                       # 2000 deliveries, 16 at a time, a random seed
    tests/soak/soak.py -n 100 -j 8 --seed 42
    tests/soak/soak.py --tls-share=0.3       # 30% over STARTTLS, faults from the TLS cases
With --tls-share, that share of the deliveries goes to a server offering STARTTLS, with
control/trustanchors set and a case drawn from faultserver.tls_matrix() (the STARTTLS
reply, the handshake, the stages inside TLS; tlsstrictness 0, 1 or 2 as the case says),
judged by faultserver.expected_tls (also: how many connections, whether the message went
over TLS). Certificates are generated with trustme, as the tests do.
Installs the chain into a scratch tree with package/install unless --bindir is given.
Exit status 0 when everything matched, 1 otherwise.
"""

import argparse
import collections
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if TOP not in sys.path:
    sys.path.insert(0, TOP)

from tests.support.chain import Home, decode_reports  # noqa: E402
from tests.support.faultserver import (BIG_MESSAGE_SIZE, MODES, FaultServer, expected, expected_tls,  # noqa: E402
                                      matrix, tls_matrix)

RECIPIENTS = ("one@example.org", "two@example.org")
MAX_RSS_KB = 64 * 1024  # peak RSS of the chain for one delivery
MAX_GROWTH_KB = 16 * 1024  # growth of this process's RSS over the second half of the soak


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def rss_kb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children():
    """Pids whose parent is this process (zombies included)."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2:].split()[1]) == me:
                found.append(int(name))
    return found


def chain_processes(bindir):
    """Live processes running a program from bindir (a left-over chain process)."""
    found = []
    prefix = os.fsencode(os.path.join(bindir, ""))
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if any(arg.startswith(prefix) for arg in argv[:3]):  # the interpreter, then the script
                found.append(int(name))
    return found


class Result:
    def __init__(self, seed):
        self.seed = seed
        self.outcomes = collections.Counter()   # "K", "Z", "Z duplicate", "D" ...
        self.by_fault = collections.Counter()   # fault kind -> deliveries
        self.by_stage = collections.Counter()   # stage -> deliveries
        self.by_mode = collections.Counter()    # server mode -> deliveries
        self.mismatches = []
        self.max_rss_kb = 0
        self.max_elapsed = 0.0
        self.deliveries = 0
        self.figures = {}
        self.leaks = []

    @property
    def ok(self):
        return not self.mismatches and not self.leaks

    def summary(self):
        lines = ["seed %d: %d deliveries, %d mismatches" % (self.seed, self.deliveries, len(self.mismatches))]
        lines.append("outcomes: " + ", ".join("%s %d" % item for item in sorted(self.outcomes.items())))
        lines.append("faults: " + ", ".join("%s %d" % item for item in sorted(self.by_fault.items())))
        lines.append("stages: " + ", ".join("%s %d" % item for item in sorted(self.by_stage.items())))
        lines.append("modes: " + ", ".join("%s %d" % item for item in sorted(self.by_mode.items())))
        lines.append("chain peak RSS %.1f MiB, slowest delivery %.1f s" % (self.max_rss_kb / 1024,
                                                                           self.max_elapsed))
        lines.append("before/after: " + ", ".join("%s %s" % item for item in sorted(self.figures.items())))
        lines.extend("LEAK: " + leak for leak in self.leaks)
        lines.extend("MISMATCH: " + m for m in self.mismatches[:20])
        return "\n".join(lines)


def soak(bindir, workdir, deliveries=2000, parallel=16, seed=None, timeout=1, log=print, check_growth=True,
         tls_share=0.0):
    """Run the soak; returns a Result (result.ok, result.summary()).

    check_growth: judge this process's RSS growth over the second half (meaningful
    only for a long soak: the allocator is still warming up in the first hundreds).
    tls_share: the fraction of deliveries made over STARTTLS with a TLS case.
    """
    from tests.support.faultserver import run_chain

    seed = random.randrange(1 << 32) if seed is None else seed
    log("soak: seed %d, %d deliveries, %d at a time, timeoutremote %d, TLS share %.2f" % (
        seed, deliveries, parallel, timeout, tls_share))
    rng = random.Random(seed)
    cases = matrix()
    tls_cases = tls_matrix()
    # a plan entry: ((stage, fault), mode) in cleartext, or ((stage, fault), "tls-sN") over STARTTLS
    plan = []
    for _ in range(deliveries):
        if rng.random() < tls_share:
            stage, fault, level = rng.choice(tls_cases)
            plan.append(((stage, fault), "tls-s%d" % level))
        else:
            plan.append((rng.choice(cases), rng.choice(MODES)))
    result = Result(seed)
    certificate = anchors = None
    if tls_share > 0:
        from tests.support.certs import PKI
        pki = PKI(os.path.join(workdir, "pki"))
        certificate, anchors = pki.server("127.0.0.1"), pki.ca_file

    small = os.path.join(workdir, "small")
    with open(small, "wb") as out:
        out.write(b"Subject: soak\n\nhello\n.dot\n")
    big = os.path.join(workdir, "big")
    with open(big, "wb") as out:
        line = b"y" * 76 + b"\n"
        out.write(b"Subject: big\n\n" + line * (BIG_MESSAGE_SIZE // len(line)))

    slots = []
    for i in range(parallel):
        home = Home(os.path.join(workdir, "slot%d" % i), bindir)
        home.control("timeoutremote", "%d\n" % timeout)
        home.control("timeoutconnect", "%d\n" % timeout)
        server = FaultServer(patience=timeout * 3 + 5, tls=certificate)
        server.refusing()
        server.never_accepting()
        slots.append((home, server))

    work = queue.Queue()
    for number, case in enumerate(plan):
        work.put((number, case))
    lock = threading.Lock()

    def worker(home, server):
        while True:
            try:
                number, ((stage, fault), mode) = work.get_nowait()
            except queue.Empty:
                return
            tls_level = int(mode[5:]) if mode.startswith("tls-") else None
            server.fault = (stage, fault)
            server.mode = "pipelined" if tls_level is not None else mode
            server.tls_offered = server.once = tls_level is not None
            home.control("trustanchors", anchors + "\n" if tls_level is not None else "")
            home.control("tlsstrictness", "%d\n" % (tls_level or 0))
            host, port = server.address_for()
            home.route("example.org:%s:%d" % (host, port))
            first = len(server.sessions)
            try:
                run = run_chain(home, "example.org", "sender@src.example", RECIPIENTS,
                                big if stage == "body" else small, limit=timeout * 10 + 60)
                problem = None
                try:
                    reports = decode_reports(run.output)
                except AssertionError as error:
                    reports, problem = None, str(error)
                if reports is not None:
                    sessions = server.sessions[first:]
                    if tls_level is None:
                        problem = expected(stage, fault).check(reports)
                    else:
                        rules = expected_tls(stage, fault, tls_level)
                        problem = rules.check(reports) or rules.check_sessions(sessions)
                    if reports[-1][0] == "K" and not any(s.accepted for s in sessions):
                        problem = "K for a message the server did not accept"
                if problem is None and run.maxrss_kb >= MAX_RSS_KB:
                    problem = "chain peak RSS %d KiB" % run.maxrss_kb
                server.wait_done(timeout + 10)
            except Exception as error:  # noqa: BLE001 - a mismatch to report, not a crash
                reports, run, problem = None, None, "%s: %s" % (type(error).__name__, error)
            with lock:
                result.deliveries += 1
                result.by_fault[fault] += 1
                result.by_stage[stage] += 1
                result.by_mode[mode] += 1
                if reports:
                    letter, text = reports[-1]
                    result.outcomes[letter + (" duplicate" if b"Possible duplicate!" in text else "")] += 1
                if run is not None:
                    result.max_rss_kb = max(result.max_rss_kb, run.maxrss_kb)
                    result.max_elapsed = max(result.max_elapsed, run.elapsed)
                if problem:
                    result.mismatches.append("#%d %s/%s/%s: %s %r" % (number, mode, stage, fault, problem,
                                                                       reports and reports[-1]))
                if result.deliveries % max(1, deliveries // 10) == 0:
                    samples.append(rss_kb())
                if result.deliveries % 250 == 0:
                    log("  %d done" % result.deliveries)

    samples = []
    before = {"fds": fd_count(), "threads": threading.active_count(), "children": len(children()),
              "rss_kb": rss_kb()}
    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=slot) for slot in slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for _, server in slots:
        server.wait_done(timeout + 10)
    time.sleep(1.0)  # server threads notice their clients are gone
    after = {"fds": fd_count(), "threads": threading.active_count(), "children": len(children()),
             "rss_kb": rss_kb()}
    for _, server in slots:
        server.stop()
    for key in before:
        result.figures[key] = "%d/%d" % (before[key], after[key])
    result.figures["seconds"] = "%.0f" % elapsed
    for key in ("fds", "threads", "children"):
        # a leak grows; one fewer is something the process held before the soak (in pytest,
        # an earlier test's socket the garbage collector closed meanwhile: seen on 3.13)
        if after[key] > before[key]:
            result.leaks.append("%s %d before, %d after" % (key, before[key], after[key]))
    # the allocator's arenas fill up during the first deliveries; a leak keeps growing
    result.figures["rss_kb_every_tenth"] = "/".join("%d" % kb for kb in samples)
    half = samples[len(samples) // 2 - 1] if len(samples) >= 2 else before["rss_kb"]
    growth = after["rss_kb"] - half
    if check_growth and growth > MAX_GROWTH_KB:
        result.leaks.append("RSS grew by %d KiB over the second half" % growth)
    left = chain_processes(bindir)
    if left:
        result.leaks.append("chain processes left: %r" % left)
    return result


def install(tree):
    subprocess.run([sys.executable, os.path.join(TOP, "package", "install"), "--create", "--qmailhome", tree],
                   check=True, stdout=subprocess.DEVNULL)
    return os.path.join(tree, "bin")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--deliveries", type=int, default=2000)
    parser.add_argument("-j", "--parallel", type=int, default=16)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--timeout", type=int, default=1, help="control/timeoutremote and timeoutconnect")
    parser.add_argument("--bindir", help="an installed chain's bin directory (default: install one)")
    parser.add_argument("--tls-share", type=float, default=0.0,
                        help="fraction of deliveries over STARTTLS, with faults of the TLS cases (0..1)")
    args = parser.parse_args()
    if not 0 <= args.tls_share <= 1:
        parser.error("--tls-share must be between 0 and 1")
    workdir = tempfile.mkdtemp(prefix="qremote-soak-")
    try:
        bindir = args.bindir or install(os.path.join(workdir, "tree"))
        result = soak(bindir, workdir, args.deliveries, args.parallel, args.seed, args.timeout,
                      tls_share=args.tls_share)
        print(result.summary())
        return 0 if result.ok else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
