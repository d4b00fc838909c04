"""tlsc-io with real TLS: generated certificates, a loopback implicit-TLS server
(tests/support/tlsserver.py), real processes. PROG is a small script that reports its
environment and open fds as JSON on fd 1, then talks over fds 6/7."""

import hashlib
import json
import os
import select
import shutil
import ssl
import subprocess
import sys
import threading
import time

import pytest

from tests.support.chain import decode_reports
from tests.support.tlsserver import TLSServer, connect

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Starts argv[2:] with the connection (fd argv[1]) on fds 6 and 7 and nowhere else
ONTO_6_AND_7 = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 6); os.dup2(fd, 7);"
                " fd in (6, 7) or os.close(fd); os.execv(sys.argv[2], sys.argv[2:])")

PROG = r'''
import json, os, socket, sys
fds = sorted(int(name) for name in os.listdir("/proc/self/fd"))
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
fds = [fd for fd in fds if is_open(fd)]
env = {k: v for k, v in os.environ.items() if k.startswith(("SSL_", "TLSC_"))}
mode = sys.argv[1]
got = b""
if mode == "pingpong":   # send, half-close, read to EOF
    os.write(7, b"ping")
    s = socket.socket(fileno=7); s.shutdown(socket.SHUT_WR); s.detach()
    while True:
        data = os.read(6, 65536)
        if not data:
            break
        got += data
elif mode == "pinghash":  # as pingpong, but a large answer is reported as length and SHA-256
    import hashlib, time
    time.sleep(0.5)  # let the relay's buffers fill with records first
    os.write(7, b"ping")
    s = socket.socket(fileno=7); s.shutdown(socket.SHUT_WR); s.detach()
    digest, length = hashlib.sha256(), 0
    while True:
        data = os.read(6, 65536)
        if not data:
            break
        digest.update(data)
        length += len(data)
    got = ("%d %s" % (length, digest.hexdigest())).encode()
elif mode == "read":     # read to EOF (or an error)
    try:
        while True:
            data = os.read(6, 65536)
            if not data:
                break
            got += data
    except OSError as error:
        got = ("error %s" % error.errno).encode()
elif mode == "close-and-read":  # close an inherited descriptor, then read to EOF
    os.close(int(sys.argv[2]))
    got = os.read(6, 65536)
elif mode == "write-and-exit":
    os.write(7, b"bye")
try:  # PROG's own children: the relay must not be one (it would become a zombie of PROG)
    with open("/proc/self/task/%d/children" % os.getpid()) as f:
        children = f.read().split()
except OSError:
    children = None
seen = {"mode": mode, "fds": fds, "env": env, "pid": os.getpid(), "got": got.decode("latin-1"),
        "children": children}
os.write(1, json.dumps(seen).encode() + b"\n")
'''


@pytest.fixture(scope="session")
def tlsc(installed, tmp_path_factory):
    """The tlsc-io command: the installed one once package/install knows it, else a launcher
    made from commands/tlsc-io the same way (same interpreter, the source tree's lib)."""
    path = os.path.join(installed, "tlsc-io")
    if os.path.exists(path):
        return path
    with open(os.path.join(installed, "qmail-remote-io")) as installed_command:
        shebang = installed_command.readline().rstrip("\n")
    with open(os.path.join(TOP, "commands", "tlsc-io")) as source:
        lines = source.read().split("\n")
    lines[0] = shebang
    lines.insert(2, "import sys; sys.path.insert(0, %r)" % os.path.join(TOP, "lib"))
    path = os.path.join(str(tmp_path_factory.mktemp("tlscbin")), "tlsc-io")
    with open(path, "w") as out:
        out.write("\n".join(lines))
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="session")
def prog(tmp_path_factory, installed):
    with open(os.path.join(installed, "qmail-remote-io")) as installed_command:
        shebang = installed_command.readline().rstrip("\n")
    path = os.path.join(str(tmp_path_factory.mktemp("prog")), "prog")
    with open(path, "w") as out:
        out.write(shebang + "\n" + PROG)
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def servers():
    started = []

    def start(*args, **kw):
        s = TLSServer(*args, **kw)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


