"""tcpto through the installed chain: real connect timeouts on loopback, the files on disk
byte by byte, and the qmail-tcpto6 / qmail-tcpok6 admin tools.

A connect timeout without root and without the network: a black hole (tests/support/net.py),
where connect() waits until timeoutconnect (1 s here). The table is keyed by address, not
port, so "skipped" is proven by a working SMTP server on the same address that sees no
connection while the report says #4.4.1.
"""

import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from tests.conftest import TOP
from tests.support.net import blackhole, ipv6_loopback, needs_ipv6, refusing_port  # noqa: F401 (fixture)

NO_CONNECTION = b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n\0"
LIB = os.path.join(TOP, "lib")


def rec4(ip, count, when, pad1=b"\0\0\0", pad2=b"\0\0\0\0"):
    return struct.pack("<4sB3sI4s", socket.inet_pton(socket.AF_INET, ip), count, pad1, when, pad2)


def rec6(ip, count, when, pad1=b"\0\0\0", pad2=b"\0" * 8):
    return struct.pack("<16sB3sI8s", socket.inet_pton(socket.AF_INET6, ip), count, pad1, when, pad2)


def relay(host, port):
    return "example.org:[IPv6:%s]:%d" % (host, port) if ":" in host else "example.org:%s:%d" % (host, port)


def tcpto_path(home):
    return os.path.join(home.path, "queue", "lock", "tcpto")


def tcpto6_path(home):
    return os.path.join(home.path, "run", "qmail-remote", "tcpto6")


def write(path, data):
    with open(path, "wb") as out:
        out.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def attempt(home, host, port):
    """One delivery to host:port: (reports, raw stdout, seconds before, seconds after)."""
    home.route(relay(host, port))
    before = int(time.time())
    reports, raw = home.remote("example.org", "sender@src.example", "rcpt@example.org")
    return reports, raw, before, int(time.time())


def stock_tcpok(path):
    """What stock qmail-tcpok does to queue/lock/tcpto: lock, 1024 NULs from offset 0."""
    import fcntl
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, bytes(1024))
    finally:
        os.close(fd)


def admin(command, home_path):
    """Run commands/<command> from the source tree the way the installed copy runs
    (-I -S, the library path put in front): (stdout, stderr, exit status)."""
    with open(os.path.join(TOP, "commands", command)) as source:
        code = "import sys; sys.path.insert(0, %r)\n" % LIB + source.read()
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "QMAILHOME": home_path})
    return done.stdout, done.stderr, done.returncode


# --- IPv4: stock's queue/lock/tcpto ---

def test_v4_two_timeouts_then_skip_then_tcpok(home, server, blackhole):
    home.control("timeoutconnect", "1\n")
    other = rec4("192.0.2.9", 3, 1000)
    write(tcpto_path(home), other + rec4("127.0.0.1", 1, int(time.time()) - 200, b"abc", b"defg")
          + bytes(1024 - 32))

    hole = blackhole("127.0.0.1")
    _, raw, before, after = attempt(home, "127.0.0.1", hole.port)
    assert raw == NO_CONNECTION
    table = read(tcpto_path(home))
    assert len(table) == 1024 and table[:16] == other and table[32:] == bytes(1024 - 32)
    ip, count, pad1, when, pad2 = struct.unpack("<4sB3sI4s", table[16:32])
    assert (ip, count, pad1, pad2) == (b"\x7f\0\0\x01", 2, b"abc", b"defg")
    assert before <= when <= after

    s = server(host="127.0.0.1")
    _, raw, _, _ = attempt(home, "127.0.0.1", s.port)
    assert raw == NO_CONNECTION  # skipped: this server works but is never tried
    time.sleep(0.2)
    assert s.sessions == []
    assert read(tcpto_path(home)) == table  # a skip writes nothing

    stock_tcpok(tcpto_path(home))
    reports, _, _, _ = attempt(home, "127.0.0.1", s.port)
    assert reports[-1][0] == "K"
    assert len(s.wait_sessions(1)) == 1


