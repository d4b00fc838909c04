"""Benchmark of TLS in the chain (issue 4): prints figures, never passes or fails.

    .venv/bin/python tests/bench/bench_tls.py [--rounds 5] [--small-rounds 20] [--sizes 5,50] [--quick]

(the .venv interpreter: the certificates come from trustme). It installs the chain with
package/install into a scratch qmail tree (common.install_chain), routes example.org through
control/smtproutes to a loopback sink that offers STARTTLS, and compares, on the same sink,
the real chain with control/trustanchors set

    qmail-remote -> (STARTTLS) exec tlsc-io -> exec qmail-remote-io   + tlsc-io's relay process

with the plaintext chain (trustanchors removed: qmail-remote -> exec qmail-remote-io).

Sections:
[1] 5 MB and 50 MB messages: wall seconds, CPU seconds and peak RSS of each process, the
    TLS / plaintext time ratio (issue 4's target: within 2x) and RSS growth 5 -> 50 MB (flat ~ 0).
[2] Peak RSS of each program the chain pid runs, sampled (one round per size, see below).
[3] A 4 KB message: CPU per delivery over STARTTLS versus plaintext (the handshake's cost),
    and one sampled round's timeline: when each program started and the CPU it used.
[4] The trust-anchor forms: one-CA file, hashed directory, the system bundle; at
    tlsstrictness 0 (certificate not checked) and 2 (verified).
[5] tlsc-io + qmail-remote-io run by hand over implicit TLS (no qmail-remote), 50 MB.
[6] Checks: the sink alone (50 MB from memory, plaintext and over TLS), load average.

How each process is measured. Every delivery is forked from a tiny `python3 -IS` launcher
(common.py says why: a child's ru_maxrss starts from its parent's memory) that is also a
child subreaper (prctl PR_SET_CHILD_SUBREAPER). tlsc-io's relay, orphaned by its double
fork, is therefore reparented to the launcher instead of init, and the launcher reaps it with
wait4(): its rusage is the relay's own CPU time and its ru_maxrss, which is the kernel's VmHWM
of that process when it exited (exact, no sampling). The launcher tells the relay from the
chain pid by pid, and checks its name (/proc/PID/comm, still readable while it is a zombie:
waitid(WNOWAIT) first). The chain pid runs qmail-remote, tlsc-io and qmail-remote-io in turn
(exec); its ru_maxrss is the largest of the three. To split it, section [2] has the launcher
read /proc/PID/status (Name, VmHWM) of every child every millisecond: VmHWM only grows
within one program and restarts at exec, so the last sample under each name is that
program's peak, to within what it allocated in its last millisecond (a lower bound).
Sampling costs CPU, so those rounds are separate from the timed ones.

The sink (one forked process per connection, so its TLS work is not in the benchmark
process) answers every command, offers PIPELINING, 8BITMIME, SIZE and STARTTLS, reads DATA
in 256 KiB pieces (16 KiB TLS records inside TLS), counts the bytes and says how many in
its 250 reply: every delivery is checked (r then K, TLS named in the K report exactly when
it should be, every byte received). It sends the replies to pipelined commands in one
write with TCP_NODELAY, as real servers do: one write per reply meets the client's delayed
ACK (Nagle), a 40 ms stall per batch that once made STARTTLS look 80 ms slower than it is.
Each session logs its own CPU (getrusage), printed beside the chain's: under TLS the sink
decrypts, and on 2 cores it competes with the chain for the CPU.

Wall times on a shared machine: the plaintext and STARTTLS rounds are interleaved, and
[1] prints, besides the ratio of the medians, the median of the per-pair ratios (each pair
ran at the same moment) and best/best. CPU figures vary much less than wall times.
"""

import argparse
import marshal
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.bench import common  # noqa: E402
from tests.support.certs import PKI  # noqa: E402

SENDER = "sender@src.example"
RATIO_TARGET = 2.0
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