def run(tlsc, port, options, prog_argv, continuation=None, stdin=subprocess.DEVNULL, timeout=60, env=None,
        cwd=None):
    """tlsc-io OPTIONS [-F N] -- [CONTINUATION] PROG on a fresh connection to port: (stdout, stderr, status)."""
    sock = connect(port)
    argv = [tlsc] + options
    if continuation:
        argv += ["-F", str(len(continuation))]
    argv += ["--"] + (continuation or []) + prog_argv
    try:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", ONTO_6_AND_7, str(sock.fileno())] + argv,
                              pass_fds=(sock.fileno(),), stdin=stdin, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout,
                              env=env if env is not None else {"PATH": "/usr/bin:/bin"}, cwd=cwd)
    finally:
        sock.close()
    return done.stdout, done.stderr, done.returncode


def report(stdout):
    """PROG's (or the continuation's) JSON line."""
    line, = [x for x in stdout.split(b"\n") if x.startswith(b"{")]
    return json.loads(line)


def der_hash(certfile):
    with open(certfile) as f:
        pem = f.read()
    first = pem[:pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return "SHA256:" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


# --- successful handshakes ---

def test_file_anchors_verified_env_fds_and_half_close_both_ways(tlsc, prog, pki, servers):
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="echo", trailer=b" and goodbye")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file, "-v"], [prog, "pingpong"])
    assert (err, status) == (b"", 0)
    seen = report(out)
    # PROG got the server's bytes sent after the client's half-close, then EOF
    assert seen["got"] == "ping and goodbye"
    assert seen["fds"] == [0, 1, 2, 6, 7]
    assert seen["children"] in ([], None)  # None: a kernel without /proc/.../children
    env = seen["env"]
    assert env["SSL_PROTOCOL"] == "TLSv1.3"
    assert env["SSL_CIPHER"].startswith("TLS_")
    assert env["SSL_TLS_SNI_SERVERNAME"] == "mx.test"
    assert env["SSL_PEER_VERIFIED"] == "1"
    assert env["SSL_PEER_CERT_HASH"] == der_hash(cert)
    assert env["SSL_PEER_CERT_SUBJECT"].startswith("O=trustme")
    assert ", OU=Testing cert " in env["SSL_PEER_CERT_SUBJECT"]
    assert "TLSC_FAILURE" not in env
    session, = s.wait_sessions()
    assert session.sni == "mx.test"
    assert bytes(session.tls_received) == b"ping"  # the server saw our close_notify as EOF


def test_directory_anchors_verified(tlsc, prog, pki, servers):
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_dir, "-v"], [prog, "pingpong"])
    assert status == 0
    assert report(out)["env"]["SSL_PEER_VERIFIED"] == "1"
    assert report(out)["got"] == "ping"


@pytest.mark.parametrize("kind", ["untrusted", "wrong name", "expired"])
def test_bad_certificates_accepted_without_verify(tlsc, prog, pki, servers, kind):
    cert, key = {"untrusted": lambda: pki.untrusted("mx.test"), "wrong name": lambda: pki.server("other.test"),
                 "expired": lambda: pki.expired("mx.test")}[kind]()
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file], [prog, "pingpong"])
    env = report(out)["env"]
    assert env["SSL_PEER_VERIFIED"] == "0"
    assert env["SSL_PEER_CERT_HASH"] == der_hash(cert)
    assert report(out)["got"] == "ping"
    assert s.wait_sessions()[0].sni == "mx.test"


def test_an_address_as_name_is_verified_and_not_sent_as_sni(tlsc, prog, pki, servers):
    """qmail-remote gives the address itself for an IP literal: it needs an iPAddress certificate."""
    cert, key = pki.server("127.0.0.1")
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "127.0.0.1", "-a", pki.ca_file, "-v"], [prog, "pingpong"])
    env = report(out)["env"]
    assert env["SSL_PEER_VERIFIED"] == "1" and "SSL_TLS_SNI_SERVERNAME" not in env
    assert s.wait_sessions()[0].sni is None
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "127.0.0.1", "-a", pki.ca_file, "-v"], [prog, "pingpong"],
                           continuation=[prog, "failed"])
    assert report(out)["env"]["TLSC_FAILURE"].startswith("name: ")


