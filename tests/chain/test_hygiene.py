"""Descriptor and process hygiene of the installed chain, seen from /proc while a server
holds the transaction open: qmail-remote-io holds fds 0, 1, 2, 6, 7 and nothing else;
every other descriptor of qmail-remote is close-on-exec; nothing outlives a delivery.

Over TLS (qmail-remote -> tlsc-io -> qmail-remote-io, tlsc-io's relay beside): the same
for qmail-remote-io (its 6/7 are then the relay's socketpair); the relay holds /dev/null
as 0, 1 and 2 and only its sockets besides (never the report pipe or the message), is
nobody's zombie (double fork), lets the report pipe reach EOF when qmail-remote-io exits,
and ends within a second of it."""

import ctypes
import os
import subprocess
import threading
import time

import pytest

from tests.support.chain import decode_reports
from tests.support.faultserver import FaultServer

O_CLOEXEC = 0o2000000
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")


def launch(home, server, recipients=("a@example.org",), body=b"hello\n", stdout=subprocess.PIPE,
           stderr=subprocess.STDOUT):
    """The installed qmail-remote, in a session of its own, delivering a short message to
    recipients through server (its reports on stdout)."""
    host, port = server.address_for()
    home.route("example.org:%s:%d" % (host, port))
    message = home.message_file(b"Subject: hygiene\n\n" + body)
    with open(message, "rb") as fd0:
        return subprocess.Popen([os.path.join(home.bindir, "qmail-remote"), "example.org", "s@src.example"]
                                + list(recipients), stdin=fd0, stdout=stdout, stderr=stderr, env=home.env(),
                                start_new_session=True)


def start(home, server, recipients=("a@example.org", "b@example.org")):
    home.control("timeoutremote", "30\n")
    return launch(home, server, recipients)


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


def assert_io_descriptors(fds):
    """qmail-remote-io's descriptors: 0 message, 1 report pipe, 2 /dev/null, 6 = 7 one socket."""
    assert sorted(fds) == [0, 1, 2, 6, 7], fds
    assert fds[6][0] == fds[7][0] and fds[6][0].startswith("socket:"), fds
    assert fds[2][0] == "/dev/null"  # stderr silenced: qmail-rspawn copies fd 2 into the report


def test_qmail_remote_io_holds_only_0_1_2_6_7(home):
    with FaultServer(("data", "stall")) as server:
        proc = start(home, server)
        try:
            wait_for(lambda: any(b"DATA" in s.commands for s in server.sessions), "DATA at the server")
            wait_for(lambda: program_of(proc.pid) == "qmail-remote-io", "the exec of qmail-remote-io")
            time.sleep(0.2)  # it is reading the DATA reply now
            fds = descriptors(proc.pid)
            assert_io_descriptors(fds)
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


def process_stats():
    """(pid, state, ppid, session) of every process alive now (zombies included)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(b")") + 2:].split()  # state ppid pgrp session ...
        yield int(name), fields[0].decode(), int(fields[1]), int(fields[3])


def processes_of_session(sid):
    """[(pid, state)] of the processes in session sid."""
    return [(pid, state) for pid, state, _, session in process_stats() if session == sid]


def children_of(pid):
    return [child for child, _, ppid, _ in process_stats() if ppid == pid]


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
        proc = launch(home, server)
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
        read_end, write_end = os.pipe()
        os.close(read_end)  # every report write gets EPIPE
        try:
            proc = launch(home, server, body=b"nobody reads the reports\n", stdout=write_end,
                          stderr=subprocess.DEVNULL)
        finally:
            os.close(write_end)
        assert proc.wait(timeout=60) == 0
        assert server.wait_done(10)
        assert any(session.accepted for session in server.sessions)
    time.sleep(1.0)
    assert processes_of_session(proc.pid) == []


# --- over TLS ---

PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def tls_home(home, installed, pki):
    if not os.path.exists(os.path.join(installed, "tlsc-io")):
        pytest.skip("tlsc-io is not installed")
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "0\n")
    home.certificate = pki.server("127.0.0.1")
    return home


@pytest.fixture
def adopter():
    """This process adopts the chain's orphans for the test (PR_SET_CHILD_SUBREAPER): tlsc-io's
    relay, double-forked away, becomes our child instead of init's, so the test sees exactly
    when it ends and reaps it (init's reaping speed is not the chain's business)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) failed: errno %d" % ctypes.get_errno())
    adopted = Adopted(set(children_of(os.getpid())))
    try:
        yield adopted
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        adopted.reap(deadline=time.monotonic() + 30)  # never leave a zombie behind, even on failure


