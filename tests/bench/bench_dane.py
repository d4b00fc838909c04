"""Benchmark of a whole delivery with DANE-EE beside the same over plain STARTTLS: prints
figures, never passes or fails.

    .venv/bin/python tests/bench/bench_dane.py [--rounds 30]

(the .venv interpreter: the certificates come from trustme). It installs the chain into a
scratch qmail tree (common.install_chain), routes example.org through control/smtproutes to
relay.example.net on the sink's port (a loopback sink offering STARTTLS, bench_tls.py's),
and answers the relay's A, AAAA and TLSA (_PORT._tcp.relay.example.net, 3 1 1 of the sink's
key) from the wire stub (tests/support/dnsserver.py) playing a validating resolver: AD on
every answer, so the resolver sees a secure host. Two cases, interleaved, same sink and DNS:

  starttls   control/dane 0, trustanchors and tlsstrictness 0: STARTTLS, nothing verified
             (no TLSA asked): qmail-remote -> tlsc-io -> qmail-remote-io
  dane-ee    DANE on (the default): the TLSA asked beside A/AAAA, the rule "must, verify
             dane", tlsc-io -D "3 1 1 ...": K "TLSA validated DANE-EE"

CPU: user + sys of the chain pid (qmail-remote, tlsc-io, qmail-remote-io: one pid, execs),
which holds the DNS lookup, the rule, the handshake and the TLSA check; tlsc-io's relay
process is not included (forked after the handshake and reparented to init; it relays the
same bytes in both cases: bench_tls.py measures it). Medians over the rounds. The DNS side alone is
doc/dns.html's (bench_dns.py: the TLSA query adds no round trip).
"""

import argparse
import os
import ssl
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "lib"))
sys.path.insert(0, TOP)

from tests.bench import common  # noqa: E402
from tests.bench.bench_tls import start_sink  # noqa: E402
from tests.support.certs import PKI  # noqa: E402
from tests.support.dnsserver import DNSServer  # noqa: E402
from tests.support.dnssec import tlsa_data  # noqa: E402

RELAY = "relay.example.net"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    scratch = common.scratch_dir()
    try:
        run(scratch, args.rounds)
    finally:
        common.remove(scratch)


def run(scratch, rounds):
    qmail = os.path.join(scratch, "qmail")
    bindir, interpreter = common.install_chain(qmail)
    home = common.Home(qmail)
    pki = PKI(os.path.join(scratch, "pki"))
    cert, key = pki.server(RELAY)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sink_pid, port = start_sink(context)
    dns = DNSServer()
    dns.ad = True
    dns.add(RELAY, "A", "127.0.0.1")
    dns.add("_%d._tcp.%s" % (port, RELAY), "TLSA", "3 1 1 " + tlsa_data(cert, 1, 1))
    route = os.path.join(qmail, "control", "smtproutes")
    with open(route, "w") as out:
        out.write("example.org:%s:%d\n" % (RELAY, port))
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "0\n")
    message = os.path.join(scratch, "message")
    common.write_message(message, 4096)
    env = dict(home.env(), DNSCACHEIP=dns.address())
    argv = [os.path.join(bindir, "qmail-remote"), "example.org", "a@me.example", "b@example.org"]
    launcher = common.Launcher(interpreter)
    cases = {"starttls": ("0\n", b"TLSv1", b"TLSA"), "dane-ee": ("1\n", b"TLSA validated DANE-EE", None)}
    figures = {name: [] for name in cases}
    try:
        for round_ in range(rounds + 2):  # two warm-up rounds, not counted
            for name, (dane, wanted, unwanted) in cases.items():
                home.control("dane", dane)
                measured = launcher.run(argv, env, message)
                common.require_delivered(measured, 1, name)
                if wanted not in measured.output or (unwanted and unwanted in measured.output):
                    raise SystemExit("bench: %s: unexpected report %r" % (name, measured.output))
                if round_ >= 2:
                    figures[name].append(measured)
    finally:
        launcher.close()
        dns.stop()
        os.kill(sink_pid, 9)
        os.waitpid(sink_pid, 0)
    print("Whole delivery, 4 KB message, route to %s (A + TLSA from a stub with AD), %d rounds, medians" % (
        RELAY, rounds))
    print("%-10s %10s %10s %10s" % ("case", "CPU ms", "wall ms", "RSS MiB"))
    for name, runs in figures.items():
        print("%-10s %10.1f %10.1f %10.1f" % (name, 1000 * common.median([m.cpu for m in runs]),
                                               1000 * common.median([m.wall for m in runs]),
                                               common.median([m.maxrss_mib for m in runs])))
    extra = 1000 * (common.median([m.cpu for m in figures["dane-ee"]]) -
                    common.median([m.cpu for m in figures["starttls"]]))
    pairs = sorted(1000 * (d.cpu - s.cpu) for d, s in zip(figures["dane-ee"], figures["starttls"]))
    print("DANE-EE beside STARTTLS: %+.1f ms CPU (pairs, each at the same moment: median %+.1f ms, "
          "quartiles %+.1f / %+.1f ms); budget +5 ms: %s" % (
              extra, pairs[len(pairs) // 2], pairs[len(pairs) // 4], pairs[3 * len(pairs) // 4],
              "met" if extra <= 5 else "NOT met"))
    print("load average: %s" % " ".join("%.2f" % x for x in os.getloadavg()))


if __name__ == "__main__":
    main()