def test_stale_ssl_variables_are_replaced(tlsc, prog, pki, servers):
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="echo")
    env = {"PATH": "/usr/bin:/bin", "SSL_PEER_CERT_SUBJECT": "stale", "TLSC_FAILURE": "stale", "SSL_PEER_VERIFIED": "1"}
    out, err, status = run(tlsc, s.port, ["-a", pki.ca_file], [prog, "pingpong"], env=env)
    seen = report(out)["env"]
    assert seen["SSL_PEER_VERIFIED"] == "0"
    assert "TLSC_FAILURE" not in seen and "SSL_TLS_SNI_SERVERNAME" not in seen
    assert seen["SSL_PEER_CERT_SUBJECT"] != "stale"
    assert s.wait_sessions()[0].sni is None  # no -k: no SNI


# --- failed handshakes: the continuation ---

@pytest.mark.parametrize("kind,expected", [
    ("untrusted", "verify: unable to get local issuer certificate"),
    ("wrong name", "name: Hostname mismatch"),
    ("expired", "verify: certificate has expired"),
])
def test_verify_failures_exec_the_continuation(tlsc, prog, pki, servers, kind, expected):
    cert, key = {"untrusted": lambda: pki.untrusted("mx.test"), "wrong name": lambda: pki.server("other.test"),
                 "expired": lambda: pki.expired("mx.test")}[kind]()
    s = servers(cert, key, mode="echo")
    env = {"PATH": "/usr/bin:/bin", "SSL_PROTOCOL": "stale"}
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file, "-v"], [prog, "pingpong"],
                           continuation=[prog, "failed"], env=env)
    assert (err, status) == (b"", 0)
    seen = report(out)
    assert seen["mode"] == "failed"
    assert seen["env"]["TLSC_FAILURE"].startswith(expected)
    assert not any(k.startswith("SSL_") for k in seen["env"])
    assert seen["fds"] == [0, 1, 2]  # the connection is closed


def test_without_continuation_exit_111_and_say_why(tlsc, prog, pki, servers):
    cert, key = pki.untrusted("mx.test")
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file, "-v"], [prog, "pingpong"])
    assert status == 111 and out == b""
    assert err.startswith(b"tlsc-io: fatal: verify: ") and err.endswith(b"\n") and err.count(b"\n") == 1


def test_handshake_timeout(tlsc, prog, pki, servers):
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="stall")
    started = time.monotonic()
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file, "-t", "1"], [prog, "pingpong"],
                           continuation=[prog, "failed"], timeout=30)
    assert time.monotonic() - started < 15  # generous bound; -t is 1 second
    assert report(out)["env"]["TLSC_FAILURE"].startswith("timeout: ")


@pytest.mark.parametrize("mode,kind", [("close", "closed: "), ("garbage", "handshake: ")])
def test_peer_closes_or_talks_garbage(tlsc, prog, pki, servers, mode, kind):
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode=mode)
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file], [prog, "pingpong"],
                           continuation=[prog, "failed"])
    failure = report(out)["env"]["TLSC_FAILURE"]
    assert failure.startswith(kind), failure
    assert len(failure) <= 300 and failure.isprintable()


def _bad_files(pki, tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificate here\n")
    cert, key = pki.client()
    _, other_key = pki.client("other.test")
    return {
        "missing anchors": (["-a", str(tmp_path / "nope.pem")], "nope.pem"),
        "anchors without a certificate": (["-a", str(empty)], "empty.pem"),
        "missing anchor directory": (["-a", str(tmp_path / "nodir") + "/"], "nodir"),
        "missing key": (["-a", pki.ca_file, "-c", cert, "-y", str(tmp_path / "nokey.pem")], "nokey.pem"),
        "key of another certificate": (["-a", pki.ca_file, "-c", cert, "-y", other_key], os.path.basename(other_key)),
        "key is not a key": (["-a", pki.ca_file, "-c", cert, "-y", str(empty)], "empty.pem"),
    }


@pytest.mark.parametrize("case", ["missing anchors", "anchors without a certificate", "missing anchor directory",
                                  "missing key", "key of another certificate", "key is not a key"])
def test_unusable_local_files(tlsc, prog, pki, servers, tmp_path, case):
    options, named = _bad_files(pki, tmp_path)[case]
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test"] + options, [prog, "pingpong"],
                           continuation=[prog, "failed"])
    failure = report(out)["env"]["TLSC_FAILURE"]
    assert failure.startswith("local: ") and named in failure, failure


