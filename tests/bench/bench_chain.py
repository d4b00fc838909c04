#!/usr/bin/env python3
"""Benchmark of the delivery chain (issue 2): prints figures, never passes or fails.

  python3 tests/bench/bench_chain.py [--quick] [--json] [--size-pass]

It installs its own copy of the chain with package/install into a temporary qmail
tree (the production layout: commands run as `#!python3 -IS`), routes example.org to
loopback sink servers through control/smtproutes, and measures deliveries forked from
a small launcher (see common.py). Each figure is printed on one line with its target
(issue 2) and the C originals' figure on the same machine kind
(/work/shared/reference/figures.md). See README.md for what each figure means.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, TOP)

from tests.bench import common  # noqa: E402
from tests.bench.delayproxy import DelayProxy  # noqa: E402

SENDER = "sender@src.example"
DELAY = 0.05
RSS_TARGET_MIB = 32
BIG_TARGET_S = 1.7
RT_TARGET = 6


class Figures:
    """Collects figures; prints each as it comes (text mode) or all at the end (--json)."""

    def __init__(self, as_json):
        self.as_json = as_json
        self.items = []

    def say(self, text):
        if not self.as_json:
            print(text, flush=True)

    def add(self, key, label, value, unit, target="", reference="", meets=None, **extra):
        self.items.append({"key": key, "label": label, "value": round(value, 4), "unit": unit,
                           "target": target, "reference": reference, "meets_target": meets, "extra": extra})
        if self.as_json:
            return
        if isinstance(value, int):
            shown = "%d" % value
        else:
            shown = ("%.1f" % value) if unit in ("ms", "MiB", "round trips") else ("%.3f" % value)
        line = "  %-46s %9s %-12s " % (label, shown, unit)
        notes = []
        if extra:
            notes.append(", ".join("%s %s" % (k.replace("_", " "), _fmt(v)) for k, v in extra.items()))
        if target:
            notes.append("target %s%s" % (target, "" if meets is None else (" [meets]" if meets else " [MISSES]")))
        if reference:
            notes.append("ref: " + reference)
        print(line + " | ".join(notes), flush=True)


def _fmt(value):
    if not isinstance(value, float):
        return str(value)
    return ("%.0f" % value) if abs(value) >= 100 else ("%.3g" % value)


def run_many(launcher, count, argv, env, stdin_path, connect=None, check=None):
    results = []
    for _ in range(count):
        measured = launcher.run(argv, env, stdin_path, connect)
        if check:
            check(measured)
        results.append(measured)
    return results


def cpu_ms(results):
    return [r.cpu * 1000.0 for r in results]


def context_figures(figures, launcher, interpreter, libdir, message, rounds):
    figures.say("Context: the wrapper and Python's own floor (same launcher, same interpreter)")
    env = common.Home.env()
    true = shutil.which("true") or "/bin/true"
    wrapper = run_many(launcher, rounds, [true], env, message)
    figures.add("wrapper_cpu", "wrapper overhead: fork+exec /bin/true", common.mean(cpu_ms(wrapper)), "ms",
                reference="figures.md: about 6 ms of wrapper in each C figure", rss_floor_MiB=max(r.maxrss_mib for r in wrapper))
    floor = run_many(launcher, rounds, [interpreter, "-IS", "-c", "pass"], env, message)
    figures.add("python_floor_cpu", "python3 -IS -c pass", common.mean(cpu_ms(floor)), "ms",
                reference="figures.md: 8-11 ms", peak_RSS_MiB=max(r.maxrss_mib for r in floor))
    with_site = run_many(launcher, rounds, [interpreter, "-I", "-c", "pass"], env, message)
    figures.add("python_site_cpu", "python3 -I -c pass (site on, as pip's)",
                common.mean(cpu_ms(with_site)), "ms", reference="figures.md: about 40 ms",
                peak_RSS_MiB=max(r.maxrss_mib for r in with_site))
    # idna: what a delivery to a non-ASCII domain loads on top (qremote.hostname, IDNA 2008)
    for key, module, label in (("import_remote", "qremote.programs.qmail_remote", "qmail_remote"),
                               ("import_io", "qremote.programs.qmail_remote_io", "qmail_remote_io"),
                               ("import_idna", "idna", "idna (non-ASCII names only)")):
        code = "import sys; sys.path.insert(0, %r); import %s" % (libdir, module)
        imported = run_many(launcher, rounds, [interpreter, "-IS", "-c", code], env, message)
        figures.add(key + "_cpu", "startup+imports only: " + label, common.mean(cpu_ms(imported)), "ms",
                    peak_RSS_MiB=max(r.maxrss_mib for r in imported))
    return common.mean(cpu_ms(wrapper)), common.mean(cpu_ms(floor))


def small_delivery_figures(figures, launcher, bindir, work, sink, message, rounds):
    figures.say("\n[1] One 4 KB message, IP route example.org:[127.0.0.1]:PORT, %d deliveries" % rounds)
    env = common.Home.env()
    argv = [os.path.join(bindir, "qmail-remote"), "example.org", SENDER, "rcpt@example.org"]
    results = run_many(launcher, rounds, argv, env, message,
                       check=lambda m: common.require_delivered(m, 1, "the 4 KB message"))
    cpus = cpu_ms(results)
    peak = max(r.maxrss_mib for r in results)
    figures.add("cpu_per_delivery", "CPU per delivery, whole chain (user+sys)", common.mean(cpus), "ms",
                target="as low as possible", reference="stock 8 ms (2 ms w/o wrapper), skarnet 9 ms",
                median=common.median(cpus), min=min(cpus), user_ms=common.mean([r.user * 1000 for r in results]),
                sys_ms=common.mean([r.sys * 1000 for r in results]))
    figures.add("wall_per_delivery", "wall time per delivery", common.mean([r.wall * 1000 for r in results]), "ms",
                median=common.median([r.wall * 1000 for r in results]))
    figures.add("rss_small", "peak RSS of a delivery (max over runs)", peak, "MiB",
                target="< %d MiB" % RSS_TARGET_MIB, meets=peak < RSS_TARGET_MIB, reference="under 3 MB")

    # qmail-remote alone: a copy of the command beside a qmail-remote-io that is /bin/true
    split = os.path.join(work, "bin-split")
    os.makedirs(split, exist_ok=True)
    shutil.copy2(os.path.join(bindir, "qmail-remote"), os.path.join(split, "qmail-remote"))
    os.symlink(shutil.which("true") or "/bin/true", os.path.join(split, "qmail-remote-io"))
    argv_split = [os.path.join(split, "qmail-remote")] + argv[1:]

    def check_split(measured):
        if measured.status != 0 or measured.output:
            raise SystemExit("bench: qmail-remote alone misbehaved: %r" % measured.output[:2000])
    alone = run_many(launcher, rounds, argv_split, env, message, check=check_split)
    figures.add("cpu_qmail_remote", "  of which qmail-remote (execs /bin/true)", common.mean(cpu_ms(alone)), "ms",
                median=common.median(cpu_ms(alone)), peak_RSS_MiB=max(r.maxrss_mib for r in alone))

    # qmail-remote-io alone: run by hand on a connection to the sink given as fds 6 and 7
    io = [os.path.join(bindir, "qmail-remote-io"), "-g", "-c", "8BITMIME,PIPELINING,SIZE=200000000", "--",
          "127.0.0.1", SENDER, "rcpt@example.org"]
    io_alone = run_many(launcher, rounds, io, env, message, connect=("127.0.0.1", sink.port),
                        check=lambda m: common.require_delivered(m, 1, "qmail-remote-io by hand"))
    figures.add("cpu_qmail_remote_io", "  of which qmail-remote-io (run by hand)", common.mean(cpu_ms(io_alone)), "ms",
                median=common.median(cpu_ms(io_alone)), peak_RSS_MiB=max(r.maxrss_mib for r in io_alone))
    return common.mean(cpus), peak


# Runs a program of the chain as its command would, but first replaces execv, execve
# and _exit in os and posix (its only ways out) with versions that append the names in
# sys.modules to a log file. So the list is what the process really loaded, lazy imports included.
AUDIT = r"""
import os, sys
def dump():
    fd = os.open(%(log)r, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(fd, ("\n".join(sorted(sys.modules)) + "\n\n").encode())
    os.close(fd)
def dumping(real):
    def wrapper(*args):
        dump()
        return real(*args)
    return wrapper
import posix  # report.py and others call posix's, the same functions without os.py
os.execv, os.execve, os._exit = posix.execv, posix.execve, posix._exit = \
    dumping(os.execv), dumping(os.execve), dumping(os._exit)
sys.path.insert(0, %(lib)r)
sys.argv = %(argv)r
from qremote.programs.%(module)s import main
main()
"""

# Modules whose absence is the point: dnspython (never used by the delivery any more),
# idna (non-ASCII names only), ssl (no TLS here), and the stdlib modules that cost
# milliseconds at every start.
HEAVY = ("dns", "idna", "ssl", "socket", "asyncio", "enum", "typing", "dataclasses", "argparse", "selectors", "re")


def loaded_modules(launcher, interpreter, libdir, module, argv, message, connect=None, work="/tmp"):
    log = os.path.join(work, "modules-%s" % module)
    code = AUDIT % {"log": log, "lib": libdir, "argv": argv, "module": module}
    measured = launcher.run([interpreter, "-IS", "-c", code], common.Home.env(), message, connect=connect)
    common.require_delivered(measured, 1, "the audited %s delivery" % module)
    try:
        with open(log) as dumped:
            names = dumped.read().split("\n\n")[0].split()
    except OSError:
        raise SystemExit("bench: %s left no list of modules (did it leave by another way than "
                         "os.execv, os.execve or os._exit?)" % module) from None
    os.unlink(log)
    return measured, names


def imports_figures(figures, launcher, interpreter, bindir, libdir, work, sink, message):
    figures.say("\n[1b] What each program loads (sys.modules when it execs or exits; IP route, 4 KB message)")
    bare = launcher.run([interpreter, "-IS", "-c", "import sys, os; os.write(1, ' '.join(sys.modules).encode())"],
                        common.Home.env(), message)
    baseline = set(bare.output.decode().split())
    figures.add("modules_bare", "modules: python3 -IS -c pass", len(baseline), "modules")
    remote_argv = [os.path.join(bindir, "qmail-remote"), "example.org", SENDER, "rcpt@example.org"]
    io_argv = [os.path.join(bindir, "qmail-remote-io"), "-g", "-h", "bench.example", "--",
               "127.0.0.1", SENDER, "rcpt@example.org"]
    for label, module, argv, connect in (
            ("qmail-remote", "qmail_remote", remote_argv, None),
            ("qmail-remote-io (by hand)", "qmail_remote_io", io_argv, ("127.0.0.1", sink.port))):
        measured, names = loaded_modules(launcher, interpreter, libdir, module, argv, message, connect, work)
        ours = [n for n in names if n == "qremote" or n.startswith("qremote.")]
        others = sorted(n for n in names if n not in baseline and n not in ours)
        heavy = [n for n in HEAVY if n in names]
        figures.add("modules_" + module, "modules: " + label, len(names), "modules",
                    of_them_qremote=len(ours), heavy=" ".join(heavy) or "none",
                    dnspython="loaded" if "dns" in names else "no")
        figures.say("      added to bare python besides qremote's: " + (" ".join(others) or "none"))


def deliver_big(launcher, bindir, work, sink, size_mb, rounds, eightbit=True):
    """Measurements of rounds deliveries of one generated message of size_mb MB."""
    argv = [os.path.join(bindir, "qmail-remote"), "example.org", SENDER, "rcpt@example.org"]
    path = os.path.join(work, "message-%dMB" % size_mb)
    size = common.write_message(path, size_mb * 1000 * 1000, seed=size_mb, eightbit=eightbit)
    results = []
    try:
        for _ in range(rounds):
            before = len(sink.sessions)
            measured = launcher.run(argv, common.Home.env(), path)
            common.require_delivered(measured, 1, "the %d MB message" % size_mb)
            session = sink.sessions[before]
            if session.data_bytes < size:
                raise SystemExit("bench: the sink got %d DATA bytes of a %d-byte message" % (session.data_bytes, size))
            results.append(measured)
    finally:
        os.unlink(path)
    return size, results


def big_message_figures(figures, launcher, bindir, work, sink, sizes, rounds):
    figures.say("\n[2] Large messages (76-char lines, some leading dots, some 8-bit), fast sink; best of %d" % rounds)
    peaks = []
    seconds_50 = None
    for size_mb in sizes:
        size, results = deliver_big(launcher, bindir, work, sink, size_mb, rounds)
        best = min(results, key=lambda r: r.wall)
        peak = max(r.maxrss_mib for r in results)
        peaks.append(peak)
        key = "big_%dMB" % size_mb
        if size_mb == 50:
            seconds_50 = best.wall
            figures.add(key + "_seconds", "%d MB message: seconds" % size_mb, best.wall, "s",
                        target="<= %.1f s (3x stock)" % BIG_TARGET_S, meets=best.wall <= BIG_TARGET_S,
                        reference="stock 0.56 s, skarnet 1.26 s", MB_per_s=size / best.wall / 1e6,
                        cpu_s=best.cpu, median_s=common.median([r.wall for r in results]))
        else:
            figures.add(key + "_seconds", "%d MB message: seconds" % size_mb, best.wall, "s",
                        MB_per_s=size / best.wall / 1e6, cpu_s=best.cpu)
        figures.add(key + "_rss", "%d MB message: peak RSS" % size_mb, peak, "MiB",
                    target="< %d MiB" % RSS_TARGET_MIB, meets=peak < RSS_TARGET_MIB, reference="under 3 MB")
    size, results = deliver_big(launcher, bindir, work, sink, 50, rounds, eightbit=False)
    best = min(results, key=lambda r: r.wall)
    figures.add("big_50MB_7bit_seconds", "50 MB, no 8-bit byte (pre-scan reads it all)", best.wall, "s",
                MB_per_s=size / best.wall / 1e6, cpu_s=best.cpu, peak_RSS_MiB=max(r.maxrss_mib for r in results))
    peaks.append(max(r.maxrss_mib for r in results))
    if len(peaks) >= 2:
        figures.add("rss_growth", "RSS growth %d MB -> %d MB (flat = ~0)" % tuple(sizes[:2]), peaks[1] - peaks[0], "MiB")
    elapsed, sent = common.sink_throughput(sink, 50 * 1000 * 1000)
    figures.add("sink_alone", "the sink alone, 50 MB from memory (check)", elapsed, "s", MB_per_s=sent / elapsed / 1e6)
    return seconds_50, max(peaks)


def recipients_figures(figures, launcher, bindir, message, rounds, direct_host, delayed_host, plain_delayed_host,
                       sinks):
    """100 recipients through the delay proxy: wall time in units of the delay, and the
    number of times the chain waited for the server (the proxy's reply bursts, less the
    QUIT reply, which the chain never waits for)."""
    figures.say("\n[3] 100 recipients, a proxy adds %d ms to every server reply chunk" % (DELAY * 1000))
    env = common.Home.env()
    recipients = ["rcpt%d@example.org" % i for i in range(1, 101)]

    def deliver(host, sink, proxy, count):
        results, waits = [], []
        for _ in range(count):
            before = len(sink.sessions)
            bursts_before = proxy.bursts if proxy is not None else 0
            measured = launcher.run([os.path.join(bindir, "qmail-remote"), host, SENDER] + recipients, env, message)
            common.require_delivered(measured, 100, "the 100-recipient message via %s" % host)
            if sink.sessions[before].rcpts != 100:
                raise SystemExit("bench: the sink saw %d RCPT" % sink.sessions[before].rcpts)
            results.append(measured)
            if proxy is not None:
                time.sleep(3 * DELAY)  # the QUIT reply is still in the proxy when the chain exits
                waits.append(proxy.bursts - bursts_before - 1)
        return results, waits

    direct, _ = deliver(direct_host, sinks[0], None, rounds)
    base = common.median([r.wall for r in direct])
    figures.add("rcpt100_direct", "no delay (baseline): wall", base * 1000, "ms")
    proxy, sink = sinks[1], sinks[0]
    delayed, waits = deliver(delayed_host, sink, proxy, rounds)
    wall = common.median([r.wall for r in delayed])
    figures.add("rcpt100_pipelining", "PIPELINING: wall / 50 ms", wall / DELAY, "round trips",
                target="<= %d" % RT_TARGET, meets=wall / DELAY <= RT_TARGET,
                reference="stock 107 (5.3 s), skarnet 107", wall_s=wall,
                minus_baseline=(wall - base) / DELAY, server_waits=max(waits))
    plain_proxy, plain_sink = sinks[3], sinks[2]
    plain, plain_waits = deliver(plain_delayed_host, plain_sink, plain_proxy, 1)
    figures.add("rcpt100_no_pipelining", "no PIPELINING (contrast): wall / 50 ms", plain[0].wall / DELAY, "round trips",
                reference="stock 107 (5.3 s)", wall_s=plain[0].wall, server_waits=plain_waits[0])
    return wall / DELAY


def size_pass_figures(figures, work, rounds):
    """The cost of the pread() pass qmail-remote-io makes before MAIL, on a 50 MB message
    in the page cache (as qmail-queue leaves it), in this process with the source tree's
    library: CPU of inspect_message() alone, best of rounds. The pass counts line ends
    for SIZE= (RFC 1870's size with CRLF) and looks for an 8-bit byte for BODY=8BITMIME."""
    sys.path.insert(0, os.path.join(TOP, "lib"))
    from qremote.programs.qmail_remote_io import inspect_message
    figures.say("\n[2b] The pass before MAIL over a 50 MB message (page cache warm), CPU in process, best of %d"
                % rounds)
    for eightbit in (False, True):
        path = os.path.join(work, "message-pass-%s" % ("8bit" if eightbit else "7bit"))
        size = common.write_message(path, 50 * 1000 * 1000, seed=50, eightbit=eightbit)
        try:
            with open(path, "rb") as message:
                fd = message.fileno()
                for want_eightbit, want_size, what in ((False, True, "SIZE without 8BITMIME: counting pass"),
                                                       (True, False, "8BITMIME without SIZE"),
                                                       (True, True, "SIZE and 8BITMIME: one pass for both")):
                    best = None
                    for _ in range(rounds):
                        started = time.process_time()
                        wire, _ = inspect_message(fd, want_eightbit, want_size)
                        spent = time.process_time() - started
                        best = spent if best is None else min(best, spent)
                    key = "pass_%s_%s%s" % ("8bit" if eightbit else "7bit", "size" if want_size else "",
                                            "8bitmime" if want_eightbit else "")
                    figures.add(key, "%s, %s message" % (what, "8-bit" if eightbit else "7-bit"), best * 1000, "ms",
                                file_bytes=size, SIZE_declared=wire if wire is not None else "none",
                                MB_per_s=size / best / 1e6 if best else 0)
        finally:
            os.unlink(path)


def main():
    parser = argparse.ArgumentParser(description="Benchmark of the qremote delivery chain (prints figures).")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--size-pass", action="store_true", help="only the pass before MAIL ([2b]), about 10 s")
    args = parser.parse_args()
    if args.size_pass:
        work = common.scratch_dir()
        try:
            size_pass_figures(Figures(args.json), work, 5)
        finally:
            common.remove(work)
        return
    rounds_small = 10 if args.quick else 50
    rounds_big = 1 if args.quick else 3
    rounds_rt = 1 if args.quick else 3

    figures = Figures(args.json)
    work = common.scratch_dir()
    launcher = None
    servers = []
    try:
        home_path = os.path.join(work, "qmail")
        bindir, interpreter = common.install_chain(home_path)
        home = common.Home(home_path)
        load_before = os.getloadavg()
        figures.say("qremote chain benchmark: %s, interpreter %s, %d CPUs, load %.2f %.2f %.2f" % (
            home_path, interpreter, os.cpu_count(), *load_before))
        launcher = common.Launcher(interpreter)

        sink = common.SinkServer(pipelining=True)
        plain_sink = common.SinkServer(pipelining=False)
        proxy = DelayProxy(sink.port, DELAY)
        plain_proxy = DelayProxy(plain_sink.port, DELAY)
        servers = [sink, plain_sink, proxy, plain_proxy]
        path = os.path.join(home.path, "control", "smtproutes")
        with open(path, "w") as out:
            out.write("example.org:[127.0.0.1]:%d\n" % sink.port)
            out.write("delayed.example:[127.0.0.1]:%d\n" % proxy.port)
            out.write("plain.example:[127.0.0.1]:%d\n" % plain_proxy.port)
        message = os.path.join(work, "message-4KB")
        common.write_message(message, 4096)
        # the first delivery compiles smtproutes.cdb and warms the page cache: not measured
        common.require_delivered(launcher.run([os.path.join(bindir, "qmail-remote"), "example.org", SENDER, "r@example.org"],
                                              common.Home.env(), message), 1, "the warm-up message")

        wrapper, floor = context_figures(figures, launcher, interpreter, os.path.join(home_path, "lib", "qremote"),
                                  message, max(10, rounds_small // 2))
        cpu, rss_small = small_delivery_figures(figures, launcher, bindir, work, sink, message, rounds_small)
        imports_figures(figures, launcher, interpreter, bindir, os.path.join(home_path, "lib", "qremote"), work,
                        sink, message)
        seconds_50, rss_big = big_message_figures(figures, launcher, bindir, work, sink, (5, 50), rounds_big)
        size_pass_figures(figures, work, rounds_big + 2)
        rts = recipients_figures(figures, launcher, bindir, message, rounds_rt, "example.org", "delayed.example",
                                 "plain.example", [sink, proxy, plain_sink, plain_proxy])

        figures.say("\n[4] Targets of issue 2")
        peak = max(rss_small, rss_big)
        figures.add("target_rss", "peak RSS, any message size", peak, "MiB", target="< %d MiB" % RSS_TARGET_MIB,
                    meets=peak < RSS_TARGET_MIB, reference="under 3 MB")
        figures.add("target_big", "50 MB message", seconds_50, "s", target="<= %.1f s" % BIG_TARGET_S,
                    meets=seconds_50 <= BIG_TARGET_S, reference="stock 0.56 s")
        figures.add("target_rt", "100 recipients with PIPELINING", rts, "round trips", target="<= %d" % RT_TARGET,
                    meets=rts <= RT_TARGET, reference="stock 107")
        figures.add("target_cpu", "CPU per 4 KB delivery", cpu, "ms", target="as low as possible",
                    reference="stock 8 ms incl. 6 ms wrapper", minus_wrapper=cpu - wrapper,
                    python_floors=cpu / floor)  # the ratio varies less with the machine's load
        load_after = os.getloadavg()
        figures.say("\nload average at the end: %.2f %.2f %.2f (other work on the machine skews wall times)" % load_after)
        if args.json:
            json.dump({"machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "interpreter": interpreter,
                                   "load_before": load_before, "load_after": load_after, "quick": args.quick},
                       "figures": figures.items}, sys.stdout, indent=1)
            print()
    finally:
        for server in servers:
            server.stop()
        if launcher is not None:
            launcher.close()
        common.remove(work)


if __name__ == "__main__":
    main()
