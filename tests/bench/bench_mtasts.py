"""MTA-STS's cost (issue 13): prints figures, never judges.

    .venv/bin/python tests/bench/bench_mtasts.py [--rounds 100]

Every delivery by MX asks mtasts.policy_for; with a fresh cache that must cost a file
read and a parse, and load no HTTPS client. Measured from this source tree (lib/, no
install), in a scratch qmail home with a loopback policy host (trustme CA given as
control/mtastsanchors) whose name the DNS stub resolves ($DNSCACHEIP):

  cached, in process    policy_for with an unexpired cached policy of the record's id:
                        median wall time per call over 2000 calls
  process: bare         python3 -IS importing os and time (what qmail-remote has loaded
                        anyway): the floor
  process: cached       the same, then `from qremote import mtasts` and one cached
                        policy_for: CPU (user+sys, wait4) over bare, median over rounds;
                        and whether ssl / http.client were loaded (must be "no")
  process: miss         one policy_for that fetches (DNS, TCP, TLS 1.3, HTTP, parse,
                        write): CPU over bare and wall time, median over rounds
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, TOP)
sys.path.insert(0, os.path.join(TOP, "lib"))

from qremote import mtasts  # noqa: E402
from tests.support.certs import PKI  # noqa: E402
from tests.support.dnsserver import DNSServer  # noqa: E402
from tests.support.stsserver import STSServer  # noqa: E402

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.mx.example.com\r\nmax_age: 604800\r\n"
TXT = [b"v=STSv1; id=20261207T000000"]

CHILD = r"""
import os, sys, time
sys.path.insert(0, %(lib)r)
if %(load)r:
    from qremote import mtasts
    if %(purge)r:
        try:
            os.unlink("run/qmail-remote/mta-sts/example.com")
        except OSError:
            pass
    t = time.monotonic()
    policy, event = mtasts.policy_for("example.com", %(txt)r, time.time(), 10, %(port)d)
    sys.stdout.write("%%s|%%s|%%f" %% (event, int("ssl" in sys.modules or "http.client" in sys.modules),
                                    time.monotonic() - t))
"""


def run_child(code):
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code], stdout=subprocess.PIPE)
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.stdout.close()
    return usage.ru_utime + usage.ru_stime, out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        pki = PKI(os.path.join(scratch, "pki"))
        home = os.path.join(scratch, "home")
        os.makedirs(os.path.join(home, "run", "qmail-remote"))
        os.makedirs(os.path.join(home, "control"))
        with open(pki.ca_file, "rb") as ca, open(os.path.join(home, "control", "mtastsanchors"), "wb") as out:
            out.write(ca.read())
        os.chdir(home)
        dns = DNSServer()
        dns.add("mta-sts.example.com", "A", "127.0.0.1")
        os.environ["DNSCACHEIP"] = dns.address()
        server = STSServer(*pki.server("mta-sts.example.com"))
        server.policy = POLICY
        try:
            policy, event = mtasts.policy_for("example.com", TXT, time.time(), 10, server.port)
            assert event == "fetched", event
            times = []
            for _ in range(2000):
                start = time.perf_counter()
                policy, event = mtasts.policy_for("example.com", TXT, time.time(), 10, server.port)
                times.append(time.perf_counter() - start)
            assert event == "cached"
            print("cached, in process      %7.1f us per policy_for (median of 2000)" % (
                statistics.median(times) * 1e6))

            def code(load, purge=False):
                return CHILD % {"lib": os.path.join(TOP, "lib"), "load": load, "purge": purge, "txt": TXT,
                                "port": server.port}
            bare, cached, miss, miss_wall, loaded = [], [], [], [], set()
            for _ in range(args.rounds):
                cpu_bare, _ = run_child(code(False))
                cpu_cached, out = run_child(code(True))
                event, https, _ = out.split("|")
                assert event == "cached", out
                loaded.add(https)
                cpu_miss, out = run_child(code(True, purge=True))
                event, _, wall = out.split("|")
                assert event == "fetched", out
                bare.append(cpu_bare)
                cached.append(cpu_cached - cpu_bare)
                miss.append(cpu_miss - cpu_bare)
                miss_wall.append(float(wall))
            print("process: bare           %7.2f ms CPU (median of %d)" % (statistics.median(bare) * 1e3, args.rounds))
            print("process: cached         %+7.2f ms CPU over bare; ssl/http.client loaded: %s" % (
                statistics.median(cached) * 1e3, "yes" if "1" in loaded else "no"))
            print("process: miss (fetch)   %+7.2f ms CPU over bare, %6.2f ms wall for policy_for" % (
                statistics.median(miss) * 1e3, statistics.median(miss_wall) * 1e3))
            print("policy host requests    %d (1 + %d rounds)" % (server.count(), args.rounds))
        finally:
            server.stop()
            dns.stop()


if __name__ == "__main__":
    main()
