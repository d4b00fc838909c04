"""QMTP and QMTPS through control/qmtproutes, end to end: the installed chain against
two servers (tests/support/qmtpserver.py): SpecQMTP, written from qmtp.txt, for the
round trips, and ScriptedQMTP for the hostile replies."""

import os
import shutil
import socket
import subprocess

import pytest

from tests.support.chain import decode_reports
from tests.support.qmtpserver import CLOSE, STALL, ScriptedQMTP, SpecQMTP


@pytest.fixture
def qmtp_server():
    made = []

    def start(kind=SpecQMTP, **kw):
        made.append(kind(**kw))
        return made[-1]
    yield start
    for one in made:
        one.stop()


def qmtp_route(home, *lines):
    import time
    path = home.control("qmtproutes", "".join(line + "\n" for line in lines))
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def letters(reports):
    return "".join(letter for letter, _ in reports)


# --- round trips with the server written from the specification ---

ODD = (b"Subject: QMTP round trip\n\n.\n..leading dots stay\nCR\rinside and CRLF\r\n"
       b"8-bit \xe9\xff\x00 NUL too\n\nno final newline")


def test_round_trip_bytes_sender_recipients(home, qmtp_server):
    s = qmtp_server()
    qmtp_route(home, "example.org:127.0.0.1:%d" % s.port)
    reports, raw = home.remote("example.org", "alice@src.example", "bob@example.org", "reject-x@example.org",
                               "defer-y@example.org", "carol@example.org", message=ODD)
    assert letters(reports) == "rhsrK"
    assert reports[1][1] == (b"127.0.0.1 does not like recipient.\n"
                             b"Remote host said: sorry, no mailbox here by that name. (#5.1.1)\n")
    assert reports[2][1].endswith(b"Remote host said: mailbox busy, try later. (#4.2.1)\n")
    assert reports[4][1] == b"127.0.0.1 accepted message over QMTP.\nRemote host said: ok %d qp 1\n" % len(ODD)
    session, = s.wait_sessions()
    assert session.error is None and session.closed_by_client
    (message, sender, recipients, _, _), = session.packages
    assert message == ODD  # no dot-stuffing, no CRLF, the partial last line kept
    assert sender == b"alice@src.example"
    assert recipients == [b"bob@example.org", b"reject-x@example.org", b"defer-y@example.org", b"carol@example.org"]


def test_bounce_sender_and_no_recipient_accepted(home, qmtp_server):
    s = qmtp_server()
    qmtp_route(home, "example.org:127.0.0.1;%d" % s.port)  # s/qmail's form
    reports, _ = home.remote("example.org", "", "reject-1@example.org", "defer-2@example.org")
    assert letters(reports) == "hsD"
    assert reports[-1][1] == b"Giving up on 127.0.0.1.\n"
    assert s.wait_sessions()[0].packages[0][1] == b""


def test_qmtproutes_comes_before_smtproutes(home, qmtp_server, server):
    q, smtp = qmtp_server(), server()
    home.route("example.org:127.0.0.1:%d" % smtp.port, ".example.org:127.0.0.1:%d" % smtp.port)
    qmtp_route(home, ".org:127.0.0.1:%d" % q.port, "sub.example.org:")  # empty: smtproutes decides
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org")
    assert reports[-1][1].startswith(b"127.0.0.1 accepted message over QMTP.")
    assert smtp.sessions == []
    reports, _ = home.remote("sub.example.org", "a@src.example", "b@sub.example.org")
    assert reports[-1] == ("K", b"127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n")
    assert len(q.wait_sessions()) == 1 and len(smtp.wait_sessions()) == 1


def test_route_localip_is_the_source_address(home, qmtp_server):
    s = qmtp_server()
    qmtp_route(home, "example.org:127.0.0.1;%d|||127.0.0.9" % s.port)
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org")
    assert letters(reports) == "rK"
    assert s.wait_sessions()[0].peer[0] == "127.0.0.9"


def test_qmtproutes_with_a_password_is_refused(home, qmtp_server):
    s = qmtp_server()
    qmtp_route(home, "example.org:127.0.0.1;%d|user|secret" % s.port)
    reports, raw = home.remote("example.org", "a@src.example", "b@example.org")
    assert letters(reports) == "Z" and b"control/qmtproutes: line 1: QMTP has no AUTH" in raw
    assert b"secret" not in raw and s.sessions == []


def test_a_pipe_on_fd_0_is_deferred_before_sending(home, qmtp_server):
    s = qmtp_server()
    qmtp_route(home, "example.org:127.0.0.1:%d" % s.port)
    read, write = os.pipe()
    os.write(write, b"Subject: piped\n\nx\n")
    os.close(write)
    try:
        out, status = home.run("qmail-remote", ["example.org", "a@src.example", "b@example.org"], stdin=read)
    finally:
        os.close(read)
    assert status == 0
    assert decode_reports(out) == [("Z", b"QMTP needs the message in a regular file, whose length is known before "
                                         b"it is sent; fd 0 is not one. (#4.3.0)\n")]
    assert all(not session.packages for session in s.sessions)