# Runs as `python3 -I -S -c LAUNCHER`. Request: (argv, env, stdin path, connect port or None,
# sample). Answer: (report bytes, seconds to the reports' EOF, processes, peaks) with processes
# [(role, comm, exit status, user s, sys s, ru_maxrss KiB, seconds to reaped)], role "chain"
# for the forked pid and "orphan" for what was reparented to us; peaks {(role, Name): VmHWM KiB,
# ("first", role, Name): seconds when first seen, ("cpu", role, Name) and ("queued", role, Name):
# the process's seconds on a CPU and waiting for one (schedstat) when last seen under that name}
# when sampling.
LAUNCHER = r"""
import ctypes, marshal, os, select, time, _socket
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
me = os.getpid()
cin, cout = os.dup(0), os.dup(1)
def readn(n):
    data = b""
    while len(data) < n:
        more = os.read(cin, n - len(data))
        if not more:
            os._exit(0)
        data += more
    return data
def children():
    try:
        with open("/proc/%d/task/%d/children" % (me, me), "rb") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []
def sample(chain, peaks, start):
    for p in children():
        try:
            with open("/proc/%d/status" % p, "rb") as f:
                status = f.read()
        except OSError:
            continue
        name, hwm = None, None
        for line in status.split(b"\n"):
            if line.startswith(b"Name:"):
                name = line.split(None, 1)[1].decode("latin-1")
            elif line.startswith(b"VmHWM:"):
                hwm = int(line.split()[1])
        try:
            with open("/proc/%d/schedstat" % p, "rb") as f:
                fields = f.read().split()
            # seconds on a CPU, and runnable but waiting for one, since the fork (ns resolution)
            ran, queued = int(fields[0]) / 1e9, int(fields[1]) / 1e9
        except (OSError, ValueError, IndexError):
            ran = queued = None
        if hwm is not None:
            key = ("chain" if p == chain else "orphan", name)
            if ran is not None:
                peaks[("cpu",) + key] = ran
                peaks[("queued",) + key] = queued
            if hwm > peaks.get(key, 0):
                peaks[key] = hwm
            first = ("first",) + key
            if first not in peaks:
                peaks[first] = time.monotonic() - start
while True:
    argv, env, stdin, port, sampling = marshal.loads(readn(int.from_bytes(readn(4), "big")))
    sock = None
    if port is not None:
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        sock.connect(("127.0.0.1", port))
    fd0 = os.open(stdin, os.O_RDONLY)
    r, w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(fd0, 0); os.dup2(w, 1); os.dup2(w, 2)
            if sock is not None:
                os.dup2(sock.fileno(), 6); os.dup2(sock.fileno(), 7)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(w); os.close(fd0)
    if sock is not None:
        sock.close()
    peaks = {}
    poller = select.poll()
    poller.register(r, select.POLLIN)
    chunks = []
    while True:
        if sampling:
            sample(pid, peaks, start)
        if not poller.poll(1 if sampling else None):
            continue
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    reports_at = time.monotonic() - start
    os.close(r)
    processes = []
    while True:
        if sampling:
            sample(pid, peaks, start)
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT | (os.WNOHANG if sampling else 0))
        except ChildProcessError:
            break
        if info is None:
            time.sleep(0.001)
            continue
        try:
            with open("/proc/%d/comm" % info.si_pid, "rb") as f:
                comm = f.read().strip().decode("latin-1")
        except OSError:
            comm = "?"
        got, status, ru = os.wait4(info.si_pid, 0)
        processes.append(("chain" if got == pid else "orphan", comm, status, ru.ru_utime, ru.ru_stime,
                          ru.ru_maxrss, time.monotonic() - start))
    answer = marshal.dumps((b"".join(chunks), reports_at, processes, peaks))
    os.write(cout, len(answer).to_bytes(4, "big") + answer)
"""


class Run:
    """One delivery as the launcher saw it."""

    def __init__(self, output, reports_at, processes, peaks):
        self.output, self.reports_at, self.peaks = output, reports_at, peaks
        self.chain = [p for p in processes if p[0] == "chain"][0]
        self.relays = [p for p in processes if p[0] == "orphan"]
        self.others = [p for p in processes if p[0] == "orphan" and p[1] != "tlsc-io"]

    @property
    def relay(self):
        return self.relays[0] if self.relays else None

    def cpu(self, process):
        return 0.0 if process is None else process[3] + process[4]

    @property
    def cpu_total(self):
        return sum(self.cpu(p) for p in [self.chain] + self.relays)

    @property
    def ended(self):
        return max(p[6] for p in [self.chain] + self.relays)


