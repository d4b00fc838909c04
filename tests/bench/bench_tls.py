"""Benchmark: a 50 MB message over implicit TLS through tlsc-io + qmail-remote-io, versus the
same message in plaintext through qmail-remote-io alone. Prints figures only.

    .venv/bin/python tests/bench/bench_tls.py [--size-mb 50] [--rounds 3]

Each delivery is forked from a tiny launcher (see common.py for why) that is also a child
subreaper (prctl PR_SET_CHILD_SUBREAPER): tlsc-io's relay, orphaned by its double fork, is
reparented to it, so wait4() gives the relay's own CPU time and peak RSS (ru_maxrss), as it
gives those of the pid that runs tlsc-io and then, after exec, qmail-remote-io (the
ru_maxrss of that pid is the larger of the two). The sink server runs in its own process.
"""

import argparse
import marshal
import os
import socket
import ssl
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.bench import common  # noqa: E402
from tests.support.certs import PKI  # noqa: E402

LAUNCHER = r"""
import ctypes, marshal, os, sys, time, _socket
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
cin, cout = 0, 1
def readn(n):
    data = b""
    while len(data) < n:
        more = os.read(cin, n - len(data))
        if not more:
            os._exit(0)
        data += more
    return data
while True:
    argv, env, stdin, port = marshal.loads(readn(int.from_bytes(readn(4), "big")))
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.connect(("127.0.0.1", port))
    fd0 = os.open(stdin, os.O_RDONLY)
    r, w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(fd0, 0); os.dup2(w, 1)
            os.dup2(sock.fileno(), 6); os.dup2(sock.fileno(), 7)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(w); os.close(fd0); sock.close()
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    reports_at = time.monotonic() - start
    os.close(r)
    processes = []
    while True:
        try:
            got, status, ru = os.wait4(-1, 0)
        except ChildProcessError:
            break
        processes.append((got == pid, status, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, time.monotonic() - start))
    answer = marshal.dumps((b"".join(chunks), reports_at, processes))
    os.write(cout, len(answer).to_bytes(4, "big") + answer)
"""


def sink(listener, context):
    """Serve SMTP deliveries forever: every command accepted, the message counted and dropped."""
    while True:
        conn, _ = listener.accept()
        if os.fork():
            conn.close()
            continue
        listener.close()
        if context is not None:
            conn = context.wrap_socket(conn, server_side=True)
        conn.sendall(b"220 sink.test ESMTP\r\n")
        buffer = b""
        while True:
            while b"\n" not in buffer:
                more = conn.recv(65536)
                if not more:
                    os._exit(0)
                buffer += more
            line, buffer = buffer.split(b"\n", 1)
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 1000000000\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go\r\n")
                tail, count = buffer, len(buffer)
                while not tail.endswith(b"\r\n.\r\n") and b"\r\n.\r\n" not in tail:
                    more = conn.recv(262144)
                    if not more:
                        os._exit(0)
                    count += len(more)
                    tail = tail[-4:] + more
                buffer = b""
                conn.sendall(b"250 ok queued %d bytes\r\n" % count)
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                os._exit(0)
            else:
                conn.sendall(b"250 ok\r\n")


def start_sink(context):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    pid = os.fork()
    if pid == 0:
        try:
            sink(listener, context)
        finally:
            os._exit(0)
    port = listener.getsockname()[1]
    listener.close()
    return pid, port


class Launcher:
    def __init__(self, interpreter):
        self.process = subprocess.Popen([interpreter, "-I", "-S", "-c", LAUNCHER],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, argv, stdin_path, port):
        request = marshal.dumps(([os.fsencode(a) for a in argv], {b"PATH": b"/usr/bin:/bin"},
                                 os.fsencode(stdin_path), port))
        self.process.stdin.write(struct.pack(">I", len(request)) + request)
        self.process.stdin.flush()
        size = struct.unpack(">I", self.process.stdout.read(4))[0]
        return marshal.loads(self.process.stdout.read(size))

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = common.scratch_dir()
    try:
        bindir, interpreter = common.install_chain(os.path.join(work, "qmail"))
        tlsc = os.path.join(bindir, "tlsc-io")
        if not os.path.exists(tlsc):
            raise SystemExit("bench: package/install does not install tlsc-io yet")
        pki = PKI(os.path.join(work, "pki"))
        cert, key = pki.server("mx.test")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        message = os.path.join(work, "message")
        size = common.write_message(message, args.size_mb * 1024 * 1024)
        io = [os.path.join(bindir, "qmail-remote-io"), "-g", "-h", "bench.test", "--", "127.0.0.1",
              "a@src.test", "b@mx.test"]
        plain_pid, plain_port = start_sink(None)
        tls_pid, tls_port = start_sink(context)
        launcher = Launcher(interpreter)
        print("message: %.1f MB; %d rounds each; medians" % (size / 1e6, args.rounds))
        rows = {}
        for name, argv, port in (
                ("plaintext", io, plain_port),
                ("TLS", [tlsc, "-k", "mx.test", "-a", pki.ca_file, "-v", "--"] + io, tls_port)):
            results = []
            for _ in range(args.rounds):
                output, reports_at, processes = launcher.run(argv, message, port)
                received = output.rsplit(b"queued ", 1)[-1].split(b" ")[0]
                if not output.startswith(b"r\0K") or not received.isdigit() or int(received) < size:
                    raise SystemExit("bench: %s delivery failed: %r" % (name, output[:500]))
                results.append((reports_at, processes))
            rows[name] = results
        launcher.close()
        for pid in (plain_pid, tls_pid):
            os.kill(pid, 15)
            os.waitpid(pid, 0)
        for name, results in rows.items():
            wall = common.median([r[0] for r in results])
            print("%-9s  wall to last report %.2f s (%.1f MB/s)" % (name, wall, size / 1e6 / wall))
            for label, is_chain in (("chain pid" if name == "TLS" else "qmail-remote-io", True), ("relay", False)):
                procs = [p for _, ps in results for p in ps if p[0] == is_chain]
                if not procs:
                    continue
                print("           %-16s cpu %.2f s  peak RSS %.1f MiB  ended %.2f s after start" % (
                    label, common.median([p[2] for p in procs]), common.median([p[3] for p in procs]) / 1024.0,
                    common.median([p[4] for p in procs])))
        if "TLS" in rows and "plaintext" in rows:
            ratio = common.median([r[0] for r in rows["TLS"]]) / common.median([r[0] for r in rows["plaintext"]])
            print("TLS / plaintext wall time: %.2f" % ratio)
        print("(chain pid under TLS: tlsc-io, then qmail-remote-io after exec; its peak RSS is the larger of the two)")
    finally:
        common.remove(work)


if __name__ == "__main__":
    main()