def test_plain_qmtp_under_tlsstrictness_2_is_not_used(home, qmtp_server, pki):
    s = qmtp_server()
    qmtp_route(home, "example.org:127.0.0.1:%d" % s.port)
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "2\n")
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org")
    assert reports == [("Z", b"Sorry, no server would take the message over TLS, as control/tlsstrictness 2 "
                             b"requires (127.0.0.1: QMTP has no STARTTLS: qmtproutes names no QMTPS port). "
                             b"(#4.7.5)\n")]
    assert s.sessions == []


def test_plain_qmtp_under_tlsstrictness_1_goes_in_cleartext_with_a_note(home, qmtp_server, pki):
    s = qmtp_server()
    qmtp_route(home, "example.org:127.0.0.1:%d" % s.port)
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "1\n")
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org")
    assert reports[-1][1].startswith(b"127.0.0.1 accepted message over QMTP. (sent in cleartext: no server would "
                                     b"do TLS)\n")
    assert len(s.wait_sessions()) == 1


# --- QMTPS: QMTP inside TLS, through tlsc-io ---

@pytest.mark.parametrize("strictness", [0, 2])
def test_qmtps_through_tlsc_io(home, qmtp_server, pki, strictness):
    s = qmtp_server(tls_cert=pki.server("127.0.0.1"))
    qmtp_route(home, "example.org:[127.0.0.1];s%d" % s.port)
    if strictness:
        home.control("trustanchors", pki.ca_file + "\n")
        home.control("tlsstrictness", "%d\n" % strictness)
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org", "reject@example.org", message=ODD)
    assert letters(reports) == "rhK"
    first = reports[-1][1].split(b"\n")[0]
    assert first.startswith(b"127.0.0.1 accepted message over QMTPS. (TLSv1.3 %s" % (
        b"verified" if strictness else b"unverified"))
    session, = s.wait_sessions()
    assert session.tls and session.packages[0][0] == ODD


def test_port_6209_is_qmtps(home, qmtp_server, pki):
    try:
        s = qmtp_server(port=6209, tls_cert=pki.server("127.0.0.1"))
    except OSError as error:
        pytest.skip("cannot listen on 6209: %s" % error)
    qmtp_route(home, "example.org:127.0.0.1;6209")
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org")
    assert reports[-1][1].startswith(b"127.0.0.1 accepted message over QMTPS. (TLS")
    assert s.wait_sessions()[0].tls


@pytest.mark.parametrize("strictness", [0, 2])
def test_qmtps_handshake_failure_never_falls_back_to_cleartext(home, qmtp_server, pki, strictness):
    """The server on the QMTPS port speaks plain QMTP: the handshake fails, and the
    message is not sent in cleartext on a retry (there is none for implicit TLS)."""
    s = qmtp_server()
    qmtp_route(home, "example.org:127.0.0.1;s%d" % s.port)
    if strictness:
        home.control("trustanchors", pki.ca_file + "\n")
        home.control("tlsstrictness", "%d\n" % strictness)
    reports, raw = home.remote("example.org", "a@src.example", "b@example.org")
    assert letters(reports) == "Z", raw
    if strictness == 2:
        assert reports[0][1].startswith(b"Sorry, no server would take the message over TLS")
    else:
        assert reports[0][1].startswith(b"Connected to 127.0.0.1 but the QMTPS handshake failed: ")
    s.stop()
    assert all(not session.packages for session in s.sessions)


# --- hostile servers: each a bounded Z, never a hang or a K ---

DUP = b"Possible duplicate! (#4.4.2)\n"
PROTO = b"Connected to 127.0.0.1 but it did not talk proper QMTP (%s). " + DUP
DIED = b"Connected to 127.0.0.1 but connection died. " + DUP


@pytest.mark.parametrize("reply, expected, before", [
    (b"99999999999999999999999999:K", PROTO % b"a reply longer than 2048 bytes", ""),
    (b"1x:K,", PROTO % b"a reply length that is not a number", ""),
    (b"2:Ko;", PROTO % b"a reply without its ','", ""),
    (b"2:Ko,", DIED, "r"),                                # too few: one reply for two recipients, then EOF
    (b"2:Ko,2:Ko,2:Ko,", PROTO % b"more replies than recipients", "rr"),
    (b"9:Kok so f", DIED, ""),                            # a drop mid-reply
    (b"0:,", PROTO % b"an empty reply", ""),
    (b"3:Hi!,", PROTO % b"a reply that is not K, Z or D", ""),
    (b"02:Ko,", PROTO % b"a reply length with a leading zero", ""),
    (CLOSE, DIED, ""),
    (STALL, DIED, ""),                                    # silence: timeoutremote
])
def test_hostile_replies(home, qmtp_server, reply, expected, before):
    s = qmtp_server(ScriptedQMTP, reply=reply)
    qmtp_route(home, "example.org:127.0.0.1:%d" % s.port)
    home.control("timeoutremote", "2\n")
    reports, raw = home.remote("example.org", "a@src.example", "b@example.org", "c@example.org", timeout=30)
    assert letters(reports) == before + "Z", raw
    assert reports[-1][1] == expected
    s.stop()