def test_v4_first_timeout_is_stocks_record_and_a_second_within_120s_is_not_counted(home, blackhole):
    home.control("timeoutconnect", "1\n")
    write(tcpto_path(home), bytes(1024))
    hole = blackhole("127.0.0.1")
    _, raw, before, after = attempt(home, "127.0.0.1", hole.port)
    assert raw == NO_CONNECTION
    table = read(tcpto_path(home))
    when, = struct.unpack("<I", table[8:12])
    assert before <= when <= after
    assert table == bytes.fromhex("7f00000101000000") + table[8:12] + bytes(4) + bytes(1008)
    _, raw, _, _ = attempt(home, "127.0.0.1", hole.port)
    assert raw == NO_CONNECTION
    assert read(tcpto_path(home)) == table  # count 1, time of the first: too recent to count


def test_v4_refused_connection_clears_the_count(home):
    old = int(time.time()) - 10000  # 2 timeouts, but long ago: tried again
    write(tcpto_path(home), rec4("127.0.0.1", 2, old, b"xyz", b"uvwx") + bytes(1008))
    with refusing_port("127.0.0.1") as port:
        _, raw, _, _ = attempt(home, "127.0.0.1", port)
    assert raw == NO_CONNECTION
    assert read(tcpto_path(home)) == rec4("127.0.0.1", 0, old, b"xyz", b"uvwx") + bytes(1008)


def test_v4_connection_clears_the_count(home, server):
    old = int(time.time()) - 300
    write(tcpto_path(home), rec4("127.0.0.1", 1, old) + bytes(1008))
    s = server(host="127.0.0.1")
    reports, _, _, _ = attempt(home, "127.0.0.1", s.port)
    assert reports[-1][0] == "K"
    assert read(tcpto_path(home)) == rec4("127.0.0.1", 0, old) + bytes(1008)


def test_missing_files_disable_silently(home, blackhole):
    home.control("timeoutconnect", "1\n")
    for host in ["127.0.0.1"] + (["::1"] if ipv6_loopback() else []):
        hole = blackhole(host)
        for _ in range(2):
            _, raw, _, _ = attempt(home, host, hole.port)
            assert raw == NO_CONNECTION  # nothing else: no warning, no other report
    assert not os.path.exists(tcpto_path(home))
    assert not os.path.exists(tcpto6_path(home))


# --- IPv6: run/qmail-remote/tcpto6 ---

@needs_ipv6
def test_v6_two_timeouts_then_skip_then_tcpok6(home, server, blackhole):
    home.control("timeoutconnect", "1\n")
    write(tcpto_path(home), bytes(1024))
    write(tcpto6_path(home), rec6("::1", 1, int(time.time()) - 200, b"abc", b"01234567") + bytes(2048 - 32))

    hole = blackhole("::1")
    _, raw, before, after = attempt(home, "::1", hole.port)
    assert raw == NO_CONNECTION
    table = read(tcpto6_path(home))
    assert len(table) == 2048 and table[32:] == bytes(2048 - 32)
    ip, count, pad1, when, pad2 = struct.unpack("<16sB3sI8s", table[:32])
    assert (ip, count, pad1, pad2) == (b"\0" * 15 + b"\1", 2, b"abc", b"01234567")
    assert before <= when <= after
    assert read(tcpto_path(home)) == bytes(1024)  # the IPv4 file is not touched

    out, err, status = admin("qmail-tcpto6", home.path)
    assert (err, status) == (b"", 0)
    words = out.decode().split(" ")
    assert words[:3] == ["::1", "timed", "out"], out
    assert words[4:] == ["seconds", "ago;", "#", "recent", "timeouts:", "2\n"], out
    assert 0 <= int(words[3]) <= int(time.time()) - before
    assert read(tcpto6_path(home)) == table  # shown, not changed

    s = server(host="::1")
    _, raw, _, _ = attempt(home, "::1", s.port)
    assert raw == NO_CONNECTION  # skipped
    time.sleep(0.2)
    assert s.sessions == []

    assert admin("qmail-tcpok6", home.path) == (b"", b"", 0)
    assert read(tcpto6_path(home)) == bytes(2048)
    assert admin("qmail-tcpto6", home.path) == (b"", b"", 0)
    reports, _, _, _ = attempt(home, "::1", s.port)
    assert reports[-1][0] == "K"
    assert len(s.wait_sessions(1)) == 1


