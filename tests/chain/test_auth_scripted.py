"""SMTP AUTH against scripted servers: XOAUTH2, odd and multi-line challenges, a server
without AUTH, an AUTH reply that never comes (with the /proc check that no process of the
chain holds the secret in its argv or environment meanwhile), a route line changed during
the delivery, and the by-hand forms (qmail-remote-io -A, tlsc-io for SMTPS under tcpclient)."""

import base64
import hashlib
import hmac
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from tests.support.chain import decode_reports

SECRET = "Sekr1t-never-shown"


class AuthServer:
    """One scripted SMTP server: EHLO offers `offer`; AUTH runs script(server, rfile, wfile, line)
    which returns True when the client is authenticated. smtps: TLS from the first byte."""

    def __init__(self, script, offer=b"AUTH PLAIN LOGIN CRAM-MD5", cert=None):
        self.script, self.offer, self.cert = script, offer, cert
        self.lines, self.sessions = [], 0
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        self.sessions += 1
        try:
            if self.cert:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(*self.cert)
                conn = context.wrap_socket(conn, server_side=True)
            r, w = conn.makefile("rb"), conn.makefile("wb")

            def say(text):
                w.write(text + b"\r\n")
                w.flush()
            say(b"220 scripted")
            while True:
                line = r.readline()
                if not line:
                    return
                line = line.rstrip(b"\r\n")
                self.lines.append(line)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    say(b"250-scripted\r\n250-PIPELINING\r\n" + (b"250-" + self.offer + b"\r\n" if self.offer else b"")
                        + b"250 8BITMIME")
                elif verb == b"AUTH":
                    self.script(self, r, say, line)
                elif verb in (b"MAIL", b"RCPT"):
                    say(b"250 ok")
                elif verb == b"DATA":
                    say(b"354 go")
                    while r.readline() not in (b".\r\n", b""):
                        pass
                    say(b"250 queued")
                elif verb == b"QUIT":
                    say(b"221 bye")
                    return
                else:
                    say(b"500 what")
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def stop(self):
        self.release.set()
        self.listener.close()


@pytest.fixture
def auth_server():
    made = []

    def start(script, **kw):
        made.append(AuthServer(script, **kw))
        return made[-1]
    yield start
    for one in made:
        one.stop()


def b64(data):
    return base64.b64encode(data)


def cram_ok(server, r, say, line):
    challenge = b"<12345.67@scripted>"
    say(b"334 " + b64(challenge))
    answer = base64.b64decode(r.readline().strip())
    user, digest = answer.split(b" ")
    good = hmac.new(SECRET.encode(), challenge, "md5").hexdigest().encode()
    say(b"235 2.7.0 ok" if digest == good else b"535 5.7.8 no")


def cram_multiline(server, r, say, line):
    challenge = b64(b"<12345.67@scripted>")
    say(b"334-" + challenge[:8] + b"\r\n334 " + challenge[8:])
    answer = base64.b64decode(r.readline().strip())
    good = hmac.new(SECRET.encode(), b"<12345.67@scripted>", "md5").hexdigest().encode()
    say(b"235 ok" if answer.endswith(good) else b"535 no")


def cram_odd(server, r, say, line):
    say(b"334 !!not*base64!!")
    server.lines.append(r.readline().rstrip(b"\r\n"))
    say(b"501 5.7.0 cancelled")


def xoauth2(server, r, say, line):
    initial = base64.b64decode(line.split()[2])
    if initial == b"user=alice@example.com\x01auth=Bearer tok-" + SECRET.encode() + b"\x01\x01":
        say(b"235 2.7.0 accepted")
    else:
        say(b"334 " + b64(b'{"status":"401","schemes":"bearer"}'))
        server.lines.append(r.readline().rstrip(b"\r\n"))
        say(b"535 5.7.8 token expired")


def hang(server, r, say, line):
    server.hanging.set()
    server.release.wait(30)


