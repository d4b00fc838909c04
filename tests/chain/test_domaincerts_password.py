"""control/domaincerts with an encrypted key through the installed chain (doc/domaincerts.html):
tlsc-io reads the password itself (-p domaincerts:LINE:HEX), inline or `file:PATH`; the
server, which requires a client certificate, sees the sender's; a wrong password is a Z
before anything is sent; the password is never in any argv or environment of the chain
while it delivers, nor in the report or the trace."""

import glob
import os
import subprocess

import pytest

from tests.chain.test_tlsdestinations import MSG, WIRE_MSG, over_tls
from tests.support.chain import decode_reports

PASSWORD = b"Pa55-xyzzy-domaincert"


@pytest.fixture(autouse=True)
def need_tlsc_io(installed):
    if not os.path.exists(os.path.join(installed, "tlsc-io")):
        pytest.skip("tlsc-io is not installed")


def setup(home, server, pki, password_field, **script):
    s = server(tls_cert=pki.server("127.0.0.1"), tls_client_ca=pki.ca_file, tls_require_client=True, **script)
    home.route("example.org:127.0.0.1:%d" % s.port)
    home.control("tlsdestinations", "127.0.0.1:\n")
    cert, key = pki.encrypted_client("src.example", PASSWORD)
    other, other_key = pki.client("default.example")
    home.control("domaincerts", b"# client certificates\n*:%s|%s\nsrc.example:%s|%s|%s\n"
                 % (other.encode(), other_key.encode(), cert.encode(), key.encode(), password_field))
    return s


def deliver(home, sender="a@src.example"):
    return home.remote("example.org", sender, "good@example.org", message=MSG)[1]


def test_encrypted_key_with_inline_password(home, server, pki):
    s = setup(home, server, pki, PASSWORD)
    raw = deliver(home)
    assert over_tls(raw, verified=False), raw
    session, = s.wait_sessions()
    assert ("DNS", "src.example") in session.client_cert["subjectAltName"]
    assert session.messages == [WIRE_MSG]


def test_encrypted_key_with_password_file(home, server, pki):
    secret = os.path.join(home.path, "control", "keypass")
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, PASSWORD + b"\n")
    os.close(fd)
    s = setup(home, server, pki, b"file:control/keypass")
    assert over_tls(deliver(home), verified=False)
    assert ("DNS", "src.example") in s.wait_sessions()[0].client_cert["subjectAltName"]
    os.chmod(secret, 0o644)  # every user could read it: refused, as for AUTH credentials
    raw = deliver(home)
    assert raw.startswith(b"ZUnable to start TLS: ") and b"can be read by every user" in raw, raw
    assert len(s.sessions) == 2 and not s.wait_sessions(2)[1].messages


def test_wrong_password_is_a_z_and_nothing_is_sent(home, server, pki):
    s = setup(home, server, pki, b"not-the-password")
    raw = deliver(home)
    assert raw.startswith(b"ZUnable to start TLS: unable to use the client certificate "), raw
    # OpenSSL says only "PEM lib": the Z points at the password and its line
    assert raw.endswith(b" (is the key password of control/domaincerts line 3 right?). (#4.3.0)\n\0"), raw
    assert b"not-the-password" not in raw
    assert not any(session.messages for session in s.wait_sessions(len(s.sessions)))


def test_other_senders_get_the_default_line(home, server, pki):
    s = setup(home, server, pki, PASSWORD)
    assert over_tls(deliver(home, "a@elsewhere.example"), verified=False)
    assert ("DNS", "default.example") in s.wait_sessions()[0].client_cert["subjectAltName"]


def _chain_processes(home):
    """The pids of the chain's processes now: those running a program of home's installed
    bin directory with home as QMAILHOME (tlsc-io's relay is reparented: not a child)."""
    found = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as f:
                if home.bindir.encode() not in f.read():
                    continue
            with open(path.replace("cmdline", "environ"), "rb") as f:
                if b"QMAILHOME=%s\0" % home.path.encode() in f.read():
                    found.append(int(path.split("/")[2]))
        except OSError:
            continue
    return found


def test_password_never_in_argv_environ_report_or_trace(home, server, pki):
    """While the server holds the RCPT reply, every process of the chain (tlsc-io and
    qmail-remote-io are running then) is read: no argv or environment holds the password,
    as it is or in hex; nor do the report and the trace line."""
    tracedir = os.path.join(home.path, "trace")
    os.mkdir(tracedir)
    home.control("tracedir", tracedir + "\n")
    seen = {"pids": 0, "programs": b"", "leaks": []}

    def scan_at_rcpt(session, line):
        for pid in _chain_processes(home):
            for part in ("cmdline", "environ"):
                try:
                    with open("/proc/%d/%s" % (pid, part), "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                if part == "cmdline":
                    seen["pids"] += 1
                    seen["programs"] += data + b"\n"
                if PASSWORD in data or PASSWORD.hex().encode() in data.lower():
                    seen["leaks"].append((pid, part))
        return b"250 ok\r\n"

    s = setup(home, server, pki, PASSWORD, rcpt=scan_at_rcpt)
    with open(home.message_file(MSG), "rb") as fd0:
        process = subprocess.Popen([os.path.join(home.bindir, "qmail-remote"), "example.org", "a@src.example",
                                    "good@example.org"], stdin=fd0, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, env=home.env())
        raw, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and over_tls(raw, verified=False), raw
    decode_reports(raw)
    assert s.wait_sessions()[0].messages == [WIRE_MSG]
    assert seen["pids"] >= 2 and b"tlsc-io" in seen["programs"] and b"qmail-remote-io" in seen["programs"], seen
    assert seen["leaks"] == []
    assert PASSWORD not in raw
    trace = b"".join(open(path, "rb").read() for path in glob.glob(os.path.join(tracedir, "*.jsonl")))
    assert trace.count(b"\n") == 1 and b"127.0.0.1" in trace
    assert PASSWORD not in trace and PASSWORD.hex().encode() not in trace.lower()