class Launcher:
    def __init__(self, interpreter):
        self.process = subprocess.Popen([interpreter, "-I", "-S", "-c", LAUNCHER],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, argv, stdin_path, port=None, sampling=False):
        request = marshal.dumps(([os.fsencode(a) for a in argv], {b"PATH": b"/usr/bin:/bin"},
                                 os.fsencode(stdin_path), port, sampling))
        self.process.stdin.write(struct.pack(">I", len(request)) + request)
        self.process.stdin.flush()
        head = self.process.stdout.read(4)
        if len(head) != 4:
            raise SystemExit("bench: the launcher died")
        return Run(*marshal.loads(self.process.stdout.read(struct.unpack(">I", head)[0])))

    def close(self):
        self.process.stdin.close()
        self.process.wait()


# --- the sink -------------------------------------------------------------------------

def _serve(conn, context, implicit):
    """One SMTP session: every command accepted, the message counted and dropped. As real
    servers do, the replies to pipelined commands go out in one write, with TCP_NODELAY:
    a reply per write would meet the client's delayed ACK (Nagle: a 40 ms stall)."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if implicit:
        conn = context.wrap_socket(conn, server_side=True)
    in_tls = implicit
    replies = [b"220 sink.test ESMTP\r\n"]
    buffer = b""
    while True:
        while b"\n" not in buffer:
            if replies:
                conn.sendall(b"".join(replies))
                replies = []
            more = conn.recv(65536)
            if not more:
                return
            buffer += more
        line, buffer = buffer.split(b"\n", 1)
        verb = line[:4].upper()
        if verb == b"EHLO":
            starttls = b"250-STARTTLS\r\n" if context is not None and not in_tls else b""
            replies.append(b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n" + starttls
                           + b"250 SIZE 1000000000\r\n")
        elif verb == b"STAR" and context is not None and not in_tls:
            conn.sendall(b"".join(replies) + b"220 go ahead\r\n")
            replies = []
            conn = context.wrap_socket(conn, server_side=True)
            in_tls, buffer = True, b""
        elif verb == b"DATA":
            conn.sendall(b"".join(replies) + b"354 go\r\n")
            replies = []
            tail, count = b"\r\n" + buffer, len(buffer)
            space = bytearray(262144)
            view = memoryview(space)
            while b"\r\n.\r\n" not in tail[-5:]:
                got = conn.recv_into(view)
                if not got:
                    return
                count += got
                tail = tail[-4:] + bytes(view[max(0, got - 5):got])
            buffer = b""
            replies.append(b"250 ok queued %d bytes%s\r\n" % (count, b" over TLS" if in_tls else b""))
        elif verb == b"QUIT":
            conn.sendall(b"".join(replies) + b"221 bye\r\n")
            return
        else:
            replies.append(b"250 ok\r\n")


def start_sink(context, implicit=False, log=None):
    """A forking sink on loopback in its own process: (pid, port). With log, each session
    appends its own CPU seconds (user + sys) to that file, before its connection closes."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    pid = os.fork()
    if pid == 0:
        try:
            import signal
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # no zombies
            while True:
                conn, _ = listener.accept()
                if os.fork():
                    conn.close()
                    continue
                listener.close()
                try:
                    _serve(conn, context, implicit)
                except OSError:
                    pass
                if log is not None:
                    import resource
                    usage = resource.getrusage(resource.RUSAGE_SELF)
                    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    os.write(fd, b"%.4f\n" % (usage.ru_utime + usage.ru_stime))
                    os.close(fd)
                os._exit(0)
        finally:
            os._exit(0)
    port = listener.getsockname()[1]
    listener.close()
    return pid, port


class SinkLog:
    """The CPU seconds of each sink session, in order."""

    def __init__(self, path):
        self.path = path
        self.seen = 0

    def next(self):
        """The CPU of the session after the last one read (it may still be closing: wait a little)."""
        for _ in range(200):
            try:
                with open(self.path) as log:
                    lines = log.read().split()
            except OSError:
                lines = []
            if len(lines) > self.seen:
                self.seen += 1
                return float(lines[self.seen - 1])
            time.sleep(0.01)
        raise SystemExit("bench: the sink logged no CPU for a session")


