"""Benchmark of tlsc-io's certificate checks (issue 11): prints figures, never passes or fails.

    .venv/bin/python tests/bench/bench_tlsverify.py [--rounds 30]

It installs the chain with package/install into a scratch qmail tree (common.install_chain)
and runs the installed tlsc-io over implicit TLS against a loopback server (a forked
process, so its TLS work is not counted) that sends its leaf and CA, for each way of
checking the server:

    none      no check (tlsstrictness 0)
    -v -a     verified against a one-CA file (tlsstrictness 2)
    -f        a SHA-256 pin
    -D 3 1 1  DANE-EE, the SubjectPublicKeyInfo's SHA-256 (the DER walker, no library)
    -D 2 0 1  DANE-TA, the CA certificate's SHA-256 (imports cryptography's x509.verification)
              run where there is no anchor cache: every run takes the cold path
    warm      the same DANE-TA record run in the qmail home, whose run/qmail-remote/dane-ta
              holds the anchor (kept by the warm-up run): OpenSSL verifies, no cryptography

PROG is /bin/true, so each figure is tlsc-io's start, handshake and check (and an exec of
true): wall milliseconds from fork to the exit, CPU milliseconds of that process (user +
sys, wait4's rusage; the relay it forks is orphaned and not counted: it has nothing to
relay). Rounds of the cases are interleaved. Then, apart: what importing cryptography's
verifier costs in the installed bundle's interpreter (-X importtime's total and the CPU
of a `python -IS -c "import ..."` beside a bare one).
"""

import argparse
import hashlib
import os
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.bench import common  # noqa: E402
from tests.support.certs import PKI  # noqa: E402


def serve(listener, context):
    """The server, in a forked process: one handshake per connection, then read to EOF."""
    while True:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                while tls.recv(65536):
                    pass
        except (ssl.SSLError, OSError):
            pass


def start_server(chain, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        try:
            serve(listener, context)
        finally:
            os._exit(0)
    listener.close()
    return pid, port


def once(tlsc, options, port, cwd):
    """(wall ms, CPU ms, exit status) of one tlsc-io run in the directory cwd."""
    sock = socket.create_connection(("127.0.0.1", port))
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(sock.fileno(), 6)
            os.dup2(sock.fileno(), 7)
            os.chdir(cwd)
            os.execve(tlsc, [tlsc] + options + ["--", "/bin/true"], {"PATH": "/usr/bin:/bin"})
        finally:
            os._exit(127)
    sock.close()
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - started
    return wall * 1000, (usage.ru_utime + usage.ru_stime) * 1000, status


def import_cost(interpreter, bundle):
    """(importtime total ms, CPU ms beyond a bare start) of cryptography's verifier in the bundle."""
    code = ("import sys; sys.path.insert(0, %r); "
            "from cryptography import x509; from cryptography.x509.verification import PolicyBuilder" % bundle)
    done = subprocess.run([interpreter, "-IS", "-X", "importtime", "-c", code], capture_output=True, text=True)
    total = 0
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            cells = line.split("|")
            if cells[1].strip().isdigit() and not cells[2].startswith("  "):  # top level: counted once
                total += int(cells[1])
    cpu = {}
    for label, source in (("bare", "import sys; sys.path.insert(0, %r)" % bundle), ("cryptography", code)):
        samples = []
        for _ in range(10):
            before = os.times()
            subprocess.run([interpreter, "-IS", "-c", source], check=True)
            after = os.times()
            samples.append((after.children_user + after.children_system
                            - before.children_user - before.children_system) * 1000)
        cpu[label] = common.median(samples)
    return total / 1000, cpu["cryptography"] - cpu["bare"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    work = common.scratch_dir()
    try:
        home = os.path.join(work, "qmail")
        bindir, interpreter = common.install_chain(home)
        tlsc = os.path.join(bindir, "tlsc-io")
        pki = PKI(os.path.join(work, "pki"))
        cert, key = pki.server("mx.example")
        chain = os.path.join(work, "chain.pem")
        with open(chain, "w") as out, open(cert) as leaf, open(pki.ca_file) as ca:
            out.write(leaf.read() + ca.read())
        with open(cert) as f:
            leaf_der = ssl.PEM_cert_to_DER_cert(f.read())
        with open(pki.ca_file) as f:
            ca_der = ssl.PEM_cert_to_DER_cert(f.read())
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        spki = x509.load_der_x509_certificate(leaf_der).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        cases = [
            ("none", ["-k", "mx.example"]),
            ("-v -a ca.pem", ["-k", "mx.example", "-a", pki.ca_file, "-v"]),
            ("-f sha256", ["-k", "mx.example", "-f", hashlib.sha256(leaf_der).hexdigest()]),
            ("-D 3 1 1", ["-k", "mx.example", "-D", "3 1 1 " + hashlib.sha256(spki).hexdigest()]),
            ("-D 2 0 1", ["-k", "mx.example", "-D", "2 0 1 " + hashlib.sha256(ca_der).hexdigest()]),
            ("-D 2 0 1 warm", ["-k", "mx.example", "-D", "2 0 1 " + hashlib.sha256(ca_der).hexdigest()]),
        ]
        # the cache is relative to the working directory: the home has one, work none
        where = {name: home if name.endswith(" warm") else work for name, _ in cases}
        server, port = start_server(chain, key)
        try:
            results = {name: [] for name, _ in cases}
            for name, options in cases:  # warm the page cache and check each case works
                wall, cpu, status = once(tlsc, options, port, where[name])
                if status != 0:
                    raise SystemExit("bench: tlsc-io %s exited %d" % (name, status))
            for _ in range(args.rounds):
                for name, options in cases:
                    results[name].append(once(tlsc, options, port, where[name]))
            if not os.listdir(os.path.join(home, "run", "qmail-remote", "dane-ta")):
                raise SystemExit("bench: the warm case kept no anchor")
        finally:
            os.kill(server, 9)
            os.waitpid(server, 0)
        print("tlsc-io over implicit TLS on loopback, PROG /bin/true, %d rounds each (medians; %s)"
              % (args.rounds, "load %.2f %.2f %.2f" % os.getloadavg()))
        print("%-16s %10s %10s %14s" % ("check", "wall ms", "CPU ms", "CPU vs none"))
        base = common.median([cpu for _, cpu, _ in results["none"]])
        for name, _ in cases:
            wall = common.median([w for w, _, _ in results[name]])
            cpu = common.median([c for _, c, _ in results[name]])
            print("%-16s %10.1f %10.1f %+13.1f" % (name, wall, cpu, cpu - base))
        bundle = os.path.realpath(os.path.join(home, "lib", "qremote"))
        total, cpu = import_cost(interpreter, bundle)
        print("import cryptography.x509.verification in the bundle: -X importtime %.1f ms,"
              " CPU %.1f ms beyond a bare start (median of 10)" % (total, cpu))
    finally:
        common.remove(work)


if __name__ == "__main__":
    main()