# --- client certificates ---

def test_client_certificate_presented_when_required(tlsc, prog, pki, servers):
    cert, key = pki.server("mx.test")
    ccert, ckey = pki.client("relay.client.test")
    s = servers(cert, key, mode="echo", client_ca=pki.ca_file)
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file, "-v", "-c", ccert, "-y", ckey],
                           [prog, "pingpong"])
    assert report(out)["got"] == "ping"
    session, = s.wait_sessions()
    assert session.client_subject is not None and session.error is None


def test_client_certificate_absent_tls12_fails_the_handshake(tlsc, prog, pki, servers):
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="echo", client_ca=pki.ca_file, max_version="TLSv1.2")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file], [prog, "pingpong"],
                           continuation=[prog, "failed"])
    assert report(out)["env"]["TLSC_FAILURE"].startswith("handshake: ")


def test_client_certificate_absent_tls13_ends_the_stream(tlsc, prog, pki, servers):
    """TLS 1.3 clients finish before the server judges their certificate: PROG sees the end."""
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="echo", client_ca=pki.ca_file)
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file], [prog, "read"])
    seen = report(out)
    assert seen["mode"] == "read" and seen["got"] in ("", "error 104")
    assert s.wait_sessions()[0].error is not None


def test_half_close_while_the_server_streams(tlsc, prog, pki, servers):
    """PROG's EOF arrives while records pour in: close_notify must wait for a record
    boundary, and nothing sent either way may be lost."""
    cert, key = pki.server("mx.test")
    stream = os.urandom(1024) * 5 * 1024
    received = []

    def stream_then_read(tls, session):
        tls.sendall(stream)
        while True:
            data = tls.recv(65536)
            if not data:
                break
            received.append(data)
        tls.sendall(b"!")  # after the client's close_notify: the other direction still works
    s = servers(cert, key, mode="echo", handler=stream_then_read)
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file], [prog, "pinghash"])
    expected = stream + b"!"
    assert report(out)["got"] == "%d %s" % (len(expected), hashlib.sha256(expected).hexdigest())
    s.wait_sessions()
    assert b"".join(received) == b"ping"


def test_no_connection_on_fds(tlsc, prog, pki, tmp_path):
    done = subprocess.run([tlsc, "-a", pki.ca_file, "-F", "2", "--", prog, "failed", prog, "pingpong"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    failure = report(done.stdout)["env"]["TLSC_FAILURE"]
    assert failure.startswith("local: ") and "fds 6 and 7" in failure, failure


# --- the relay's end ---

def test_relay_exits_when_prog_exits_while_server_waits(tlsc, prog, pki, servers):
    """The report pipe reaches EOF when PROG exits, though the server keeps the connection open."""
    cert, key = pki.server("mx.test")
    received = []

    def wait_for_eof(tls, session):
        while True:
            data = tls.recv(65536)
            if not data:
                break
            received.append(data)
    s = servers(cert, key, mode="echo", handler=wait_for_eof)
    started = time.monotonic()
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file], [prog, "write-and-exit"],
                           timeout=30)
    assert report(out)["mode"] == "write-and-exit"
    s.wait_sessions(timeout=10)
    assert b"".join(received) == b"bye"  # flushed, then close_notify
    assert time.monotonic() - started < 15