def route(home, port, fields, key="example.org"):
    home.route("%s:127.0.0.1;%s|%s" % (key, port, fields))


def deliver(home, sender="alice@example.com"):
    reports, _ = home.remote("example.org", sender, "bob@example.org")
    return reports


def test_cram_md5_in_cleartext_and_auth_on_mail(home, auth_server):
    s = auth_server(cram_ok)
    route(home, s.port, "alice|" + SECRET)
    reports = deliver(home)
    assert reports[-1][0] == "K", reports
    assert b"MAIL FROM:<alice@example.com> AUTH=<alice@example.com>" in s.lines


def test_multiline_334(home, auth_server):
    s = auth_server(cram_multiline)
    route(home, s.port, "alice|" + SECRET)
    assert deliver(home)[-1][0] == "K"


def test_odd_challenge_is_cancelled_and_a_z(home, auth_server):
    s = auth_server(cram_odd)
    route(home, s.port, "alice|" + SECRET)
    reports = deliver(home)
    assert reports[-1] == ("Z", b"Connected to 127.0.0.1 but the AUTH CRAM-MD5 exchange failed: a challenge that is "
                                b"not base64.\nRemote host said: 501 5.7.0 cancelled\n")
    assert b"*" in s.lines and not any(l.startswith(b"MAIL") for l in s.lines)


def test_never_offers_auth(home, auth_server):
    s = auth_server(cram_ok, offer=b"")
    route(home, s.port, "alice|" + SECRET)
    reports = deliver(home)
    assert reports[-1][0] == "K"
    assert reports[-1][1].startswith(b"127.0.0.1 accepted message. (no supported AUTH method found, continuing "
                                     b"without authentication)\n")
    assert not any(l.startswith(b"AUTH") for l in s.lines)
    assert b"MAIL FROM:<alice@example.com>" in s.lines  # no AUTH= when not authenticated


@pytest.mark.parametrize("token, letter", [("tok-" + SECRET, "K"), ("stale", "Z")])
def test_xoauth2_token_from_a_file_over_smtps(home, auth_server, pki, token, letter):
    s = auth_server(xoauth2, offer=b"AUTH PLAIN XOAUTH2", cert=pki.server("127.0.0.1"))
    path = os.path.join(home.path, "token")
    with open(path, "w") as out:
        out.write(token + "\n")
    os.chmod(path, 0o640)
    route(home, "s%d" % s.port, "alice@example.com|file:%s||xoauth2" % path)
    reports = deliver(home)
    assert reports[-1][0] == letter, reports
    if letter == "Z":
        assert reports[-1][1] == (b"Connected to 127.0.0.1 but authentication was rejected (AUTH XOAUTH2).\n"
                                  b"Remote host said: 535 5.7.8 token expired\n")
        assert b"" in s.lines  # the empty line after the JSON error


def test_xoauth2_never_in_cleartext(home, auth_server, tmp_path):
    s = auth_server(xoauth2, offer=b"AUTH XOAUTH2")
    path = tmp_path / "token"
    path.write_text("tok\n")
    path.chmod(0o600)
    route(home, s.port, "alice@example.com|file:%s||xoauth2" % path)
    reports = deliver(home)
    assert reports[-1][0] == "Z" and b"will not send a password in cleartext" in reports[-1][1]
    assert not any(l.startswith(b"AUTH") for l in s.lines)


def chain_processes(root):
    """pids of root and its descendants."""
    found, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        try:
            children = open("/proc/%d/task/%d/children" % (pid, pid)).read().split()
        except OSError:
            continue
        for child in map(int, children):
            found.add(child)
            frontier.append(child)
    return found