class Adopted:
    """Orphans of the chain that became our children."""

    def __init__(self, before):
        self.before = before
        self.ended = {}  # pid -> monotonic time it was seen to end (reaped)

    def current(self, exclude=()):
        return [pid for pid in children_of(os.getpid()) if pid not in self.before and pid not in exclude]

    def reap(self, deadline, exclude=()):
        """Reap every adoptee as it ends, until none is left or deadline; the pids left alive."""
        while True:
            left = []
            for pid in self.current(exclude):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    continue
                if done:
                    self.ended[pid] = time.monotonic()
                else:
                    left.append(pid)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.01)


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def parent_of(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2:].split()[1])


def test_tls_chain_descriptors(tls_home):
    home = tls_home
    with FaultServer(("data", "stall"), tls=home.certificate) as server:
        proc = start(home, server)
        try:
            wait_for(lambda: any(s.tls and b"DATA" in s.commands for s in server.sessions), "DATA inside TLS")
            wait_for(lambda: program_of(proc.pid) == "qmail-remote-io", "the exec of qmail-remote-io")
            time.sleep(0.2)  # it is reading the DATA reply now
            fds = descriptors(proc.pid)
            others = [pid for pid, _ in processes_of_session(proc.pid) if pid != proc.pid]
            relay_argv = cmdline(others[0]) if others else []
            relay_fds = descriptors(others[0]) if others else {}
            relay_parent = parent_of(others[0]) if others else None
            io_children = children_of(proc.pid)
            environ = exposed(proc.pid)[1]
        finally:
            reports = finish(proc, server)
    assert reports[-1][0] == "Z"
    # qmail-remote-io's 6 = 7: its end of the relay's socketpair
    assert_io_descriptors(fds)
    assert environ.get("SSL_PROTOCOL", "").startswith("TLSv1."), environ  # tlsc-io ran it
    assert io_children == [], "qmail-remote-io has children (a zombie middle fork?): %r" % io_children
    # the relay: the one other process of the chain, forked from tlsc-io, not qmail-remote-io's child
    assert len(others) == 1, others
    assert b"tlsc-io" in [os.path.basename(arg) for arg in relay_argv[:3]], relay_argv
    assert relay_parent != proc.pid
    assert [relay_fds.get(fd, ("closed",))[0] for fd in (0, 1, 2)] == ["/dev/null"] * 3, relay_fds
    rest = {fd: target for fd, (target, _) in relay_fds.items() if fd > 2}
    assert all(target.startswith("socket:") for target in rest.values()), rest
    assert len(set(rest.values())) == 2, rest  # the TCP connection (on 6 and 7) and its socketpair end
    assert fds[6][0] not in rest.values()  # qmail-remote-io's end stays with qmail-remote-io
    # nothing of the delivery's own: neither the report pipe nor the message
    assert fds[1][0] not in [target for target, _ in relay_fds.values()]
    assert fds[0][0] not in [target for target, _ in relay_fds.values()]


def test_tls_failure_continuation_hands_on_clean_descriptors(tls_home):
    """A failed handshake: tlsc-io execs qmail-remote again (--qremote-resume), which
    reconnects in cleartext and execs qmail-remote-io: it too holds only 0, 1, 2, 6, 7,
    and no TLSC_FAILURE or SSL_* reaches it; no relay was started."""
    home = tls_home
    with FaultServer(tls=home.certificate, sequence=[("handshake", "close"), ("data", "stall")]) as server:
        proc = start(home, server)
        try:
            wait_for(lambda: len(server.sessions) == 2 and b"DATA" in server.sessions[1].commands,
                     "DATA on the second connection")
            wait_for(lambda: program_of(proc.pid) == "qmail-remote-io", "the exec of qmail-remote-io")
            time.sleep(0.2)
            fds = descriptors(proc.pid)
            argv, environ = exposed(proc.pid)
            others = [pid for pid, _ in processes_of_session(proc.pid) if pid != proc.pid]
        finally:
            reports = finish(proc, server)
    assert reports[-1][0] == "Z"
    assert_io_descriptors(fds)
    assert not [name for name in environ if name.startswith("SSL_") or name == "TLSC_FAILURE"], environ
    assert not any(arg.startswith(b"--qremote-resume") for arg in argv), argv
    assert others == [], others
    assert not server.sessions[1].tls