def test_a_drop_while_sending_is_no_duplicate(home, qmtp_server):
    """The server goes away before the package's end: it must throw the package away
    (qmtp.txt section 2), so the Z does not say "Possible duplicate!"."""
    s = qmtp_server(ScriptedQMTP)

    def serve(conn, session):
        # read some of the package first: a reset before the client saw its connect complete
        # would be a failed connect (#4.4.1) on a loaded machine, not the drop this tests
        conn.recv(65536)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    s.serve = serve
    qmtp_route(home, "example.org:127.0.0.1:%d" % s.port)
    reports, raw = home.remote("example.org", "a@src.example", "b@example.org", message=b"x" * (16 << 20) + b"\n")
    assert reports == [("Z", b"Connected to 127.0.0.1 but connection died. (#4.4.2)\n")], raw


# --- memory: a 50 MB message streams with flat memory ---

def test_fifty_megabytes_with_flat_memory(home, qmtp_server, tmp_path):
    from tests.support.faultserver import run_chain
    s = qmtp_server()
    qmtp_route(home, "example.org:127.0.0.1:%d" % s.port)
    line = b"0123456789" * 9 + b"abcdefghi\n"
    path = str(tmp_path / "big")
    with open(path, "wb") as out:
        for _ in range(50 * 1024 * 1024 // len(line)):
            out.write(line)
    size = os.path.getsize(path)
    run = run_chain(home, "example.org", "a@src.example", ["b@example.org"], path)
    reports = decode_reports(run.output)
    assert letters(reports) == "rK", reports
    (_, _, _, length, digest), = s.wait_sessions()[0].packages
    import hashlib
    with open(path, "rb") as src:
        assert (length, digest) == (size, hashlib.file_digest(src, "sha256").hexdigest()
                                    if hasattr(hashlib, "file_digest") else hashlib.sha256(src.read()).hexdigest())
    # the chain's peak RSS, whatever the message: a message held whole would add 50 MB
    print("QMTP 50 MB: peak RSS %d KiB, %.2f s" % (run.maxrss_kb, run.elapsed))
    assert run.maxrss_kb < 40 * 1024


# --- by hand ---

def run_qmtp(home, sock, args, message=b"Subject: x\n\nby hand\n"):
    return home.by_hand("qmail-remote-qmtp", sock, args, message)


def test_by_hand_on_fds_6_and_7(home, qmtp_server):
    s = qmtp_server()
    sock = socket.create_connection(("127.0.0.1", s.port))
    out = run_qmtp(home, sock, ["--", "127.0.0.1", "a@src.example", "b@example.org"])
    sock.close()
    assert out == b"r\0K127.0.0.1 accepted message over QMTP.\nRemote host said: ok 20 qp 1\n\0"
    assert s.wait_sessions()[0].packages[0][0] == b"Subject: x\n\nby hand\n"


def test_bad_command_line(home):
    path = os.path.join(home.bindir, "qmail-remote-qmtp")
    done = subprocess.run([path, "-x"], stdin=subprocess.DEVNULL, capture_output=True, env=home.env())
    assert done.returncode == 0 and done.stdout.startswith(b"Dqmail-remote-qmtp was invoked improperly: ")
    done = subprocess.run([path, "--help"], capture_output=True, env=home.env())
    assert done.stdout.startswith(b"usage: qmail-remote-qmtp")


@pytest.mark.skipif(shutil.which("tcpclient") is None, reason="ucspi-tcp's tcpclient is not installed")
def test_under_tcpclient(home, qmtp_server):
    s = qmtp_server()
    path = home.message_file(b"Subject: x\n\nvia tcpclient\n")
    with open(path, "rb") as fd0:
        done = subprocess.run(["tcpclient", "-RHl0", "127.0.0.1", str(s.port),
                               os.path.join(home.bindir, "qmail-remote-qmtp"), "--", "127.0.0.1", "a@src.example",
                               "b@example.org"], stdin=fd0, capture_output=True, env=home.env(), timeout=60)
    assert decode_reports(done.stdout)[0] == ("r", b"")
    assert decode_reports(done.stdout)[-1][0] == "K"
    assert s.wait_sessions()[0].packages[0][0] == b"Subject: x\n\nvia tcpclient\n"