def test_relay_keeps_no_inherited_descriptor(tlsc, prog, pki, servers):
    """Only PROG may hold what tlsc-io inherited (a pipe someone waits on, for one)."""
    cert, key = pki.server("mx.test")
    release = threading.Event()
    s = servers(cert, key, mode="echo", handler=lambda tls, session: release.wait(30))
    other_r, other_w = os.pipe()
    sock = connect(s.port)
    try:
        argv = [sys.executable, "-I", "-S", "-c", ONTO_6_AND_7, str(sock.fileno()), tlsc, "-k", "mx.test",
                "-a", pki.ca_file, "--", prog, "close-and-read", str(other_w)]
        child = subprocess.Popen(argv, pass_fds=(sock.fileno(), other_w), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
        os.close(other_w)
        sock.close()
        # PROG is alive (reading), the relay too: yet the pipe's write end is nowhere open
        assert select.select([other_r], [], [], 15)[0], "the relay still holds an inherited descriptor"
        assert os.read(other_r, 1) == b""
        assert child.poll() is None
        release.set()
        out, err = child.communicate(timeout=30)
        assert report(out)["mode"] == "close-and-read"
        assert report(out)["pid"] == child.pid  # tlsc-io's pid became PROG's
    finally:
        release.set()
        os.close(other_r)


def test_silence_timeout_ends_the_relay(tlsc, prog, pki, servers):
    cert, key = pki.server("mx.test")

    def say_nothing(tls, session):
        try:
            tls.recv(65536)  # until tlsc-io gives up and closes
        except OSError:
            pass
    s = servers(cert, key, mode="echo", handler=say_nothing)
    started = time.monotonic()
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file, "-T", "1"], [prog, "read"],
                           timeout=30)
    assert report(out)["got"] == ""
    assert time.monotonic() - started < 15


def test_usage_errors_exit_100(tlsc):
    for options in (["-x", "--", "prog"], ["-k", "mx.test"], ["-v", "--", "prog"], ["-F", "2", "--", "a", "b"],
                    ["-y", "key", "--", "prog"], ["-t", "soon", "--", "prog"]):
        done = subprocess.run([tlsc] + options, capture_output=True, timeout=30)
        assert done.returncode == 100, options
        assert done.stderr.startswith(b"tlsc-io: usage: ") and done.stdout == b""


# --- with qmail-remote-io, by hand (implicit TLS) ---

def _message(size):
    line = b"0123456789abcdefghijklmnopqrstuvwxyz.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
    body = line * (size // len(line) + 1)
    return b"Subject: big\n\n" + body[:size] + b"\n"


def assert_delivered(out):
    """r then K; qmail-remote-io may add a note on the TLS it learned from SSL_* to the K text."""
    (r, r_text), (k, k_text) = decode_reports(out)
    assert (r, r_text, k) == ("r", b"", "K"), out
    assert k_text.startswith(b"127.0.0.1 accepted message.") and k_text.endswith(b"Remote host said: 250 ok queued\n")


def test_20_mb_message_through_tlsc_io_and_qmail_remote_io(tlsc, installed, pki, servers, tmp_path):
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="smtp")
    message = _message(20 * 1024 * 1024)
    path = tmp_path / "message"
    path.write_bytes(message)
    io = os.path.join(installed, "qmail-remote-io")
    with open(path, "rb") as fd0:
        out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", pki.ca_file, "-v"],
                               [io, "-g", "-h", "tls.client.test", "--", "127.0.0.1", "a@src.test", "b@mx.test"],
                               stdin=fd0, timeout=300)
    assert_delivered(out)
    session, = s.wait_sessions(timeout=60)
    assert session.commands[0] == b"EHLO tls.client.test"
    wire = message.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
    assert session.messages == [wire]
    assert session.sni == "mx.test"


@pytest.mark.skipif(shutil.which("tcpclient") is None, reason="ucspi-tcp's tcpclient is not installed")
def test_by_hand_under_tcpclient(tlsc, installed, pki, servers, tmp_path):
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="smtp")
    path = tmp_path / "message"
    path.write_bytes(b"Subject: x\n\nover SMTPS by hand\n")
    with open(path, "rb") as fd0:
        done = subprocess.run(["tcpclient", "-RHl0", "127.0.0.1", str(s.port),
                               tlsc, "-k", "mx.test", "-a", pki.ca_file, "-v", "--",
                               os.path.join(installed, "qmail-remote-io"), "-g", "-h", "my.host.test",
                               "--", "127.0.0.1", "a@src.test", "b@mx.test"],
                              stdin=fd0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert_delivered(done.stdout)
    session, = s.wait_sessions()
    assert session.messages == [b"Subject: x\r\n\r\nover SMTPS by hand\r\n"]
    assert session.sni == "mx.test" and session.commands[-1] == b"QUIT"
