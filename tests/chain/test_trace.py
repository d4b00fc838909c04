"""The per-delivery trace (control/tracedir, doc/trace.html) through the installed chain:
one whole JSON line per delivery under 50 concurrent deliveries, valid against the schema
(tests/support/traceschema.py); a handshake failure and the resumed cleartext delivery in
one line; no secret in an AUTH route's trace; a trace that cannot be written changes
nothing of the report."""

import base64
import os
import subprocess
import time

import pytest

from tests.support.chain import decode_reports
from tests.support.net import needs_root
from tests.support.smtpserver import CLOSE, SMTPServer
from tests.support.traceschema import check

MSG = b"Subject: trace\n\nthe body must never reach the trace: BODYMARK\n"


@pytest.fixture(autouse=True)
def need_tlsc_io(installed):
    if not os.path.exists(os.path.join(installed, "tlsc-io")):
        pytest.skip("tlsc-io is not installed")


def traced(home):
    directory = os.path.join(home.path, "trace")
    os.makedirs(directory, exist_ok=True)
    home.control("tracedir", directory + "\n")
    return directory


def trace_lines(directory):
    lines = []
    for name in sorted(os.listdir(directory)):
        assert name.endswith(".jsonl") and len(name) == len("2026-12-07.jsonl"), name
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        assert data.endswith(b"\n"), "a partial line"
        lines += data.split(b"\n")[:-1]
    return lines


def tls_route(home, server, pki, **kw):
    s = server(tls_cert=pki.server("127.0.0.1"), **kw)
    home.route("example.org:127.0.0.1:%d" % s.port)
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "0\n")
    return s


def test_one_delivery_over_tls(home, server, pki):
    tls_route(home, server, pki)
    directory = traced(home)
    _, raw = home.remote("example.org", "s@Src.Example", "a@example.org", "b@other.example", message=MSG)
    assert raw.startswith(b"r\0r\0K127.0.0.1 accepted message. (TLSv1."), raw
    line, = trace_lines(directory)
    trace = check(line)
    assert trace["host"] == "example.org" and trace["route"] == "smtproutes"
    assert trace["sender_domain"] == "src.example"
    assert trace["recipient_domains"] == ["example.org", "other.example"] and trace["recipients"] == 2
    assert trace["dns"] == [{"name": "127.0.0.1", "type": "A", "status": "ok", "ad": False,
                             "records": ["127.0.0.1"], "source": "targets"}]
    attempt, = trace["attempts"]
    assert attempt["ip"] == "127.0.0.1" and attempt["result"] == "tls" and attempt["failure"] is None
    assert trace["tls"]["version"].startswith("TLSv1.") and trace["tls"]["verified"] is False
    # greeting, EHLO, STARTTLS by qmail-remote; EHLO, MAIL, 2 RCPT, DATA, the dot by qmail-remote-io
    assert trace["replies"] == [220, 250, 220, 250, 250, 250, 250, 354, 250]
    assert trace["report"] == {"letter": "K", "text": raw[5:-2].decode()}
    assert b"BODYMARK" not in line and b"a@example.org" not in line


def test_an_inherited_trace_variable_is_never_written_to(home, server, pki, tmp_path):
    """QREMOTE_TRACE_FD from outside (no control/tracedir) naming an open file: dropped,
    the file stays empty."""
    tls_route(home, server, pki)
    stray = tmp_path / "stray"
    stray.write_bytes(b"")
    with open(stray, "r+b") as target, open(home.message_file(MSG), "rb") as fd0:
        def onto_9():
            os.dup2(target.fileno(), 9)
        done = subprocess.run([os.path.join(home.bindir, "qmail-remote"), "example.org", "s@src.example",
                               "a@example.org"], stdin=fd0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              pass_fds=(target.fileno(), 9), preexec_fn=onto_9,
                              env=home.env(QREMOTE_TRACE_FD="9"), timeout=60)
    assert done.stdout.startswith(b"r\0K127.0.0.1 accepted message. (TLSv1."), done.stdout
    assert stray.read_bytes() == b""


