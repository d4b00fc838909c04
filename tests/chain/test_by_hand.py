"""qmail-remote-io run by hand on a connection given as fds 6/7: by the test itself, and
under ucspi-tcp's tcpclient when it is installed (CI installs it)."""

import os
import shutil
import socket
import subprocess

import pytest

from tests.support.chain import decode_reports


def run_io(home, sock, args, message=b"Subject: x\n\nby hand\n"):
    return home.by_hand("qmail-remote-io", sock, args, message)


def test_fresh_connection_with_greeting_and_ehlo(home, server):
    s = server()
    sock = socket.create_connection(("127.0.0.1", s.port))
    out = run_io(home, sock, ["-g", "-h", "hand.example", "--", "127.0.0.1", "a@src.example", "b@example.org"])
    sock.close()
    assert out == b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0"
    session, = s.wait_sessions()
    assert session.commands[0] == b"EHLO hand.example"
    assert session.messages == [b"Subject: x\r\n\r\nby hand\r\n"]


def test_after_greeting_and_ehlo_done_elsewhere(home, server):
    """As qmail-remote hands it over: capabilities in argv, no greeting, no EHLO."""
    s = server()
    sock = socket.create_connection(("127.0.0.1", s.port))
    f = sock.makefile("rwb")
    f.readline()
    f.write(b"EHLO elsewhere\r\n")
    f.flush()
    while f.readline()[3:4] == b"-":
        pass
    out = run_io(home, sock, ["-t", "30", "-c", "PIPELINING,SIZE=1000000", "--",
                              "127.0.0.1", "", "b@example.org"])
    sock.close()
    assert out.endswith(b"K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0")
    assert s.wait_sessions()[0].commands[1].startswith(b"MAIL FROM:<> SIZE=")


def test_usage_errors_are_reports(home):
    out, status = home.run("qmail-remote-io", ["-x", "--", "ip", "s", "r"])
    assert status == 0
    assert decode_reports(out) == [("D", b"qmail-remote-io was invoked improperly: unknown option -x. (#5.3.5)\n")]


def test_no_connection_on_fds(home):
    out, status = home.run("qmail-remote-io", ["--", "127.0.0.1", "s", "r"])
    assert status == 0
    letter, text = decode_reports(out)[0]
    assert letter == "Z" and b"no connection on fds 6 and 7" in text


@pytest.mark.skipif(shutil.which("tcpclient") is None, reason="ucspi-tcp's tcpclient is not installed")
def test_under_tcpclient(home, server):
    s = server()
    path = home.message_file(b"Subject: x\n\nvia tcpclient\n")
    with open(path, "rb") as fd0:
        done = subprocess.run(["tcpclient", "-RHl0", "127.0.0.1", str(s.port),
                               os.path.join(home.bindir, "qmail-remote-io"), "-g", "-h", "tcpclient.example",
                               "--", "127.0.0.1", "a@src.example", "b@example.org"],
                              stdin=fd0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=home.env(PATH="/usr/bin:/bin"), timeout=60)
    assert done.stdout == b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0"
    assert s.wait_sessions()[0].messages == [b"Subject: x\r\n\r\nvia tcpclient\r\n"]


# --- qmail-remote started from elsewhere: the next programs are found beside the real file ---

def remote_as(home, argv0, cwd=None):
    """qmail-remote run as argv0 (relative to cwd, or a symlink): it chdirs to the qmail
    home before it execs the next program, so a relative or symlinked argv[0] must have
    been resolved before."""
    with open(home.message_file(b"Subject: x\n\nfrom elsewhere\n"), "rb") as fd0:
        done = subprocess.run([argv0, "example.org", "a@src.example", "b@example.org"], stdin=fd0, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=home.env(), timeout=60)
    assert done.returncode == 0
    return done.stdout


def symlink_elsewhere(home, tmp_path):
    """A bin directory holding only a symlink to the installed qmail-remote, as an admin
    swaps /var/qmail/bin/qmail-remote for qremote's."""
    other = tmp_path / "otherbin"
    other.mkdir()
    os.symlink(os.path.join(home.bindir, "qmail-remote"), other / "qmail-remote")
    return str(other / "qmail-remote")


def test_run_as_dot_slash_from_the_bin_directory(home, server):
    s = server()
    home.route("example.org:127.0.0.1:%d" % s.port)
    out = remote_as(home, "./qmail-remote", cwd=home.bindir)
    assert out == b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0"
    assert s.wait_sessions()[0].messages == [b"Subject: x\r\n\r\nfrom elsewhere\r\n"]


def test_run_through_a_symlink_in_another_directory(home, server, tmp_path):
    s = server()
    home.route("example.org:127.0.0.1:%d" % s.port)
    out = remote_as(home, symlink_elsewhere(home, tmp_path))
    assert out == b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0"
    assert s.wait_sessions()[0].messages == [b"Subject: x\r\n\r\nfrom elsewhere\r\n"]


def tls_route(home, server, pki, **kw):
    s = server(tls_cert=pki.server("127.0.0.1"), **kw)
    home.route("example.org:127.0.0.1:%d" % s.port)
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "0\n")
    home.control("timeoutconnect", "5\n")
    return s


def test_starttls_through_a_symlink_and_from_the_bin_directory(home, server, pki, tmp_path):
    """tlsc-io, and qmail-remote-io after it, are found beside the real file too."""
    if not os.path.exists(os.path.join(home.bindir, "tlsc-io")):
        pytest.skip("tlsc-io is not installed")
    s = tls_route(home, server, pki)
    for out in (remote_as(home, symlink_elsewhere(home, tmp_path)), remote_as(home, "./qmail-remote", cwd=home.bindir)):
        assert out.startswith(b"r\0K127.0.0.1 accepted message. (TLSv1.") and b" unverified, cipher " in out, out
    assert all(session.tls for session in s.wait_sessions(2))


def test_failed_handshake_continues_through_a_symlink(home, server, pki, tmp_path):
    """The failure continuation (qmail-remote again) is the real file beside tlsc-io."""
    from tests.support.smtpserver import CLOSE
    if not os.path.exists(os.path.join(home.bindir, "tlsc-io")):
        pytest.skip("tlsc-io is not installed")
    s = tls_route(home, server, pki, tls_handshake=CLOSE)
    out = remote_as(home, symlink_elsewhere(home, tmp_path))
    assert out.startswith(b"r\0K127.0.0.1 accepted message. (sent in cleartext: the TLS handshake failed ("), out
    first, second = s.wait_sessions(2)
    assert second.messages == [b"Subject: x\r\n\r\nfrom elsewhere\r\n"]


# --- --help, for people (no program of the chain passes it) ---

@pytest.mark.parametrize("program", ["qmail-remote-io", "tlsc-io"])
def test_help_prints_the_usage_on_stdout_and_exits_0(home, program):
    done = subprocess.run([os.path.join(home.bindir, program), "--help"], stdin=subprocess.DEVNULL,
                          capture_output=True, env=home.env(), timeout=60)
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.startswith(b"usage: %s [" % program.encode()), done.stdout
    for option in (b"--timeout", b"-6") + ((b"--ehlo", b"--note") if program == "qmail-remote-io" else (b"--verify",)):
        assert option in done.stdout
    assert b"...." not in done.stdout


def test_usage_error_text_has_no_four_dots(home):
    out, status = home.run("qmail-remote-io", ["--", "127.0.0.1", "s"])
    letter, text = decode_reports(out)[0]
    assert (status, letter) == (0, "D") and b"usage: qmail-remote-io" in text
    assert b"...." not in text, text