def test_tls_resumed_qmail_remote_descriptors_are_close_on_exec(tls_home):
    """The qmail-remote that tlsc-io execs after a failed handshake inherits nothing of the
    failed connection (tlsc-io closed fds 6 and 7) and leaks nothing either."""
    home = tls_home
    with FaultServer(tls=home.certificate, sequence=[("handshake", "close"), ("greeting", "stall")]) as server:
        proc = start(home, server)
        try:
            wait_for(lambda: len(server.sessions) == 2, "the second connection")
            time.sleep(0.3)  # the resumed qmail-remote is waiting for the greeting now
            argv = exposed(proc.pid)[0]
            fds = descriptors(proc.pid)
        finally:
            reports = finish(proc, server)
    assert reports[-1][0] == "Z"
    assert argv[3].startswith(b"--qremote-resume="), argv  # interpreter, -IS, script, then the option
    leaky = {fd: what for fd, what in fds.items() if fd > 2 and not what[1] & O_CLOEXEC}
    assert not leaky, "descriptors that would leak into qmail-remote-io: %r" % leaky
    sockets = [target for target, _ in fds.values() if target.startswith("socket:")]
    assert len(sockets) == 1, fds  # the new connection only: the failed one is closed


def test_tls_relay_ends_with_a_server_that_never_lets_go(tls_home, adopter):
    """A server that never answers QUIT and never closes: the report pipe reaches EOF when
    qmail-remote-io exits, and the relay ends on its own within a second (+ slack) of it."""
    home = tls_home
    home.control("timeoutremote", "30\n")
    server = FaultServer(("quit", "hold"), tls=home.certificate, patience=15)
    proc = launch(home, server, body=b"hello over TLS\n")
    exited = []
    watcher = threading.Thread(target=lambda: exited.append((proc.wait(), time.monotonic())))
    watcher.start()
    output = proc.stdout.read()  # EOF: every holder of the report pipe has exited
    eof = time.monotonic()
    proc.stdout.close()
    watcher.join(30)
    reports = decode_reports(output)
    assert reports[-1][0] == "K" and b"unverified, cipher " in reports[-1][1], reports
    left = adopter.reap(deadline=eof + 1.5, exclude=(proc.pid,))
    assert not left, "the relay %r outlived qmail-remote-io by more than 1.5 s" % left
    assert len(adopter.ended) == 1, adopter.ended  # the relay was adopted, and reaped by us: nobody's zombie
    lingered = max(adopter.ended.values()) - exited[0][1]
    print("\nreport pipe EOF %.3f s after qmail-remote-io exited; the relay ended %.3f s after it" % (
        eof - exited[0][1], lingered))
    assert processes_of_session(proc.pid) == []
    assert not server.sessions[0].done.is_set()  # the server did hold on: the relay ended by itself
    server.stop()


@pytest.mark.parametrize("fault, level, letter", [
    (None, 0, "K"),
    (None, 2, "K"),
    (("handshake", "close"), 0, "K"),   # the cleartext retry after the failed handshake
    (("handshake", "stall"), 2, "Z"),
    (("ehlo_tls", "perm"), 0, "Z"),
    (("rcpt1", "reset"), 0, "Z"),
    (("data", "stall"), 0, "Z"),
    (("final", "close"), 2, "Z"),
    (("final", "perm"), 0, "D"),
])
def test_tls_nothing_outlives_the_delivery(tls_home, adopter, fault, level, letter):
    home = tls_home
    home.control("timeoutremote", "2\n")
    home.control("timeoutconnect", "2\n")
    home.control("tlsstrictness", "%d\n" % level)
    with FaultServer(fault, tls=home.certificate, once=True) as server:
        proc = launch(home, server)
        output = proc.stdout.read()  # EOF: every holder of the report pipe has exited
        eof = time.monotonic()
        proc.stdout.close()
        proc.wait(timeout=30)
        assert decode_reports(output)[-1][0] == letter, output
        if fault is None or fault[0] != "handshake":
            assert any(session.tls for session in server.sessions)  # the relay did run
        left = adopter.reap(deadline=eof + 1.5, exclude=(proc.pid,))
    assert not left, "chain processes alive 1.5 s after the report pipe's EOF: %r" % left
    assert processes_of_session(proc.pid) == []  # no zombie, nothing else of the session