def test_fifty_concurrent_deliveries_each_one_whole_valid_line(home, server, pki):
    s = tls_route(home, server, pki)
    # a stalled exchange (a starved loopback server on a loaded machine) ends in a Z that
    # says where, not in a hang: then the line is still whole and valid
    home.control("timeoutremote", "60\n")
    home.control("timeoutconnect", "30\n")
    directory = traced(home)
    message = home.message_file(MSG)
    running = []
    for i in range(50):
        with open(message, "rb") as fd0:
            running.append(subprocess.Popen(
                [os.path.join(home.bindir, "qmail-remote"), "example.org", "s@sender%d.example" % i,
                 "r%d@example.org" % i], stdin=fd0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=home.env()))
    outputs = [p.communicate(timeout=300)[0] for p in running]
    assert all(p.returncode == 0 for p in running)
    assert all(out.startswith(b"r\0K127.0.0.1 accepted message.") for out in outputs), outputs
    lines = trace_lines(directory)
    assert len(lines) == 50
    traces = [check(line) for line in lines]
    assert sorted(t["sender_domain"] for t in traces) == sorted("sender%d.example" % i for i in range(50))
    assert all(t["report"]["letter"] == "K" and t["tls"] is not None for t in traces)
    assert len(s.wait_sessions(50)) == 50


def test_resume_after_a_failed_handshake_is_one_line_with_both_attempts(home, server, pki):
    tls_route(home, server, pki, tls_handshake=CLOSE)
    directory = traced(home)
    _, raw = home.remote("example.org", "s@src.example", "r@example.org", message=MSG)
    assert b"accepted message. (sent in cleartext: the TLS handshake failed" in raw, raw
    line, = trace_lines(directory)
    trace = check(line)
    first, second = trace["attempts"]
    assert first["result"].startswith("tls failed: closed: ") and first["failure"] == "validation-failure"
    assert second["result"] == "connected" and second["failure"] is None
    assert 0 <= first["t"] <= second["t"] <= trace["duration"]
    assert trace["tls"] is None and trace["report"]["letter"] == "K"


def test_no_starttls_is_starttls_not_supported(home, server, pki):
    tls_route(home, server, pki, ehlo=b"250-sink.test\r\n250 PIPELINING\r\n")
    home.control("tlsstrictness", "2\n")
    directory = traced(home)
    _, raw = home.remote("example.org", "s@src.example", "r@example.org", message=MSG)
    assert raw.startswith(b"ZSorry, no server would take the message over TLS"), raw
    trace = check(trace_lines(directory)[0])
    assert trace["attempts"][0]["failure"] == "starttls-not-supported"
    assert trace["report"]["letter"] == "Z"


def test_bad_certificate_is_certificate_not_trusted(home, server, pki):
    s = server(tls_cert=pki.untrusted("127.0.0.1"))
    home.route("example.org:127.0.0.1:%d" % s.port)
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "2\n")
    directory = traced(home)
    home.remote("example.org", "s@src.example", "r@example.org", message=MSG)
    trace = check(trace_lines(directory)[0])
    assert trace["attempts"][0]["failure"] == "certificate-not-trusted", trace


SECRET = "Tr4ce-Sekr1t-pw"


def test_auth_route_trace_holds_no_secret(home, server, pki):
    ehlo = b"250-sink.test\r\n250-AUTH PLAIN\r\n250 PIPELINING\r\n"
    s = server(tls_cert=pki.server("127.0.0.1"), ehlo=ehlo.replace(b"250 PIPELINING", b"250-PIPELINING\r\n250 STARTTLS"),
               ehlo_tls=ehlo, unknown=b"235 2.7.0 ok\r\n")
    home.route("example.org:127.0.0.1;%d|alice|%s" % (s.port, SECRET))
    directory = traced(home)
    _, raw = home.remote("example.org", "s@src.example", "r@example.org", message=MSG)
    assert b" accepted message. (TLSv1." in raw, raw
    session, = s.wait_sessions()
    assert any(c.startswith(b"AUTH PLAIN") for c in session.commands)  # the secret did go, inside TLS
    data = b"".join(trace_lines(directory))
    trace = check(data)
    assert trace["route"] == "smtproutes" and 235 in trace["replies"]
    for secret in (SECRET.encode(), base64.b64encode(b"\0alice\0" + SECRET.encode()), SECRET.encode().hex().encode()):
        assert secret not in data


@pytest.mark.parametrize("breakage", ["missing", "a file", "a FIFO day file", "a directory day file"])
def test_unwritable_trace_changes_nothing(home, server, pki, breakage):
    tls_route(home, server, pki)
    _, expected = home.remote("example.org", "s@src.example", "r@example.org", message=MSG)
    directory = os.path.join(home.path, "trace")
    day = os.path.join(directory, time.strftime("%Y-%m-%d.jsonl", time.gmtime()))
    if breakage == "a file":
        with open(directory, "w") as f:
            f.write("not a directory\n")
    elif breakage != "missing":
        os.makedirs(directory)
        (os.mkfifo if breakage == "a FIFO day file" else os.mkdir)(day)
    home.control("tracedir", directory + "\n")
    started = time.monotonic()
    reports, raw = home.remote("example.org", "s@src.example", "r@example.org", message=MSG)
    assert time.monotonic() - started < 30  # a FIFO without a reader is no wait
    assert raw == expected
    assert [letter for letter, _ in reports] == ["r", "K"]


