"""MTA-STS's cost on a whole MX delivery (issue 13): prints figures, never judges.

    unshare -n sh -c 'ip link set lo up && .venv/bin/python tests/bench/bench_mtasts_chain.py [--rounds 30]'

Root, in a network namespace: port 25 and 443 of 127.0.40.x. Installs the chain
(package/install), then delivers by MX, through the DNS stub ($DNSCACHEIP), to a STARTTLS
server with a certificate of a test CA (control/trustanchors, tlsstrictness 2: both cases
verify, so only MTA-STS differs):

  no MTA-STS      plain.test: no _mta-sts TXT record (qremote.mtasts is not loaded)
  cached policy   sts.test: the TXT record and a fresh cached enforce policy (fetched
                  once before the rounds from a loopback HTTPS policy host)

CPU (user+sys) of the whole chain from wait4 (tests/bench/common.py's launcher), the
cases interleaved round by round, medians, and the median of the per-round differences.
"""

import argparse
import os
import statistics
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, TOP)

from tests.bench import common  # noqa: E402
from tests.support.certs import PKI  # noqa: E402
from tests.support.dnsserver import DNSServer  # noqa: E402
from tests.support.smtpserver import SMTPServer  # noqa: E402
from tests.support.stsserver import STSServer  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    rounds = parser.parse_args().rounds
    scratch = tempfile.mkdtemp(prefix="bench-sts-")
    home_path = os.path.join(scratch, "qmail")
    bindir, interpreter = common.install_chain(home_path)
    home = common.Home(home_path)
    pki = PKI(os.path.join(scratch, "pki"))
    dns = DNSServer()
    smtp_plain = SMTPServer("127.0.40.11", 25, tls_cert=pki.server("mx.plain.test"))
    smtp_sts = SMTPServer("127.0.40.12", 25, tls_cert=pki.server("mx.sts.test"))
    sts = STSServer(*pki.server("mta-sts.sts.test"), host="127.0.40.1", port=443)
    sts.policy = b"version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n"
    dns.add("plain.test", "MX", "10 mx.plain.test.").add("mx.plain.test", "A", "127.0.40.11")
    dns.add("sts.test", "MX", "10 mx.sts.test.").add("mx.sts.test", "A", "127.0.40.12")
    dns.add("_mta-sts.sts.test", "TXT", '"v=STSv1; id=1;"').add("mta-sts.sts.test", "A", "127.0.40.1")
    with open(pki.ca_file) as ca:
        home.control("mtastsanchors", ca.read())
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "2\n")
    message = os.path.join(scratch, "message")
    with open(message, "wb") as out:
        out.write(b"Subject: bench\n\nhello\n")
    env = dict(home.env(), DNSCACHEIP=dns.address())
    launcher = common.Launcher(interpreter)
    qmail_remote = os.path.join(bindir, "qmail-remote")

    def deliver(domain):
        m = launcher.run([qmail_remote, domain, "s@src.example", "r@" + domain], env, message)
        if not m.output.startswith(b"r\0K") or b"verified" not in m.output:
            raise SystemExit("bench: not delivered over verified TLS: %r" % m.output)
        return m

    deliver("sts.test")  # fetches and caches the policy
    cpu = {"plain.test": [], "sts.test": []}
    wall = {"plain.test": [], "sts.test": []}
    for _ in range(rounds):
        for domain in cpu:
            m = deliver(domain)
            cpu[domain].append(m.cpu * 1000)
            wall[domain].append(m.wall * 1000)
    assert sts.count() == 1, "the policy was fetched again"
    base, with_sts = statistics.median(cpu["plain.test"]), statistics.median(cpu["sts.test"])
    print("MX delivery, verified STARTTLS, no MTA-STS:       %.1f ms CPU, %.1f ms wall (median of %d)" % (
        base, statistics.median(wall["plain.test"]), rounds))
    print("MX delivery, verified STARTTLS, cached enforce:   %.1f ms CPU, %.1f ms wall" % (
        with_sts, statistics.median(wall["sts.test"])))
    paired = sorted(b - a for a, b in zip(cpu["plain.test"], cpu["sts.test"]))
    quart = statistics.quantiles(paired, n=4)
    print("MTA-STS with a fresh cache costs:                 %+.1f ms CPU (difference of the medians; budget +5 ms)"
          % (with_sts - base))
    print("  per round (same round, paired): median %+.1f ms, quartiles %+.1f / %+.1f ms; policy fetched %d time(s)"
          % (statistics.median(paired), quart[0], quart[2], sts.count()))
    launcher.close()
    for server in (smtp_plain, smtp_sts, sts, dns):
        server.stop()


if __name__ == "__main__":
    main()
