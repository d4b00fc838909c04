#!/usr/bin/env python3
"""Benchmark of QMTP beside SMTP on the same messages (issue 12): prints figures,
never passes or fails.

  .venv/bin/python tests/bench/bench_qmtp.py [--quick]

It installs its own copy of the chain (package/install, as bench_chain.py), routes
smtp.example to common.SinkServer through control/smtproutes and qmtp.example to a
QMTP sink through control/qmtproutes, and measures the same deliveries of both with
the launcher of common.py: CPU and wall per 4 KB delivery, the 50 MB message (wall,
CPU, peak RSS), and 10 recipients through a 50 ms delay line, where the round trips
show (SMTP with PIPELINING: greeting, EHLO, MAIL..DATA, the dot; QMTP: one).
"""

import argparse
import os
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, TOP)

from tests.bench import common  # noqa: E402
from tests.bench.delayproxy import DelayProxy  # noqa: E402
from tests.support.qmtpserver import ScriptedQMTP  # noqa: E402

SENDER = "sender@src.example"
DELAY = 0.05


def recipients_in(field):
    """How many recipient netstrings the package's third netstring holds."""
    count, i = 0, 0
    while i < len(field):
        colon = field.index(b":", i)
        i = colon + 1 + int(field[i:colon]) + 1
        count += 1
    return count


def main():
    parser = argparse.ArgumentParser(description="QMTP beside SMTP (prints figures).")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds_small, rounds_big = (10, 1) if args.quick else (50, 3)
    work = common.scratch_dir()
    servers, launcher = [], None
    try:
        home_path = os.path.join(work, "qmail")
        bindir, interpreter = common.install_chain(home_path)
        home = common.Home(home_path)
        print("QMTP beside SMTP: interpreter %s, %d CPUs, load %.2f %.2f %.2f" % (
            interpreter, os.cpu_count(), *os.getloadavg()))
        launcher = common.Launcher(interpreter)
        smtp = common.SinkServer(pipelining=True)
        # the QMTP sink answers as many K as the package names recipients (1 or 10 here)
        qmtp = ScriptedQMTP(reply=lambda session: b"2:Ko," * recipients_in(session.recipients_field))
        smtp_delayed, qmtp_delayed = DelayProxy(smtp.port, DELAY), DelayProxy(qmtp.port, DELAY)
        servers = [smtp, qmtp, smtp_delayed, qmtp_delayed]
        home.control("smtproutes", "smtp.example:[127.0.0.1]:%d\nsmtp-delayed.example:[127.0.0.1]:%d\n" % (
            smtp.port, smtp_delayed.port))
        home.control("qmtproutes", "qmtp.example:[127.0.0.1]:%d\nqmtp-delayed.example:[127.0.0.1]:%d\n" % (
            qmtp.port, qmtp_delayed.port))
        small = os.path.join(work, "message-4KB")
        common.write_message(small, 4096)

        def deliver(domain, message, recipients=1):
            argv = [os.path.join(bindir, "qmail-remote"), domain, SENDER] + [
                "rcpt%d@%s" % (i, domain) for i in range(recipients)]
            measured = launcher.run(argv, common.Home.env(), message)
            common.require_delivered(measured, recipients, "%s to %s" % (os.path.basename(message), domain))
            return measured

        for domain in ("smtp.example", "qmtp.example"):  # compiles the cdbs, warms the caches
            deliver(domain, small)

        print("\n[1] One 4 KB message, %d deliveries each" % rounds_small)
        for protocol in ("smtp", "qmtp"):
            runs = [deliver(protocol + ".example", small) for _ in range(rounds_small)]
            cpus = [r.cpu * 1000 for r in runs]
            print("  %-4s CPU per delivery %.1f ms (median %.1f), wall %.1f ms, peak RSS %.1f MiB" % (
                protocol.upper(), common.mean(cpus), common.median(cpus),
                common.mean([r.wall * 1000 for r in runs]), max(r.maxrss_mib for r in runs)))

        print("\n[2] One 50 MB message (76-char lines, some leading dots), best of %d" % rounds_big)
        big = os.path.join(work, "message-50MB")
        size = common.write_message(big, 50 * 1000 * 1000, seed=50)
        try:
            for protocol in ("smtp", "qmtp"):
                runs = [deliver(protocol + ".example", big) for _ in range(rounds_big)]
                best = min(runs, key=lambda r: r.wall)
                print("  %-4s %.2f s (%.0f MB/s), CPU %.2f s, peak RSS %.1f MiB" % (
                    protocol.upper(), best.wall, size / best.wall / 1e6, best.cpu, max(r.maxrss_mib for r in runs)))
        finally:
            os.unlink(big)

        print("\n[3] 10 recipients, 4 KB, every server reply delayed %d ms (a distant server)" % (DELAY * 1000))
        for protocol, proxy in (("smtp", smtp_delayed), ("qmtp", qmtp_delayed)):
            before = proxy.bursts
            runs = [deliver(protocol + "-delayed.example", small, 10) for _ in range(3)]
            print("  %-4s wall %.0f ms, %.1f reply bursts per delivery" % (
                protocol.upper(), common.median([r.wall * 1000 for r in runs]), (proxy.bursts - before) / 3.0))
        print("\nload average at the end: %.2f %.2f %.2f" % os.getloadavg())
    finally:
        for server in servers:
            server.stop()
        if launcher is not None:
            launcher.close()
        common.remove(work)


if __name__ == "__main__":
    main()