def test_tls_failure_report_through_tlsc_io_is_traced(home, server, pki):
    """A Z written by the resumed qmail-remote after tlsc-io's failure: still one line."""
    tls_route(home, server, pki, tls_handshake=CLOSE)
    home.control("tlsstrictness", "2\n")
    directory = traced(home)
    reports, raw = home.remote("example.org", "s@src.example", "r@example.org", message=MSG)
    assert raw.startswith(b"Z"), raw
    line, = trace_lines(directory)
    trace = check(line)
    assert trace["attempts"][0]["result"].startswith("tls failed: closed")
    assert decode_reports(raw)[-1][1].rstrip(b"\n").decode() == trace["report"]["text"]


@pytest.fixture
def dns_stub():
    from tests.support.dnsserver import DNSServer
    stub = DNSServer()
    yield stub
    stub.stop()


@needs_root
def test_resume_to_the_next_mx_after_a_bad_certificate(home, pki, dns_stub):
    """tlsc-io fails on the first MX (untrusted certificate), qmail-remote resumes, and the
    second MX takes the message over verified TLS: both attempts, the TLS facts, one line."""
    try:
        bad = SMTPServer("127.0.9.2", 25, tls_cert=pki.untrusted("a.mx.test"))
    except OSError as error:
        pytest.skip("cannot listen on port 25: %s" % error)
    good = SMTPServer("127.0.9.3", 25, tls_cert=pki.server("b.mx.test"))
    try:
        dns_stub.add("mx.test", "MX", "10 a.mx.test.", "20 b.mx.test.")
        dns_stub.add("a.mx.test", "A", "127.0.9.2").add("b.mx.test", "A", "127.0.9.3")
        home.control("trustanchors", pki.ca_file + "\n")
        home.control("tlsstrictness", "2\n")
        directory = traced(home)
        _, raw = home.remote("mx.test", "s@src.example", "r@mx.test", message=MSG, DNSCACHEIP=dns_stub.address())
        assert raw.startswith(b"r\0K127.0.9.3 accepted message. (TLSv1.") and b" verified, cipher " in raw, raw
        line, = trace_lines(directory)
        trace = check(line)
        assert trace["route"] == "mx"
        # the resolver's own answers: the MX, then each host's A (and AAAA, empty here)
        assert {(d["name"], d["records"][0]) for d in trace["dns"] if d["type"] == "A"} == {
            ("a.mx.test", "127.0.9.2"), ("b.mx.test", "127.0.9.3")}
        mx, = [d for d in trace["dns"] if d["type"] == "MX"]
        assert mx["name"] == "mx.test" and mx["status"] == "ok" and len(mx["records"]) == 2
        first, second = trace["attempts"]
        assert (first["name"], first["failure"]) == ("a.mx.test", "certificate-not-trusted")
        assert first["result"].startswith("tls failed: verify: ")
        assert (second["name"], second["result"], second["failure"]) == ("b.mx.test", "tls", None)
        assert trace["tls"]["verified"] is True and trace["tls"]["sni"] == "b.mx.test"
        assert trace["replies"][:3] == [220, 250, 220] and trace["replies"][-1] == 250
    finally:
        bad.stop()
        good.stop()


def test_qmtp_route(home):
    from tests.support.qmtpserver import SpecQMTP
    with SpecQMTP() as s:
        home.control("qmtproutes", "example.org:127.0.0.1;%d\n" % s.port)
        directory = traced(home)
        _, raw = home.remote("example.org", "s@src.example", "a@example.org", "b@example.org", message=MSG)
        assert b"accepted message over QMTP" in raw, raw
    trace = check(trace_lines(directory)[0])
    assert trace["route"] == "qmtproutes" and trace["attempts"][0]["protocol"] == "qmtp"
    assert trace["qmtp_replies"] == ["K", "K"] and trace["replies"] == []


def test_a_control_file_z_is_traced_without_a_route(home):
    home.control("timeoutremote", "soon\n")
    directory = traced(home)
    _, raw = home.remote("example.org", "s@src.example", "r@example.org", message=MSG)
    assert raw.startswith(b"ZInvalid control file control/timeoutremote"), raw
    trace = check(trace_lines(directory)[0])
    assert trace["route"] is None and trace["attempts"] == [] and trace["report"]["letter"] == "Z"
