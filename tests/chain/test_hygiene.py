"""Descriptor and process hygiene of the installed chain, seen from /proc while a server
holds the transaction open: qmail-remote-io holds fds 0, 1, 2, 6, 7 and nothing else;
every other descriptor of qmail-remote is close-on-exec; nothing outlives a delivery."""

import os
import subprocess
import time

import pytest

from tests.support.chain import decode_reports
from tests.support.faultserver import FaultServer

O_CLOEXEC = 0o2000000
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")


def start(home, server, recipients=("a@example.org", "b@example.org")):
    home.control("timeoutremote", "30\n")
    host, port = server.address_for()
    home.route("example.org:%s:%d" % (host, port))
    message = home.message_file(b"Subject: hygiene\n\nhello\n")
    with open(message, "rb") as fd0:
        return subprocess.Popen([os.path.join(home.bindir, "qmail-remote"), "example.org", "s@src.example"]
                                + list(recipients), stdin=fd0, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=home.env(), start_new_session=True)


def wait_for(condition, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def program_of(pid):
    """The chain program a process runs: the basename of the script in its argv."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    for arg in argv[:3]:
        name = os.path.basename(arg).decode("utf-8", "replace")
        if name.startswith("qmail-remote"):
            return name
    return None


def descriptors(pid):
    """{fd: (target, flags)} from /proc/PID/fd and fdinfo."""
    found = {}
    for name in os.listdir("/proc/%d/fd" % pid):
        fd = int(name)
        try:
            target = os.readlink("/proc/%d/fd/%d" % (pid, fd))
            with open("/proc/%d/fdinfo/%d" % (pid, fd)) as info:
                flags = int(next(line for line in info if line.startswith("flags:")).split()[1], 8)
        except (OSError, StopIteration):
            continue
        found[fd] = (target, flags)
    return found


def finish(proc, server):
    server.stop()  # ends the stalled session: the chain sees the connection die
    output = proc.communicate(timeout=60)[0]
    return decode_reports(output)


def test_qmail_remote_io_holds_only_0_1_2_6_7(home):
    with FaultServer(("data", "stall")) as server:
        proc = start(home, server)
        try:
            wait_for(lambda: any(b"DATA" in s.commands for s in server.sessions), "DATA at the server")
            wait_for(lambda: program_of(proc.pid) == "qmail-remote-io", "the exec of qmail-remote-io")
            time.sleep(0.2)  # it is reading the DATA reply now
            fds = descriptors(proc.pid)
            assert sorted(fds) == [0, 1, 2, 6, 7], fds
            assert fds[6][0] == fds[7][0] and fds[6][0].startswith("socket:"), fds
            assert fds[2][0] == "/dev/null"  # stderr silenced: qmail-rspawn copies fd 2 into the report
            argv, environ = exposed(proc.pid)
        finally:
            reports = finish(proc, server)
    assert reports[-1][0] == "Z"
    # argv is world-readable: only public words (doc/security.html), nothing added to the environment
    script = argv.index(os.path.join(home.bindir, "qmail-remote-io").encode())
    assert argv[script + 1:] == [b"-t", b"30", b"-c", b"8BITMIME,PIPELINING,SIZE=100000000,SMTPUTF8", b"--",
                                 b"127.0.0.1", b"s@src.example", b"a@example.org", b"b@example.org"], argv
    environ.pop("LC_CTYPE", None)  # the interpreter's own C-locale coercion (PEP 538) adds it
    assert environ == home.env(), environ


def exposed(pid):
    """(argv, environment) of a process, as any local user (argv) or qmailr (environ) sees them."""
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        argv = f.read().split(b"\0")[:-1]
    with open("/proc/%d/environ" % pid, "rb") as f:
        environ = dict(item.decode().split("=", 1) for item in f.read().split(b"\0") if item)
    return argv, environ


def test_qmail_remote_descriptors_are_close_on_exec(home):
    with FaultServer(("greeting", "stall")) as server:
        proc = start(home, server)
        try:
            wait_for(lambda: server.sessions, "the connection")
            time.sleep(0.3)  # qmail-remote is waiting for the greeting now
            assert program_of(proc.pid) == "qmail-remote"
            fds = descriptors(proc.pid)
            leaky = {fd: what for fd, what in fds.items() if fd > 2 and not what[1] & O_CLOEXEC}
            assert not leaky, "descriptors that would leak into qmail-remote-io: %r" % leaky
            assert any(target.startswith("socket:") for target, _ in fds.values())
        finally:
            reports = finish(proc, server)
    assert reports[-1][0] == "Z"


def processes_of_session(sid):
    """Pids of live processes (zombies included) in session sid."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[3]) == sid:  # state ppid pgrp session
            found.append((int(name), fields[0].decode()))
    return found


def children_of(pid):
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(name))
    return found


@pytest.mark.parametrize("fault, letter", [
    (None, "K"),
    (("greeting", "close"), "Z"),
    (("ehlo", "perm"), "Z"),
    (("rcpt1", "reset"), "Z"),
    (("data", "stall"), "Z"),
    (("final", "close"), "Z"),
    (("final", "perm"), "D"),
])
def test_nothing_outlives_the_delivery(home, fault, letter):
    home.control("timeoutremote", "2\n")
    before = set(children_of(os.getpid()))
    with FaultServer(fault) as server:
        host, port = server.address_for()
        home.route("example.org:%s:%d" % (host, port))
        message = home.message_file(b"Subject: hygiene\n\nhello\n")
        with open(message, "rb") as fd0:
            proc = subprocess.Popen([os.path.join(home.bindir, "qmail-remote"), "example.org", "s@src.example",
                                     "a@example.org"], stdin=fd0, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=home.env(), start_new_session=True)
        output = proc.stdout.read()  # EOF: every holder of the report pipe has exited
        proc.stdout.close()
        proc.wait(timeout=30)
        assert decode_reports(output)[-1][0] == letter
    time.sleep(1.0)
    assert processes_of_session(proc.pid) == []
    assert set(children_of(os.getpid())) <= before


def test_report_reader_gone_does_not_hang_or_fail(home):
    """qmail-rspawn gone (the report pipe closed): the delivery still ends, exit 0, nothing left."""
    home.control("timeoutremote", "5\n")
    with FaultServer() as server:
        host, port = server.address_for()
        home.route("example.org:%s:%d" % (host, port))
        message = home.message_file(b"Subject: hygiene\n\nnobody reads the reports\n")
        read_end, write_end = os.pipe()
        os.close(read_end)  # every report write gets EPIPE
        try:
            with open(message, "rb") as fd0:
                proc = subprocess.Popen([os.path.join(home.bindir, "qmail-remote"), "example.org", "s@src.example",
                                         "a@example.org"], stdin=fd0, stdout=write_end, stderr=subprocess.DEVNULL,
                                        env=home.env(), start_new_session=True)
        finally:
            os.close(write_end)
        assert proc.wait(timeout=60) == 0
        assert server.wait_done(10)
        assert any(session.accepted for session in server.sessions)
    time.sleep(1.0)
    assert processes_of_session(proc.pid) == []
