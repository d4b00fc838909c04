"""Shared helpers of the benchmarks: install the chain, a scratch qmail home, a fast sink
SMTP server, a realistic message, and a launcher that measures each delivery.

Why a launcher process: ru_maxrss of a child starts from the memory of the process it
was forked from (fork copies the RSS counters; vfork/posix_spawn even hands the
parent's high-water mark to the child at exec). Spawned from this script (threads,
sockets, tens of MB) every delivery would look that big. So the deliveries are forked
from a tiny `python3 -I -S` launcher started once, which waits for each with wait4()
and sends back its rusage: user+sys CPU and ru_maxrss of the whole chain, since the
chain execs in the same pid and Linux keeps ru_maxrss across exec. The launcher's own
cost (fork, exec of /bin/true) is measured and printed as the wrapper overhead; the
RSS it leaves is a floor (about 5 MB), not an addition: ru_maxrss is a maximum.
"""

import marshal
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if TOP not in sys.path:
    sys.path.insert(0, TOP)

from tests.support import net  # noqa: E402

ME = "me.example"


# --- installing the chain -------------------------------------------------------------

def install_chain(home, attempts=3):
    """package/install into home (a fresh qmail tree): (bin directory, interpreter of the commands).

    pip builds the source tree in place (its build/ directory), so an install running at
    the same time from the same checkout (a test session) can make this one fail with
    "File exists": it is tried again after a pause.
    """
    for attempt in range(attempts):
        done = subprocess.run([sys.executable, os.path.join(TOP, "package", "install"), "--create", "--qmailhome", home],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if done.returncode == 0:
            break
        time.sleep(5)
    else:
        raise SystemExit("bench: package/install failed:\n" + done.stdout.decode("utf-8", "replace"))
    bindir = os.path.join(home, "bin")
    with open(os.path.join(bindir, "qmail-remote")) as command:
        shebang = command.readline()
    interpreter = shebang[2:].split()[0]  # "#!/usr/bin/python3 -IS"
    return bindir, interpreter


class Home:
    """The installed qmail tree used as the qmail home (its paths.py points here, as in
    production: no QMAILHOME in the environment)."""

    def __init__(self, path):
        self.path = path
        for sub in ("control", "run/qmail-remote", "queue/lock"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        self.control("me", ME + "\n")

    def control(self, name, text):
        with open(os.path.join(self.path, "control", name), "w") as out:
            out.write(text)

    def route(self, port, domain="example.org", ip="127.0.0.1"):
        """smtproutes: domain -> [ip]:port (an IP route: no DNS)."""
        path = os.path.join(self.path, "control", "smtproutes")
        with open(path, "w") as out:
            out.write("%s:[%s]:%d\n" % (domain, ip, port))
        now = time.time_ns()  # the cdb cache compares an mtime stamp: make sure it changes
        os.utime(path, ns=(now, now))

    @staticmethod
    def env():
        return {"PATH": "/usr/bin:/bin"}


# --- the launcher ---------------------------------------------------------------------

# Runs as `python3 -I -S -c LAUNCHER`. Requests and answers on its stdin/stdout, each a
# 4-byte length and a marshal'd tuple. Request: (argv, env, stdin path, connect) with
# connect None or (host, port): a TCP connection made before the fork and given to the
# child as fds 6 and 7 (qmail-remote-io run by hand). Answer: (exit status, stdout+stderr
# of the child, user s, sys s, ru_maxrss KiB, wall s from fork to reaped).
LAUNCHER = r"""
import marshal, os, time
cin, cout = os.dup(0), os.dup(1)
def readn(n):
    data = b""
    while len(data) < n:
        more = os.read(cin, n - len(data))
        if not more:
            os._exit(0)
        data += more
    return data
while True:
    argv, env, stdin, connect = marshal.loads(readn(int.from_bytes(readn(4), "big")))
    sock = None
    if connect is not None:
        import _socket
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        sock.connect(connect)
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
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status, ru = os.wait4(pid, 0)
    wall = time.monotonic() - start
    answer = marshal.dumps((status, b"".join(chunks), ru.ru_utime, ru.ru_stime, ru.ru_maxrss, wall))
    os.write(cout, len(answer).to_bytes(4, "big") + answer)
"""


class Measurement:
    __slots__ = ("status", "output", "user", "sys", "maxrss_kib", "wall")

    def __init__(self, status, output, user, sys_, maxrss_kib, wall):
        self.status, self.output, self.user, self.sys = status, output, user, sys_
        self.maxrss_kib, self.wall = maxrss_kib, wall

    @property
    def cpu(self):
        return self.user + self.sys

    @property
    def maxrss_mib(self):
        return self.maxrss_kib / 1024.0


class Launcher:
    """A small process that forks, execs and reaps the measured programs."""

    def __init__(self, interpreter):
        self.process = subprocess.Popen([interpreter, "-I", "-S", "-c", LAUNCHER],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, argv, env, stdin_path, connect=None):
        request = marshal.dumps(([os.fsencode(a) for a in argv], {k.encode(): v.encode() for k, v in env.items()},
                                 os.fsencode(stdin_path), connect))
        self.process.stdin.write(struct.pack(">I", len(request)) + request)
        self.process.stdin.flush()
        size = struct.unpack(">I", self._read(4))[0]
        status, output, user, sys_, maxrss, wall = marshal.loads(self._read(size))
        return Measurement(status, output, user, sys_, maxrss, wall)

    def _read(self, count):
        data = self.process.stdout.read(count)
        if len(data) != count:
            raise SystemExit("bench: the launcher died")
        return data

    def close(self):
        self.process.stdin.close()
        self.process.wait()


# --- reports --------------------------------------------------------------------------

def decode_reports(output):
    """[(letter, text)] of qmail-remote's report stream (empty list if there is none)."""
    if not output:
        return []
    return [(chunk[:1].decode("latin-1"), chunk[1:]) for chunk in output.rstrip(b"\0").split(b"\0")]


def require_delivered(measurement, recipients, what):
    """Stop the benchmark when a delivery did not succeed: its figures would mean nothing."""
    reports = decode_reports(measurement.output)
    letters = "".join(letter for letter, _ in reports)
    if measurement.status != 0 or letters != "r" * recipients + "K":
        raise SystemExit("bench: %s was not delivered (exit status %d), reports: %r" % (
            what, measurement.status, measurement.output[:2000]))


# --- messages -------------------------------------------------------------------------

_WORDS = ("the of and to in is that for it as was with be by on not he this are or his from "
          "at which but have an they you were her she there been one all we their has would "
          "when if so no what up out them some could into than then only other its time about "
          "message delivery server relay queue remote transfer protocol address domain").split()
_EIGHTBIT = ("caf\u00e9", "na\u00efve", "\u00fcber", "Stra\u00dfe", "\u00e9t\u00e9", "\u20ac12")


def write_message(path, size, seed=1, eightbit=True):
    """A plausible message of about size bytes (qmail queue form: LF line ends):
    headers, then text lines of 60-78 characters; about 2% of the lines start with '.'
    (dot-stuffing), about 6% hold a UTF-8 word (8-bit bytes, so BODY=8BITMIME). Body
    lines are drawn from a pool of 4096, so a large file is quick to write."""
    rng = random.Random(seed)
    header = ("Received: from src.example (src.example [192.0.2.1])\n\tby mx.src.example with ESMTP; "
              "Mon, 1 Jan 2024 00:00:00 +0000\n"
              "From: Sender <sender@src.example>\nTo: Recipient <rcpt@example.org>\n"
              "Subject: benchmark message\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
              "Message-ID: <bench.%d@src.example>\nMIME-Version: 1.0\n"
              "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" % seed).encode()
    pool = []
    for _ in range(4096):
        words, length = [], 0
        target = rng.randint(60, 78)
        while length < target:
            word = rng.choice(_EIGHTBIT) if eightbit and rng.random() < 0.005 else rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        line = " ".join(words)
        if rng.random() < 0.02:
            line = "." + line
        pool.append((line + "\n").encode("utf-8"))
    block = b"".join(pool)
    with open(path, "wb") as out:
        out.write(header)
        written = len(header)
        while written + len(block) <= size:
            out.write(block)
            written += len(block)
        for line in pool:
            if written + len(line) > size:
                break
            out.write(line)
            written += len(line)
    return os.path.getsize(path)


# --- the sink server ------------------------------------------------------------------

class SinkSession:
    __slots__ = ("commands", "rcpts", "messages", "data_bytes", "replies_sent", "reply_writes")

    def __init__(self):
        self.commands = 0
        self.rcpts = 0
        self.messages = 0
        self.data_bytes = 0    # DATA bytes as they came on the wire, terminator included
        self.replies_sent = 0
        self.reply_writes = 0  # one write carries every reply due (pipelined replies batch)


class SinkServer(net.Stoppable):
    """A fast SMTP sink on loopback: accepts everything, discards the message.

    Commands are answered as a real server does with pipelining: every complete command
    line in the input buffer is answered, then all those replies go out in one write.
    DATA is read in 1 MiB recv_into() calls and only the last 5 bytes of the stream are
    looked at for CRLF.CRLF, so the sink costs about one copy of the message. It assumes
    the client waits for the reply to the final dot before sending more (qmail-remote does).
    """

    READ = 1 << 20

    def __init__(self, pipelining=True, size_limit=200000000):
        lines = [b"sink.test", b"8BITMIME", b"SIZE %d" % size_limit]
        if pipelining:
            lines.insert(1, b"PIPELINING")
        self.ehlo = b"".join(b"250-" + line + b"\r\n" for line in lines[:-1]) + b"250 " + lines[-1] + b"\r\n"
        self.listener = net.listening("127.0.0.1", backlog=128)
        self.port = self.listener.getsockname()[1]
        self.sessions = []
        self.stopping = False
        threading.Thread(target=net.accept_each, args=(self, self.listener, self._start), daemon=True).start()

    def stop(self):
        self.stopping = True
        net.close_quietly(self.listener)

    def _start(self, conn, peer):
        session = SinkSession()
        self.sessions.append(session)
        threading.Thread(target=self._serve, args=(conn, session), daemon=True).start()

    def _send(self, conn, session, replies):
        if replies:
            conn.sendall(b"".join(replies))
            session.replies_sent += len(replies)
            session.reply_writes += 1
            replies.clear()

    def _serve(self, conn, session):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        replies = [b"220 sink.test ESMTP\r\n"]
        try:
            with conn:
                conn.settimeout(60)
                while True:
                    in_data = False
                    while True:
                        end = buffer.find(b"\n")
                        if end < 0:
                            break
                        verb = bytes(buffer[:4]).upper()
                        del buffer[:end + 1]
                        session.commands += 1
                        if verb == b"EHLO":
                            replies.append(self.ehlo)
                        elif verb == b"RCPT":
                            session.rcpts += 1
                            replies.append(b"250 2.1.5 ok\r\n")
                        elif verb == b"DATA":
                            replies.append(b"354 go ahead\r\n")
                            in_data = True
                            break
                        elif verb == b"QUIT":
                            replies.append(b"221 2.0.0 bye\r\n")
                            self._send(conn, session, replies)
                            return
                        elif verb in (b"HELO", b"MAIL", b"RSET", b"NOOP"):
                            replies.append(b"250 ok\r\n")
                        else:
                            replies.append(b"502 5.5.2 unrecognised\r\n")
                    self._send(conn, session, replies)
                    if in_data:
                        if not self._data(conn, session, buffer):
                            return
                        replies.append(b"250 2.0.0 ok: discarded\r\n")
                        continue
                    more = conn.recv(65536)
                    if not more:
                        return
                    buffer += more
        except OSError:
            pass

    def _data(self, conn, session, buffer):
        """Read the message up to CRLF.CRLF; False if the client went away first."""
        tail = b"\r\n" + bytes(buffer[-5:])  # DATA begins at a line start
        count = len(buffer)
        buffer.clear()
        if tail.endswith(b"\r\n.\r\n"):
            session.data_bytes += count
            session.messages += 1
            return True
        space = bytearray(self.READ)
        view = memoryview(space)
        while True:
            got = conn.recv_into(view)
            if not got:
                return False
            count += got
            tail = (tail + bytes(view[max(0, got - 5):got]))[-5:]
            if tail == b"\r\n.\r\n":
                session.data_bytes += count
                session.messages += 1
                return True


def sink_throughput(sink, size):
    """Seconds for a client in this process to push size bytes of DATA through the sink."""
    line = b"x" * 76 + b"\r\n"
    block = line * ((1 << 20) // len(line))
    with socket.create_connection(("127.0.0.1", sink.port)) as conn:
        conn.recv(1024)
        conn.sendall(b"EHLO bench\r\n")
        conn.recv(1024)
        conn.sendall(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
        got = b""
        while b"354" not in got:
            got += conn.recv(1024)
        start = time.monotonic()
        sent = 0
        while sent < size:
            conn.sendall(block)
            sent += len(block)
        conn.sendall(b".\r\n")
        while b"250 2.0.0" not in conn.recv(1024):
            pass
        elapsed = time.monotonic() - start
        conn.sendall(b"QUIT\r\n")
    return elapsed, sent


# --- small statistics -----------------------------------------------------------------

def mean(values):
    return sum(values) / len(values)


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def scratch_dir():
    return tempfile.mkdtemp(prefix="qremote-bench-")


def remove(path):
    shutil.rmtree(path, ignore_errors=True)
