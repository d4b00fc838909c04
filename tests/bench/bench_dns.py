#!/usr/bin/env python3
"""Benchmark of parallel DNS (issue 3): prints figures, never passes or fails.

  python3 tests/bench/bench_dns.py [--runs N] [--delay SECONDS]

A domain with 3 MX targets, each with an A and an AAAA record, served by the wire stub
(tests/support/dnsserver.py), which holds every answer back by --delay (100 ms), each
answer on its own timer (a slow resolver, not a slow queue). The installed qmail-remote
delivers to it with DNSCACHEIP pointing at the stub; the figure is the time from
starting qmail-remote to the first SMTP byte (the server's greeting, sent as it
accepts the connection), median of --runs. The same with no delay gives the floor
(interpreter, imports, control files); the difference divided by the delay is the
number of resolver round trips the delivery waited for (the lookup alone, timed
in this process with qremote.resolver, gives the same count without process noise): 2 when the MX query and then
all six address queries go out at once, 7 when asked one after another (stock asks
MX then A per target: 4, without AAAA). The stub's log gives the same count directly:
the number of waves of queries, a new wave starting with a query that arrives after
an answer went out.

Then the CPU (user + sys) a lookup costs, which is what the delivery pays for DNS on top
of its own work, each figure the median of --runs, all against the stub with no delay:
  - the installed qmail-remote delivering to the domain, from its start to the server's
    421 after EHLO (route, control files, DNS, connect, greeting, EHLO: all of
    qmail-remote's own work), measured by tests/bench/common.py's launcher;
  - a lookup in a fresh process (the installed interpreter, -I -S, the installed library):
    import qremote.resolver and resolve the domain, minus the same process doing nothing, so
    the figure is what the lookup adds to a delivery, imports included; for an ASCII
    domain and for a non-ASCII one (the only case that imports the idna package);
    each line says whether idna was loaded;
  - the lookup alone, warm, in this process (thread CPU time: the stub's threads are not
    counted).

Then DANE and MTA-STS (issues 11 and 13): the stub plays a validating resolver (AD on every
answer) and holds a TLSA record per MX host and an _mta-sts TXT; the lookup qmail-remote
makes today (mx_targets: MX, then A + AAAA) beside mx_lookup(dane=True, sts=True) (MX +
TXT, then A + AAAA + TLSA of each host): the queries, the round trips the stub saw (its
event log), the lookup's wall time with every answer held back by --delay, and its CPU
in a fresh process (imports included) and warm in this process.

MX targets are reached on port 25, so the delivery figures need root (without it, they
are skipped and only the lookup figures are printed).
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, TOP)

sys.path.insert(0, os.path.join(TOP, "lib"))

from qremote.resolver import exchange, mx  # noqa: E402
from tests.bench import common  # noqa: E402
from tests.support.dnsserver import DNSServer, round_trips  # noqa: E402

DOMAIN = "example.test"
IDN_DOMAIN = "b\u00fccher.test"   # looked up as xn--bcher-kva.test
IDN_WIRE_NAME = "xn--bcher-kva.test"
SERVER_IP = "127.0.53.41"
STOCK_C = "411 ms = 4 round trips (stock, sequential, no AAAA); skarnet 212 ms = 2 round trips"


class Greeter:
    """Port 25 on SERVER_IP: notes when each connection is accepted, greets, reads EHLO, says 421."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((SERVER_IP, 25))
        self.listener.listen(16)
        self.accepted = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            try:
                with conn:
                    conn.settimeout(10)
                    conn.sendall(b"220 bench.test ESMTP\r\n")
                    conn.recv(1024)
                    conn.sendall(b"421 bench over\r\n")
            except OSError:
                pass

    def stop(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()


def waves(events):
    """Sequential rounds of queries in a stub's event log."""
    count, answered_since = 0, True
    for kind, _, _ in events:
        if kind == "query" and answered_since:
            count += 1
            answered_since = False
        elif kind == "answer":
            answered_since = True
    return count


def one_run(bindir, home, dns_server, message):
    dns_server.events.clear()
    greeter_mark = len(GREETER.accepted)
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": home, "DNSCACHEIP": dns_server.address()}
    with open(message, "rb") as stdin:
        start = time.monotonic()
        done = subprocess.run([os.path.join(bindir, "qmail-remote"), DOMAIN, "s@src.example", "r@" + DOMAIN],
                              stdin=stdin, stdout=subprocess.PIPE, env=env, timeout=120)
    if len(GREETER.accepted) <= greeter_mark:
        raise SystemExit("bench: qmail-remote never reached the server: %r" % done.stdout[:300])
    return GREETER.accepted[greeter_mark] - start, waves(dns_server.events)


GREETER = None

# A fresh process resolving argv[1] (UTF-8) with qremote.resolver, as qmail-remote does; it
# prints whether the idna package got imported. FLOOR is the same process without the lookup.
FLOOR = "import sys; sys.path.insert(0, %r)"
LOOKUP = FLOOR + """
from qremote import resolver
targets = resolver.mx_targets(sys.argv[1].encode(), 0)
print(len(targets), "targets, idna", "yes" if "idna" in sys.modules else "no", end="")
"""


LOOKUP_DANE = FLOOR + """
from qremote import resolver
found = resolver.mx_lookup(sys.argv[1].encode(), 0, dane=True, sts=True)
print(len(found.targets), "targets,", sorted({d.state for d in found.dane.values()}), "sts", found.sts, end="")
"""


def dane_figures(bindir, interpreter, dns_server, runs, delay):
    """Print today's lookup beside mx_lookup(dane=True, sts=True) (see the module's docstring)."""
    dns_server.ad = True
    servers = exchange.nameservers({"DNSCACHEIP": dns_server.address()})
    ways = [("today: mx_targets (MX, then A + AAAA)             ", lambda: mx.mx_targets(DOMAIN.encode(), 0, servers)),
            ("mx_lookup(dane=True, sts=True) (+ TXT, + TLSA)    ",
             lambda: mx.mx_lookup(DOMAIN.encode(), 0, servers, dane=True, sts=True))]
    print("DANE + MTA-STS lookups, %s, 3 MX x (A + AAAA + TLSA), stub validating (AD), %d runs each:" % (DOMAIN, runs))
    for label, lookup in ways:
        dns_server.delay = delay
        del dns_server.queries[:]
        walls, trips = [], 0
        for _ in range(runs):
            dns_server.events.clear()
            start = time.monotonic()
            lookup()
            walls.append(time.monotonic() - start)
            time.sleep(delay)  # let late answers (a TXT nobody waited for) reach the log
            trips = max(trips, round_trips(dns_server.events))
        queries = len(dns_server.queries) // runs
        dns_server.delay = 0.0
        lookup()  # imports done before timing
        cpus = []
        for _ in range(runs):
            start = time.thread_time()
            lookup()
            cpus.append(time.thread_time() - start)
        print("  %s %d queries, %d round trips, +%3.0f ms/answer: %6.1f ms wall; warm CPU %5.2f ms" % (
            label, queries, trips, delay * 1000, statistics.median(walls) * 1000, statistics.median(cpus) * 1000))
    libdir = library_dir(bindir)
    env = {"PATH": "/usr/bin:/bin", "DNSCACHEIP": dns_server.address()}
    launcher = common.Launcher(interpreter)
    try:
        floor, _ = median_cpu(launcher, [interpreter, "-I", "-S", "-c", FLOOR % libdir], env, os.devnull, runs)
        for label, script in (("today: mx_targets            ", LOOKUP), ("mx_lookup(dane=True, sts=True)", LOOKUP_DANE)):
            cpu, output = median_cpu(launcher, [interpreter, "-I", "-S", "-c", script % libdir, DOMAIN], env,
                                     os.devnull, runs)
            print("  %s in a fresh process, imports included %6.1f ms CPU  (%s)" % (
                label, (cpu - floor) * 1000, output.decode("utf-8", "replace")))
    finally:
        launcher.close()
        dns_server.ad = False


def library_dir(bindir):
    """The library path the installed qmail-remote puts first on sys.path."""
    with open(os.path.join(bindir, "qmail-remote")) as command:
        for line in command:
            if line.startswith("import sys; sys.path.insert(0, "):
                return line.split("sys.path.insert(0, ", 1)[1].rstrip().rstrip(")")[1:-1]
    raise SystemExit("bench: no library path in the installed qmail-remote")


def median_cpu(launcher, argv, env, stdin, runs):
    """(median CPU seconds, last output) of runs of argv through the launcher."""
    cpus, output = [], b""
    for _ in range(runs):
        measured = launcher.run(argv, env, stdin)
        cpus.append(measured.cpu)
        output = measured.output
    return statistics.median(cpus), output


def cpu_figures(bindir, interpreter, dns_server, message, runs, delivery):
    """Print the CPU figures (see the module's docstring)."""
    dns_server.delay = 0.0
    libdir = library_dir(bindir)
    env = {"PATH": "/usr/bin:/bin", "DNSCACHEIP": dns_server.address()}
    launcher = common.Launcher(interpreter)
    try:
        print("CPU (user + sys), median of %d, resolver instant:" % runs)
        if delivery is not None:
            home, = delivery
            argv = [os.path.join(bindir, "qmail-remote"), DOMAIN, "s@src.example", "r@" + DOMAIN]
            cpu, output = median_cpu(launcher, argv, dict(env, QMAILHOME=home), message, runs)
            reports = common.decode_reports(output)
            print("  qmail-remote needing DNS, start to EHLO        %7.1f ms  (report: %s)" % (
                cpu * 1000, (reports[-1][0] + reports[-1][1][:40].decode("latin-1")).strip() if reports else "none"))
        floor, _ = median_cpu(launcher, [interpreter, "-I", "-S", "-c", FLOOR % libdir], env, os.devnull, runs)
        print("  start-up only (subtracted below)                %7.1f ms  %s -I -S" % (floor * 1000, interpreter))
        for host in (DOMAIN, IDN_DOMAIN):
            argv = [interpreter, "-I", "-S", "-c", LOOKUP % libdir, host]
            cpu, output = median_cpu(launcher, argv, env, os.devnull, runs)
            print("  lookup in a fresh process, imports included     %7.1f ms  %s: %s" % (
                (cpu - floor) * 1000, host.encode("ascii", "backslashreplace").decode(),
                output.decode("utf-8", "replace")))
    finally:
        launcher.close()
    servers = exchange.nameservers({"DNSCACHEIP": dns_server.address()})
    for host in (DOMAIN, IDN_DOMAIN):
        mx.mx_targets(host.encode(), 0, servers)  # imports done before timing
        cpus = []
        for _ in range(runs):
            start = time.thread_time()
            mx.mx_targets(host.encode(), 0, servers)
            cpus.append(time.thread_time() - start)
        print("  the lookup alone, warm, in process              %7.2f ms  %s" % (
            statistics.median(cpus) * 1000, host.encode("ascii", "backslashreplace").decode()))


def main():
    global GREETER
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--delay", type=float, default=0.1)
    args = parser.parse_args()
    root = os.geteuid() == 0
    if not root:
        print("bench_dns: MX targets are reached on port 25; run as root for the delivery figures.")
    scratch = common.scratch_dir()
    try:
        home = os.path.join(scratch, "qmail")
        bindir, interpreter = common.install_chain(home)
        common.Home(home).control("ipme", "127.0.0.1\n")
        message = os.path.join(scratch, "message")
        with open(message, "wb") as out:
            out.write(b"Subject: bench\n\nhello\n")
        dns_server = DNSServer()
        for domain in (DOMAIN, IDN_WIRE_NAME):
            dns_server.add(domain, "MX", "10 mx1.%s." % DOMAIN, "20 mx2.%s." % DOMAIN, "30 mx3.%s." % DOMAIN)
        dns_server.add("mx1." + DOMAIN, "A", SERVER_IP).add("mx1." + DOMAIN, "AAAA", "2001:db8::1")
        for n in (2, 3):
            dns_server.add("mx%d.%s" % (n, DOMAIN), "A", "192.0.2.%d" % n)
            dns_server.add("mx%d.%s" % (n, DOMAIN), "AAAA", "2001:db8::%d" % n)
        for n in (1, 2, 3):  # asked only by mx_lookup(dane=True, sts=True)
            dns_server.add("_25._tcp.mx%d.%s" % (n, DOMAIN), "TLSA", "3 1 1 " + "ab" * 32)
        dns_server.add("_mta-sts." + DOMAIN, "TXT", '"v=STSv1; id=20261207;"')
        if not root:
            cpu_figures(bindir, interpreter, dns_server, message, args.runs, None)
            dane_figures(bindir, interpreter, dns_server, args.runs, args.delay)
            dns_server.stop()
            return
        GREETER = Greeter()
        print("DNS benchmark: %s, 3 MX x (A + AAAA), %s, %d runs each" % (DOMAIN, interpreter, args.runs))
        results = {0.0: [], args.delay: []}
        one_run(bindir, home, dns_server, message)  # warm the page cache and smtproutes state
        for _ in range(args.runs):  # alternate, so the machine's load weighs on both alike
            for delay in results:
                dns_server.delay = delay
                results[delay].append(one_run(bindir, home, dns_server, message))
        figures = {delay: (statistics.median(r[0] for r in runs), max(r[1] for r in runs))
                   for delay, runs in results.items()}
        floor, _ = figures[0.0]
        slow, wave_count = figures[args.delay]
        print("  start to first SMTP byte, resolver instant        %7.1f ms" % (floor * 1000))
        print("  start to first SMTP byte, resolver +%3.0f ms/answer %7.1f ms | C: %s" % (
            args.delay * 1000, slow * 1000, STOCK_C))
        print("  resolver round trips implied ((slow - instant) / delay) %5.2f | target about 2, not 7" % (
            (slow - floor) / args.delay))
        print("  waves of queries seen by the resolver               %5d" % wave_count)
        servers = exchange.nameservers({"DNSCACHEIP": dns_server.address()})
        mx.mx_targets(DOMAIN.encode(), 0, servers)  # imports done before timing
        lookups = []
        for _ in range(args.runs):
            start = time.monotonic()
            mx.mx_targets(DOMAIN.encode(), 0, servers)
            lookups.append(time.monotonic() - start)
        lookup = statistics.median(lookups)
        print("  the lookup alone (in process), +%3.0f ms/answer      %7.1f ms = %.2f round trips" % (
            args.delay * 1000, lookup * 1000, lookup / args.delay))
        cpu_figures(bindir, interpreter, dns_server, message, args.runs, (home,))
        dane_figures(bindir, interpreter, dns_server, args.runs, args.delay)
        dns_server.stop()
        GREETER.stop()
    finally:
        common.remove(scratch)


if __name__ == "__main__":
    main()
