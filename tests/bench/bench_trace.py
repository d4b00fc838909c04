#!/usr/bin/env python3
"""Benchmark of the per-delivery trace (control/tracedir, doc/trace.html): prints
figures, never passes or fails.

  .venv/bin/python tests/bench/bench_trace.py [--quick]

It installs its own copy of the chain, routes example.org to a loopback scripted server
(tests/support/smtpserver.py) in cleartext and over STARTTLS (tlsstrictness 0), and
measures the same small delivery with and without control/tracedir, interleaved round by
round so that the machine's drift hits both alike: median CPU of the whole chain per
delivery (user + sys of the one process qmail-remote, tlsc-io and qmail-remote-io exec
into, with common.Launcher), and the trace line's size.
"""

import argparse
import os
import shutil
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, TOP)

from tests.bench import common  # noqa: E402
from tests.support.certs import PKI  # noqa: E402
from tests.support.smtpserver import SMTPServer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description="the trace's cost per delivery (prints figures).")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 10 if args.quick else 40
    work = tempfile.mkdtemp(prefix="qremote-bench-trace-", dir="/tmp")
    os.chmod(work, 0o755)
    servers, launcher = [], None
    try:
        home_path = os.path.join(work, "qmail")
        bindir, interpreter = common.install_chain(home_path)
        home = common.Home(home_path)
        pki = PKI(os.path.join(work, "pki"))
        tracedir = os.path.join(work, "trace")
        os.makedirs(tracedir)
        plain = SMTPServer()
        tls = SMTPServer(tls_cert=pki.server("127.0.0.1"))
        servers += [plain, tls]
        with open(os.path.join(home_path, "control", "smtproutes"), "w") as out:
            out.write("plain.example:127.0.0.1:%d\ntls.example:127.0.0.1:%d\n" % (plain.port, tls.port))
        home.control("trustanchors", pki.ca_file + "\n")
        home.control("tlsstrictness", "0\n")
        message = os.path.join(work, "message")
        common.write_message(message, 4096, eightbit=False)
        launcher = common.Launcher(interpreter)
        print("the trace: interpreter %s, %d CPUs, load %.2f %.2f %.2f, %d rounds" % (
            interpreter, os.cpu_count(), *os.getloadavg(), rounds))
        control = os.path.join(home_path, "control", "tracedir")
        cpu = {}
        for _ in range(rounds + 2):  # the first two rounds warm the caches and are dropped
            for domain in ("plain.example", "tls.example"):
                for traced in (False, True):
                    if traced:
                        with open(control, "w") as out:
                            out.write(tracedir + "\n")
                    elif os.path.exists(control):
                        os.unlink(control)
                    m = launcher.run([os.path.join(bindir, "qmail-remote"), domain, "s@src.example", "r@" + domain],
                                     home.env(), message)
                    common.require_delivered(m, 1, domain)
                    cpu.setdefault((domain, traced), []).append(m.cpu)
        for domain, label in (("plain.example", "cleartext"), ("tls.example", "STARTTLS")):
            off = common.median(cpu[(domain, False)][2:]) * 1000
            on = common.median(cpu[(domain, True)][2:]) * 1000
            print("  %-10s CPU per delivery: %6.1f ms without trace, %6.1f ms with (%+.1f ms)" % (
                label, off, on, on - off))
        sizes = []
        for name in os.listdir(tracedir):
            with open(os.path.join(tracedir, name), "rb") as f:
                sizes += [len(line) + 1 for line in f.read().split(b"\n")[:-1]]
        print("  trace lines: %d, %.0f bytes each on average" % (len(sizes), sum(sizes) / max(1, len(sizes))))
        in_process(interpreter, work)
    finally:
        if launcher is not None:
            launcher.close()
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


# The trace's own work for one delivery, in one interpreter, repeated: what the chain's
# CPU figures above cannot resolve under the machine's noise.
MICRO = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
import marshal
import qremote.trace as trace
import qremote.tracefile as tracefile


def loading(module):
    # CPU of loading module as the installed bundle does: unmarshal its code, run it
    with open(module.__file__) as source:
        code = marshal.dumps(compile(source.read(), module.__file__, "exec"))
    start = time.process_time()
    for _ in range(2000):
        exec(marshal.loads(code), {"__name__": module.__name__, "__package__": "qremote"})
    return (time.process_time() - start) / 2000


t_trace, t_tracefile = loading(trace), loading(tracefile)
os.chdir(sys.argv[2])
os.makedirs("control", exist_ok=True)
with open("control/tracedir", "w") as f:
    f.write(sys.argv[2] + "/out\n")
os.makedirs("out", exist_ok=True)

class T:
    ip, name, port, protocol = "127.0.0.1", b"mx.example.org", 25, "smtp"

n = 2000
start = time.process_time()
for _ in range(n):
    trace.begin(True, b"example.org", b"s@src.example", [b"r@example.org"])
    trace.route(None, [T])
    trace.attempt(T, None)
    for code in (220, 250, 220):
        trace.event("reply", code=code)
    trace.tls_done({b"SSL_PROTOCOL": b"TLSv1.3", b"SSL_CIPHER": b"TLS_AES_256_GCM_SHA384", b"SSL_PEER_VERIFIED": b"1",
                    b"SSL_TLS_SNI_SERVERNAME": b"mx.example.org"})
    for code in (250, 250, 250, 354, 250):
        trace.event("reply", code=code)
    tracefile.finish("K", b"127.0.0.1 accepted message. (TLSv1.3 verified, cipher X)\nRemote host said: 250 ok\n")
    os.close(trace.FD)
per = (time.process_time() - start) / n
print("%.1f %.1f %.1f" % (t_trace * 1e6, t_tracefile * 1e6, per * 1e6))
"""


def in_process(interpreter, work):
    import subprocess

    scratch = os.path.join(work, "micro")
    os.makedirs(scratch)
    done = subprocess.run([interpreter, "-I", "-S", "-c", MICRO, os.path.join(TOP, "lib"), scratch],
                          capture_output=True, text=True, check=True)
    hooks, writer, per = (float(x) for x in done.stdout.split())
    print("  loading qremote.trace (every program, traced or not): %.0f us; qremote.tracefile (each program,"
          " only when tracing): %.0f us" % (hooks, writer))
    print("  the trace's own work in one process: begin + 12 events + assemble + append: %.0f us per delivery" % per)


if __name__ == "__main__":
    main()