def sink_alone(port, context, size):
    """Seconds for a client in this process to push size bytes of DATA to the sink (over
    STARTTLS when context is given): the sink's own speed, as a check."""
    block = (b"x" * 76 + b"\r\n") * ((1 << 20) // 78)
    conn = socket.create_connection(("127.0.0.1", port))

    def command(text, want):
        conn.sendall(text)
        got = b""
        while want not in got:
            more = conn.recv(4096)
            if not more:
                raise SystemExit("bench: the sink hung up: %r" % got)
            got += more
    try:
        command(b"", b"220 ")
        command(b"EHLO bench\r\n", b"250 SIZE")
        if context is not None:
            command(b"STARTTLS\r\n", b"220 ")
            conn = context.wrap_socket(conn, server_hostname=None)
            command(b"EHLO bench\r\n", b"250 SIZE")
        command(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", b"354 ")
        start = time.monotonic()
        sent = 0
        while sent < size:
            conn.sendall(block)
            sent += len(block)
        command(b".\r\n", b"queued")
        elapsed = time.monotonic() - start
        conn.sendall(b"QUIT\r\n")
    finally:
        conn.close()
    return elapsed, sent


# --- the measurements -----------------------------------------------------------------

class Bench:
    def __init__(self, work, home, bindir, launcher, pki, port, sink_log):
        self.work, self.home, self.bindir, self.launcher, self.pki, self.port = work, home, bindir, launcher, pki, port
        self.sink_log = sink_log
        self.argv = [os.path.join(bindir, "qmail-remote"), "example.org", SENDER, "rcpt@example.org"]

    def set_tls(self, anchors, strictness=0):
        """control/trustanchors (None: removed, so the plaintext chain) and control/tlsstrictness."""
        path = os.path.join(self.home.path, "control", "trustanchors")
        if anchors is None:
            if os.path.exists(path):
                os.unlink(path)
        else:
            self.home.control("trustanchors", anchors + "\n")
        self.home.control("tlsstrictness", "%d\n" % strictness)

    def deliver(self, message, size, tls, sampling=False, what="delivery", verified=False):
        run = self.launcher.run(self.argv, message, sampling=sampling)
        run.sink_cpu = self.sink_log.next()
        check(run, size, tls, what, verified)
        return run


def check(run, size, tls, what, verified=False):
    """Stop on a failed delivery: its figures would mean nothing."""
    output = run.output
    queued = output.rsplit(b"queued ", 1)[-1].split(b" ")[0]
    good = (output.startswith(b"r\0K") and queued.isdigit() and int(queued) >= size
            and (b"over TLS" in output) == tls and (b"TLSv1" in output) == tls
            and (not verified or b" verified" in output) and run.chain[2] == 0)
    if tls and not (run.relay is not None and run.relay[1] == "tlsc-io"):
        good = False
    if not good:
        raise SystemExit("bench: %s failed: reports %r, processes %r" % (
            what, output[:600], [run.chain] + run.relays))


def med(values):
    return common.median(list(values))


def mib(kib):
    return kib / 1024.0


def _row(*cells):
    """One line of the table of [1]: mode, what, then numbers (3 decimals; MB/s: 1) or text."""
    shown = []
    for index, cell in enumerate(cells[2:8]):
        shown.append(cell if isinstance(cell, str) else ("%.1f" % cell if index == 2 else "%.3f" % cell))
    return "    %-9s %-20s %7s %7s %7s %7s %7s %7s   %s" % ((cells[0], cells[1]) + tuple(shown) + (cells[8],))


def big_messages(bench, sizes, rounds, anchors):
    """[1]: rounds x (plaintext, TLS) per size, interleaved so that load hits both alike."""
    print("\n[1] Large messages through the chain (qmail-remote routed by smtproutes), STARTTLS vs plaintext;"
          " %d rounds, medians" % rounds, flush=True)
    print("    (chain pid: qmail-remote then qmail-remote-io, or under STARTTLS qmail-remote, tlsc-io,"
          " qmail-remote-io; relay: tlsc-io's grandchild)")
    results = {}
    for size_mb in sizes:
        message = os.path.join(bench.work, "message-%dMB" % size_mb)
        size = common.write_message(message, size_mb * 1000 * 1000, seed=size_mb)
        for mode in ("plaintext", "STARTTLS"):  # a warm-up each (page cache, smtproutes.cdb)
            bench.set_tls(anchors if mode == "STARTTLS" else None)
            bench.deliver(message, size, mode == "STARTTLS", what="warm-up")
        runs = {"plaintext": [], "STARTTLS": []}
        for _ in range(rounds):
            for mode in ("plaintext", "STARTTLS"):
                bench.set_tls(anchors if mode == "STARTTLS" else None)
                runs[mode].append(bench.deliver(message, size, mode == "STARTTLS",
                                                what="the %d MB message (%s)" % (size_mb, mode)))
        results[size_mb] = (size, runs, message)
        print("  %d MB message (%.1f MB on disk)" % (size_mb, size / 1e6))
        print(_row("", "", "wall s", "min s", "MB/s", "CPU s", "user", "sys", "peak RSS MiB (max)"))
        for mode in ("plaintext", "STARTTLS"):
            rs = runs[mode]
            wall = med(r.reports_at for r in rs)
            print(_row(mode, "to the last report", wall, min(r.reports_at for r in rs), size / 1e6 / wall,
                       med(r.cpu_total for r in rs), "", "", "(CPU: chain pid + relay)"))
            processes = [("chain pid", lambda r: r.chain)]
            if mode == "STARTTLS":
                processes.append(("relay", lambda r: r.relay))
            for label, pick in processes:
                print(_row("", label + " ended", med(pick(r)[6] for r in rs), "", "", med(r.cpu(pick(r)) for r in rs),
                           med(pick(r)[3] for r in rs), med(pick(r)[4] for r in rs),
                           "%5.1f (%.1f)" % (mib(med(pick(r)[5] for r in rs)), mib(max(pick(r)[5] for r in rs)))))
            print(_row("", "the sink's session", "", "", "", med(r.sink_cpu for r in rs), "", "", "(its own process)"))
        plain = med(r.reports_at for r in runs["plaintext"])
        tls = med(r.reports_at for r in runs["STARTTLS"])
        ratio = tls / plain
        # each STARTTLS round ran right after a plaintext one: their ratio shares that moment's load
        paired = med(t.reports_at / p.reports_at for p, t in zip(runs["plaintext"], runs["STARTTLS"]))
        best = min(r.reports_at for r in runs["STARTTLS"]) / min(r.reports_at for r in runs["plaintext"])
        print("    TLS / plaintext wall: %.2f (target <= %.1f: %s); paired rounds' median %.2f, best/best %.2f;"
              " CPU %.2f" % (ratio, RATIO_TARGET, "meets" if ratio <= RATIO_TARGET else "MISSES", paired, best,
                             med(r.cpu_total for r in runs["STARTTLS"]) / med(r.cpu_total for r in runs["plaintext"])),
              flush=True)
    if len(sizes) >= 2:
        small, big = sizes[0], sizes[-1]
        print("  RSS growth %d MB -> %d MB (flat = ~0; the relay's queues are bounded: 4 x relay.LIMIT at most),"
              " max over rounds:" % (small, big))
        for label, mode, pick in (("plaintext chain pid", "plaintext", lambda r: r.chain),
                                  ("STARTTLS chain pid", "STARTTLS", lambda r: r.chain),
                                  ("STARTTLS relay", "STARTTLS", lambda r: r.relay)):
            grow = (max(pick(r)[5] for r in results[big][1][mode]) - max(pick(r)[5] for r in results[small][1][mode]))
            print("    %-20s %+6.2f MiB" % (label, mib(grow)))
    return results


def sampled_peaks(bench, results, anchors):
    """[2]: per program of the chain pid, from /proc sampling (one round per size and mode)."""
    print("\n[2] Peak RSS of each program (VmHWM sampled every 1 ms; exact figures for the processes in [1])",
          flush=True)
    for size_mb, (size, _, message) in results.items():
        for mode in ("plaintext", "STARTTLS"):
            bench.set_tls(anchors if mode == "STARTTLS" else None)
            run = bench.deliver(message, size, mode == "STARTTLS", sampling=True, what="sampled round")
            parts = ["%s %s %.1f" % ("relay" if role == "orphan" else "", name, mib(kib))
                     for (role, name), kib in sorted(peak_items(run), key=lambda item: item[0][0])]
            print("  %2d MB %-9s %s  (MiB; exact: chain pid %.1f%s)" % (
                size_mb, mode, ", ".join(p.strip() for p in parts), mib(run.chain[5]),
                ", relay %.1f" % mib(run.relay[5]) if run.relay else ""), flush=True)
            print("        timeline (ms after the fork): %s; reports ended %.0f" % (
                timeline(run), 1000 * run.reports_at), flush=True)


def peak_items(run):
    """(role, program name) -> VmHWM KiB, without the launcher's child before its exec."""
    return [(key, kib) for key, kib in run.peaks.items() if key[0] in ("chain", "orphan") and key[1] != "python3"]


def timeline(run):
    """Each program of the chain pid, and the relay: when it was first seen, in ms after the
    fork, the CPU ms it used and the ms it was runnable but waited for a CPU (the process's
    schedstat when last seen under that name, less the previous program's); sampled every
    1 ms, so to within about 1 ms."""
    firsts = sorted((at, key[2], key[1]) for key, at in run.peaks.items() if key[0] == "first" and key[2] != "python3")
    parts, before = [], {"chain": (0.0, 0.0), "orphan": (0.0, 0.0)}
    for at, name, role in firsts:
        ran, queued = run.peaks.get(("cpu", role, name)), run.peaks.get(("queued", role, name))
        cpu = ""
        if ran is not None:
            cpu = " (CPU %.0f, waited for a CPU %.0f)" % (1000 * (ran - before[role][0]),
                                                          1000 * (queued - before[role][1]))
            before[role] = (ran, queued)
        parts.append("%s%s at %.0f%s" % ("relay " if role == "orphan" else "", name, 1000 * at, cpu))
    return ", ".join(parts)


def small_messages(bench, rounds, anchors):
    """[3]: a 4 KB message, CPU per delivery, STARTTLS vs plaintext."""
    message = os.path.join(bench.work, "message-4KB")
    size = common.write_message(message, 4096)
    runs = {"plaintext": [], "STARTTLS": []}
    for mode in ("plaintext", "STARTTLS"):
        bench.set_tls(anchors if mode == "STARTTLS" else None)
        bench.deliver(message, size, mode == "STARTTLS", what="warm-up")
    for _ in range(rounds):
        for mode in ("plaintext", "STARTTLS"):
            bench.set_tls(anchors if mode == "STARTTLS" else None)
            runs[mode].append(bench.deliver(message, size, mode == "STARTTLS", what="the 4 KB message"))
    print("\n[3] A 4 KB message: per delivery, %d rounds, medians (ms)" % rounds)
    for mode in ("plaintext", "STARTTLS"):
        rs = runs[mode]
        relay = ("  relay CPU %5.1f  RSS %.1f MiB" % (1000 * med(r.cpu(r.relay) for r in rs),
                                                     mib(med(r.relay[5] for r in rs)))) if mode == "STARTTLS" else ""
        print("  %-9s CPU total %5.1f (chain pid %5.1f%s)  wall %5.1f  chain pid RSS %.1f MiB  [sink CPU %.1f]" % (
            mode, 1000 * med(r.cpu_total for r in rs), 1000 * med(r.cpu(r.chain) for r in rs), relay,
            1000 * med(r.reports_at for r in rs), mib(med(r.chain[5] for r in rs)), 1000 * med(r.sink_cpu for r in rs)))
    for mode in ("plaintext", "STARTTLS"):
        bench.set_tls(anchors if mode == "STARTTLS" else None)
        run = bench.deliver(message, size, mode == "STARTTLS", sampling=True, what="the sampled 4 KB message")
        print("  %-9s timeline, one sampled round (ms after fork, first seen): %s; reports ended %.0f" % (
            mode, timeline(run), 1000 * run.reports_at))
    extra_cpu = med(r.cpu_total for r in runs["STARTTLS"]) - med(r.cpu_total for r in runs["plaintext"])
    extra_wall = med(r.reports_at for r in runs["STARTTLS"]) - med(r.reports_at for r in runs["plaintext"])
    print("  STARTTLS costs %+.1f ms CPU, %+.1f ms wall per delivery (tlsc-io's start-up, the handshake,"
          " EHLO again, the relay)" % (1000 * extra_cpu, 1000 * extra_wall), flush=True)
    return message, size


def anchor_forms(bench, message, size, rounds):
    """[4]: CPU per 4 KB delivery with each form of control/trustanchors."""
    print("\n[4] Trust-anchor forms, 4 KB message, %d rounds, median CPU per delivery (chain pid + relay;"
          " in brackets: more than plaintext)" % rounds)
    forms = [("file, one CA", bench.pki.ca_file, (0, 2)),
             ("hashed directory, one CA", bench.pki.ca_dir, (0, 2))]
    if os.path.exists(SYSTEM_BUNDLE):
        with open(SYSTEM_BUNDLE, "rb") as bundle:
            count = bundle.read().count(b"-----BEGIN CERTIFICATE-----")
        forms.append(("system bundle (%d CAs)" % count, SYSTEM_BUNDLE, (0,)))
        # strictness 2 must verify: the same bundle with the test CA at its end
        combined = os.path.join(bench.work, "bundle-plus-test-ca.pem")
        with open(combined, "wb") as out:
            for path in (SYSTEM_BUNDLE, bench.pki.ca_file):
                with open(path, "rb") as part:
                    out.write(part.read())
        forms.append(("system bundle + test CA (%d CAs)" % (count + 1), combined, (2,)))
    if os.path.isdir("/etc/ssl/certs"):
        forms.append(("system hashed directory /etc/ssl/certs/", "/etc/ssl/certs/", (0,)))
    cases = [(label, anchors, level) for label, anchors, levels in forms for level in levels]
    runs = {case: [] for case in cases}
    for case in cases:
        bench.set_tls(case[1], case[2])
        bench.deliver(message, size, True, what="warm-up", verified=case[2] == 2)
    plain = []
    for _ in range(rounds):  # round-robin, so that the machine's load falls on every form alike
        bench.set_tls(None)
        plain.append(bench.deliver(message, size, False, what="the plaintext 4 KB message"))
        for case in cases:
            bench.set_tls(case[1], case[2])
            runs[case].append(bench.deliver(message, size, True, what="anchors %s" % case[0], verified=case[2] == 2))
    base = med(r.cpu_total for r in plain)
    print("  %-42s               CPU %5.1f ms                              wall %5.1f ms" % (
        "plaintext (no trustanchors), same rounds", 1000 * base, 1000 * med(r.reports_at for r in plain)))
    for label, anchors, level in cases:
        rs = runs[(label, anchors, level)]
        cpu = med(r.cpu_total for r in rs)
        print("  %-42s strictness %d: CPU %5.1f ms (%+5.1f; chain pid %5.1f, relay %4.1f)  wall %5.1f ms" % (
            label, level, 1000 * cpu, 1000 * (cpu - base), 1000 * med(r.cpu(r.chain) for r in rs),
            1000 * med(r.cpu(r.relay) for r in rs), 1000 * med(r.reports_at for r in rs)), flush=True)
    bench.set_tls(None)


def by_hand(bench, results, pki, rounds, plain_port, implicit_port):
    """[5]: tlsc-io + qmail-remote-io by hand over implicit TLS, 50 MB (no qmail-remote)."""
    size_mb = max(results)
    size, _, message = results[size_mb]
    io = [os.path.join(bench.bindir, "qmail-remote-io"), "-g", "-h", "bench.test", "--", "127.0.0.1",
          SENDER, "rcpt@example.org"]
    tls = [os.path.join(bench.bindir, "tlsc-io"), "-k", "mx.test", "-a", pki.ca_file, "-v", "--"] + io
    print("\n[5] By hand, %d MB: qmail-remote-io alone vs tlsc-io + qmail-remote-io over implicit TLS;"
          " %d rounds, medians" % (size_mb, rounds))
    walls = {}
    for label, argv, port, is_tls in (("plaintext", io, plain_port, False), ("implicit TLS", tls, implicit_port, True)):
        rs = []
        for _ in range(rounds):
            run = bench.launcher.run(argv, message, port=port)
            check(run, size, is_tls, "the by-hand %s delivery" % label)
            rs.append(run)
        walls[label] = med(r.reports_at for r in rs)
        relay = ("  relay CPU %.3f s RSS %.1f MiB" % (med(r.cpu(r.relay) for r in rs), mib(med(r.relay[5] for r in rs)))
                 if is_tls else "")
        print("  %-12s wall %.3f s  chain pid CPU %.3f s RSS %.1f MiB%s" % (
            label, walls[label], med(r.cpu(r.chain) for r in rs), mib(med(r.chain[5] for r in rs)), relay), flush=True)
    print("  implicit TLS / plaintext wall: %.2f" % (walls["implicit TLS"] / walls["plaintext"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each large delivery")
    parser.add_argument("--small-rounds", type=int, default=20, help="rounds of each 4 KB delivery")
    parser.add_argument("--sizes", default="5,50", help="large message sizes in MB (default 5,50)")
    parser.add_argument("--quick", action="store_true", help="1 large round, 5 small rounds")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.small_rounds = 1, 5
    sizes = [int(s) for s in args.sizes.split(",")]
    work = common.scratch_dir()
    sinks, launcher = [], None
    try:
        home_path = os.path.join(work, "qmail")
        bindir, interpreter = common.install_chain(home_path)
        if not os.path.exists(os.path.join(bindir, "tlsc-io")):
            raise SystemExit("bench: package/install does not install tlsc-io")
        home = common.Home(home_path)
        pki = PKI(os.path.join(work, "pki"))
        # the certificate names 127.0.0.1 too: an IP route is verified against the address (strictness 2)
        cert, key = pki.server("mx.test", "127.0.0.1")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        sink_log = SinkLog(os.path.join(work, "sink-cpu"))
        pid, port = start_sink(context, log=sink_log.path)
        sinks.append(pid)
        plain_pid, plain_port = start_sink(None)
        implicit_pid, implicit_port = start_sink(context, implicit=True)
        sinks += [plain_pid, implicit_pid]
        home.route(port)  # example.org:[127.0.0.1]:port
        launcher = Launcher(interpreter)
        bench = Bench(work, home, bindir, launcher, pki, port, sink_log)
        print("qremote TLS benchmark: interpreter %s, %d CPUs, load %.2f %.2f %.2f" % (
            interpreter, os.cpu_count(), *os.getloadavg()), flush=True)
        print("(STARTTLS: control/trustanchors = a one-CA file, tlsstrictness 0, unless said otherwise;"
              " the sink negotiates %s)" % "TLS 1.3", flush=True)

        results = big_messages(bench, sizes, args.rounds, pki.ca_file)
        sampled_peaks(bench, results, pki.ca_file)
        message, size = small_messages(bench, args.small_rounds, pki.ca_file)
        anchor_forms(bench, message, size, max(5, args.small_rounds // 2))
        by_hand(bench, results, pki, args.rounds, plain_port, implicit_port)

        print("\n[6] Checks")
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        for label, context_ in (("plaintext", None), ("STARTTLS", client)):
            elapsed, sent = sink_alone(port, context_, 50 * 1000 * 1000)
            print("  the sink alone, 50 MB from memory, %-9s %.3f s (%.0f MB/s)" % (
                label, elapsed, sent / elapsed / 1e6))
        print("  load average at the end: %.2f %.2f %.2f (2 cores shared: compare CPU figures first)"
              % os.getloadavg(), flush=True)
    finally:
        if launcher is not None:
            launcher.close()
        for pid in sinks:
            try:
                os.kill(pid, 15)
                os.waitpid(pid, 0)
            except OSError:
                pass
        common.remove(work)


if __name__ == "__main__":
    main()