def test_hanging_auth_reply_and_no_secret_in_proc(home, auth_server):
    """While the server sits on the AUTH command, no process of the chain has the secret
    in argv or environ; then timeoutremote ends it with a Z."""
    s = auth_server(hang)
    route(home, s.port, "alice|" + SECRET)
    home.control("timeoutremote", "3\n")
    with open(home.message_file(b"Subject: x\n\nhang\n"), "rb") as fd0:
        child = subprocess.Popen([os.path.join(home.bindir, "qmail-remote"), "example.org", "alice@example.com",
                                  "bob@example.org"], stdin=fd0, stdout=subprocess.PIPE, env=home.env())
        assert s.hanging.wait(20)
        pids = chain_processes(child.pid)
        seen = b""
        for pid in pids:
            for part in ("cmdline", "environ"):
                try:
                    seen += open("/proc/%d/%s" % (pid, part), "rb").read()
                except OSError:
                    pass
        assert b"qmail-remote-io" in seen and b"-A" in seen  # we did look at the chain during AUTH
        assert SECRET.encode() not in seen
        out, _ = child.communicate(timeout=30)
    assert decode_reports(out)[-1][0] == "Z"
    assert b"but connection died" in decode_reports(out)[-1][1]


def test_changed_route_line_is_a_z(home, auth_server):
    """qmail-remote-io reads the line again: if it changed, no password goes anywhere."""
    from qremote import routes

    s = auth_server(cram_ok)
    line = b"example.org:127.0.0.1;%d|alice|%s" % (s.port, SECRET.encode())
    home.route("example.org:127.0.0.1;%d|mallory|other" % s.port)
    sock = socket.create_connection(("127.0.0.1", s.port))
    out = home.by_hand("qmail-remote-io", sock, ["-g", "-h", "hand.example", "-A",
                                                 routes.reference("smtproutes", 1, line), "--",
                                                 "127.0.0.1", "alice@example.com", "bob@example.org"])
    sock.close()
    assert decode_reports(out)[-1] == ("Z", b"Unable to read the AUTH credentials of control/smtproutes line 1: "
                                            b"the line changed since this delivery began. (#4.3.0)\n")
    assert not any(l.startswith(b"AUTH") for l in s.lines)


def test_qmail_remote_io_by_hand_with_auth(home, auth_server):
    from qremote import routes

    s = auth_server(cram_ok)
    line = "example.org:127.0.0.1;%d|alice|%s" % (s.port, SECRET)
    home.route(line)
    sock = socket.create_connection(("127.0.0.1", s.port))
    out = home.by_hand("qmail-remote-io", sock, ["-g", "-h", "hand.example", "-A",
                                                 routes.reference("smtproutes", 1, line.encode()), "--",
                                                 "127.0.0.1", "alice@example.com", "bob@example.org"])
    sock.close()
    assert decode_reports(out)[-1][0] == "K"
    assert any(l.startswith(b"AUTH CRAM-MD5") for l in s.lines)


@pytest.mark.skipif(shutil.which("tcpclient") is None, reason="ucspi-tcp's tcpclient is not installed")
def test_smtps_by_hand_under_tcpclient(home, auth_server, pki):
    from qremote import routes

    s = auth_server(cram_ok, cert=pki.server("127.0.0.1"))
    line = "example.org:127.0.0.1;s%d|alice|%s" % (s.port, SECRET)
    home.route(line)
    path = home.message_file(b"Subject: x\n\nSMTPS via tcpclient\n")
    with open(path, "rb") as fd0:
        done = subprocess.run(["tcpclient", "-RHl0", "127.0.0.1", str(s.port),
                               os.path.join(home.bindir, "tlsc-io"), "-k", "127.0.0.1", "--",
                               os.path.join(home.bindir, "qmail-remote-io"), "-g", "-h", "tcpclient.example",
                               "-A", routes.reference("smtproutes", 1, line.encode()), "--",
                               "127.0.0.1", "alice@example.com", "bob@example.org"],
                              stdin=fd0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=home.env(), timeout=60)
    reports = decode_reports(done.stdout)
    assert reports[-1][0] == "K" and b"(TLSv1.3 unverified" in reports[-1][1], done.stdout
    assert b"MAIL FROM:<alice@example.com> AUTH=<alice@example.com>" in s.lines