@needs_ipv6
def test_v6_refused_connection_clears_the_count(home):
    old = int(time.time()) - 10000
    write(tcpto6_path(home), bytes(32) + rec6("::1", 3, old) + bytes(2048 - 64))
    with refusing_port("::1") as port:
        _, raw, _, _ = attempt(home, "::1", port)
    assert raw == NO_CONNECTION
    assert read(tcpto6_path(home)) == bytes(32) + rec6("::1", 0, old) + bytes(2048 - 64)


# --- the admin tools' own behaviour ---

def test_tcpto6_lists_every_counted_record(home):
    now = int(time.time())
    write(tcpto6_path(home), rec6("2001:db8::1", 1, now - 100000) + rec6("2001:db8::2", 0, now)
          + rec6("2001:db8::3", 10, now - 100000) + bytes(2048 - 96))
    out, err, status = admin("qmail-tcpto6", home.path)
    assert (err, status) == (b"", 0)
    lines = out.decode().split("\n")
    assert lines[-1] == "" and len(lines) == 3
    for line, (ip, count) in zip(lines, [("2001:db8::1", 1), ("2001:db8::3", 10)]):
        words = line.split(" ")
        assert words[:3] == [ip, "timed", "out"] and words[4:] == ["seconds", "ago;", "#", "recent", "timeouts:",
                                                                   str(count)]
        assert 100000 <= int(words[3]) <= 100000 + 60


def test_tcpok6_keeps_the_size_and_never_creates(home):
    write(tcpto6_path(home), b"\xff" * 100)
    assert admin("qmail-tcpok6", home.path) == (b"", b"", 0)
    assert read(tcpto6_path(home)) == bytes(100)
    write(tcpto6_path(home), b"")
    assert admin("qmail-tcpok6", home.path) == (b"", b"", 0)
    assert read(tcpto6_path(home)) == b""  # an empty file (mechanism off) stays off


def test_admin_tools_fail_like_stock(home):
    out, err, status = admin("qmail-tcpto6", home.path)
    assert (out, err, status) == (b"fatal: unable to open tcpto6: No such file or directory\n", b"", 111)
    out, err, status = admin("qmail-tcpok6", home.path)
    full = os.path.join(home.path, "run", "qmail-remote", "tcpto6").encode()
    assert (out, err, status) == (b"", b"qmail-tcpok6: fatal: unable to write " + full
                                  + b": No such file or directory\n", 111)
    assert not os.path.exists(tcpto6_path(home))
    gone = os.path.join(home.path, "nowhere")
    assert admin("qmail-tcpto6", gone) == (b"fatal: unable to chdir: No such file or directory\n", b"", 111)
    assert admin("qmail-tcpok6", gone) == (b"", b"qmail-tcpok6: fatal: unable to chdir to " + gone.encode()
                                           + b": No such file or directory\n", 111)


@pytest.mark.parametrize("command,expected", [
    ("qmail-tcpto6", (b"fatal: unable to load the qremote library\n", b"", 111)),
    ("qmail-tcpok6", (b"", b"qmail-tcpok6: fatal: unable to load the qremote library\n", 111)),
])
def test_commands_without_their_library_say_so(command, expected, tmp_path):
    done = subprocess.run([sys.executable, "-I", "-S", os.path.join(TOP, "commands", command)],
                          capture_output=True, timeout=60, cwd=str(tmp_path),
                          env={"PATH": "/usr/bin:/bin", "QMAILHOME": str(tmp_path)})
    assert (done.stdout, done.stderr, done.returncode) == expected
