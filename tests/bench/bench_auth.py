#!/usr/bin/env python3
"""Benchmark of SMTPS with SMTP AUTH beside STARTTLS without AUTH (issue 10): prints
figures, never passes or fails.

  .venv/bin/python tests/bench/bench_auth.py [--quick]

Needs root, Postfix and Cyrus SASL (tests/support/postfix_sasl.py; it says why when it
cannot run). Every route does TLS (control/trustanchors, tlsstrictness 0), so the
figures differ by AUTH and SMTPS alone. It installs its own copy of the chain, starts one private Postfix per
mechanism set, and measures the same 4 KB delivery through the chain (CPU of every
process of the chain, wall, peak RSS, with common.Launcher): over STARTTLS to the port
without AUTH, over SMTPS with PLAIN, with CRAM-MD5 and with SCRAM-SHA-256, and over
STARTTLS with SCRAM-SHA-256, each with its keys cached (run/qmail-remote/scram, the usual
case) and with the cache emptied before each delivery (cold: PBKDF2 runs). Then PBKDF2-HMAC-SHA-256 alone at the iteration count the
server asked for (Cyrus' default, 4096), which is most of what SCRAM costs the client.
"""

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, TOP)

from tests.bench import common  # noqa: E402
from tests.support.certs import PKI  # noqa: E402
from tests.support.postfix_sasl import SaslPostfix, sasl_available  # noqa: E402

SENDER = "sender@src.example"
USER, PASSWORD = "alice", "s3cret pass"
COLD = "cold keys: "  # SCRAM with its key cache emptied before each delivery


def main():
    parser = argparse.ArgumentParser(description="SMTPS + AUTH beside STARTTLS (prints figures).")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 8 if args.quick else 30
    reason = sasl_available()
    if reason:
        print("bench_auth: skipped: %s" % reason)
        return
    work = tempfile.mkdtemp(prefix="qremote-bench-auth-", dir="/tmp")
    os.chmod(work, 0o755)
    postfixes, launcher = [], None
    try:
        home_path = os.path.join(work, "qmail")
        bindir, interpreter = common.install_chain(home_path)
        home = common.Home(home_path)
        pki = PKI(os.path.join(work, "pki"))
        print("SMTPS + AUTH beside STARTTLS: interpreter %s, %d CPUs, load %.2f %.2f %.2f" % (
            interpreter, os.cpu_count(), *os.getloadavg()))
        launcher = common.Launcher(interpreter)

        def postfix(mechs):
            directory = tempfile.mkdtemp(dir=work)
            os.chmod(directory, 0o755)
            mta = SaslPostfix(directory, pki.server("127.0.0.1", "postfix.test"), users={USER: PASSWORD}, mechs=mechs)
            mta.__enter__()
            postfixes.append(mta)
            return mta

        plain, cram, scram = postfix(("PLAIN",)), postfix(("CRAM-MD5",)), postfix(("SCRAM-SHA-256",))
        cases = [
            ("STARTTLS, no AUTH", "starttls.example", "127.0.0.1:%d" % plain.noauth_port),
            ("STARTTLS + AUTH PLAIN", "plain-starttls.example", "127.0.0.1;%d|%s|%s" % (
                plain.starttls_port, USER, PASSWORD)),
            ("SMTPS, AUTH PLAIN", "plain.example", "127.0.0.1;s%d|%s|%s" % (plain.smtps_port, USER, PASSWORD)),
            ("SMTPS, AUTH CRAM-MD5", "cram.example", "127.0.0.1;s%d|%s|%s" % (cram.smtps_port, USER, PASSWORD)),
            ("SMTPS, AUTH SCRAM-SHA-256", "scram.example", "127.0.0.1;s%d|%s|%s" % (scram.smtps_port, USER,
                                                                                     PASSWORD)),
            ("STARTTLS + AUTH SCRAM-SHA-256", "scram-starttls.example", "127.0.0.1;%d|%s|%s" % (
                scram.starttls_port, USER, PASSWORD)),
            (COLD + "SMTPS, AUTH SCRAM-SHA-256", "scram-cold.example", "127.0.0.1;s%d|%s|%s" % (
                scram.smtps_port, USER, PASSWORD)),
            (COLD + "STARTTLS + AUTH SCRAM-SHA-256", "scram-starttls-cold.example", "127.0.0.1;%d|%s|%s" % (
                scram.starttls_port, USER, PASSWORD)),
        ]
        # STARTTLS for every route (as a site that does TLS): the figures then differ by AUTH and SMTPS only
        home.control("trustanchors", pki.ca_file + "\n")
        home.control("tlsstrictness", "0\n")
        home.control("smtproutes", "".join("%s:%s\n" % (domain, relay) for _, domain, relay in cases))
        small = os.path.join(work, "message-4KB")
        common.write_message(small, 4096)

        cache = os.path.join(home_path, "run", "qmail-remote", "scram")

        def deliver(domain, label=""):
            argv = [os.path.join(bindir, "qmail-remote"), domain, SENDER, "rcpt@%s" % domain]
            if label.startswith(COLD):
                # SCRAM's keys derived again (PBKDF2, _hashlib: scramcache.py); the cache put
                # back after, for the warm cases (Cyrus' salt differs by port: one entry each)
                os.rename(cache, cache + ".kept")
                try:
                    measured = launcher.run(argv, common.Home.env(), small)
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
                    os.rename(cache + ".kept", cache)
            else:
                measured = launcher.run(argv, common.Home.env(), small)
            common.require_delivered(measured, 1, "4 KB to %s" % domain)
            return measured

        for _, domain, _ in cases:  # compiles the cdb, warms the caches
            deliver(domain)
        print("\n[1] One 4 KB message, %d deliveries each, the cases interleaved round by round (a shared "
              "machine's load drifts); CPU of the whole chain" % rounds)
        runs = {label: [] for label, _, _ in cases}
        for _ in range(rounds):
            for label, domain, _ in cases:
                runs[label].append(deliver(domain, label))
        base = None
        for label, _, _ in cases:
            cpus = [r.cpu * 1000 for r in runs[label]]
            cpu = common.median(cpus)
            base = cpu if base is None else base
            print("  %-42s CPU %.1f ms (median; mean %.1f)%s, wall %.1f ms, peak RSS %.1f MiB" % (
                label, cpu, common.mean(cpus), "" if label == cases[0][0] else ", %+.1f ms" % (cpu - base),
                common.median([r.wall * 1000 for r in runs[label]]), max(r.maxrss_mib for r in runs[label])))

        print("\n[2] PBKDF2-HMAC-SHA-256 alone (SCRAM's salted password), best of 20")
        for iterations in (4096, 10000, 100000):
            best = float("inf")
            for _ in range(20):
                start = time.process_time()
                hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), b"0123456789abcdef", iterations)
                best = min(best, time.process_time() - start)
            print("  %6d iterations: %.2f ms CPU" % (iterations, best * 1000))
        print("\nload average at the end: %.2f %.2f %.2f" % os.getloadavg())
    finally:
        for mta in postfixes:
            mta.__exit__(None, None, None)
        if launcher is not None:
            launcher.close()
        common.remove(work)


if __name__ == "__main__":
    main()
