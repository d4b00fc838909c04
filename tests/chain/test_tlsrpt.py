"""qmail-tlsrpt installed: reports from a trace into files, and delivered to the rua found
by a real DNS stub ($DNSCACHEIP): mailto: through a fake qmail-inject that keeps what it
is given, https: by POST to a real loopback HTTPS server with a test CA."""

import datetime
import email
import email.policy
import gzip
import http.server
import json
import os
import ssl
import subprocess
import threading

import pytest

from tests.support import jsonschema_lite, tlsrpt_trace as trace
from tests.support.dnsserver import DNSServer

SCHEMA = json.load(open(os.path.join(os.path.dirname(__file__), "..", "support", "tlsrpt-schema.json")))
DAY = ["--day", trace.DAY.isoformat()]

FAKE_INJECT = """#!/bin/sh
# a qmail-inject that keeps its arguments and its input, then exits with $INJECT_EXIT
dir=%s
n=$(ls "$dir" | wc -l)
printf '%%s\\n' "$@" > "$dir/$n.args"
cat > "$dir/$n.message"
exit ${INJECT_EXIT:-0}
"""


def tlsrpt(home, *args, **env):
    done = subprocess.run([os.path.join(home.bindir, "qmail-tlsrpt")] + list(args), capture_output=True,
                          env=home.env(**env), timeout=120)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture
def traced(home):
    home.control("tracedir", trace.write(os.path.join(home.path, "trace")) + "\n")
    return home


def test_out_writes_one_valid_report_per_domain(traced, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    status, stdout, stderr = tlsrpt(traced, "--out", str(out), *DAY)
    assert (status, stderr) == (0, "")
    assert "skipped %d malformed trace lines" % len(trace.MALFORMED) in stdout
    assert "example.com: 4 successful, 5 failed sessions" in stdout
    names = sorted(os.listdir(out))
    assert [n.split("!")[:4] for n in names] == [["me.example", d, "1796515200", "1796601599"]
                                                 for d in ("dane.test", "example.com", "plain.test")]
    for name in names:
        report = json.loads(gzip.decompress((out / name).read_bytes()))
        assert jsonschema_lite.errors(SCHEMA, report) == []
        assert name == "me.example!%s!1796515200!1796601599!%s.json.gz" % (
            report["policies"][0]["policy"]["policy-domain"], report["report-id"])
        assert report["organization-name"] == "me.example" and report["contact-info"] == "postmaster@me.example"
    again = tmp_path / "again"
    again.mkdir()
    assert tlsrpt(traced, "--out", str(again), *DAY)[0] == 0
    assert sorted(os.listdir(again)) == names  # the same report-ids: a receiver drops a resent one


def test_without_out_or_send_prints_the_reports(traced):
    status, stdout, _ = tlsrpt(traced, "--org", "Example Org", "--contact", "tls@me.example", *DAY)
    assert status == 0
    assert stdout.count('"organization-name": "Example Org"') == 3 and '"contact-info": "tls@me.example"' in stdout


def test_default_day_is_yesterday_utc(home):
    yesterday = datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=1)
    directory = os.path.join(home.path, "trace")
    os.makedirs(directory)
    with open(os.path.join(directory, yesterday.isoformat() + ".jsonl"), "w") as out:
        out.write(trace.line(yesterday.isoformat() + "T12:00:00Z", "yesterday.test",
                             [trace.ok("mx.yesterday.test", "192.0.2.9")]) + "\n")
    home.control("tracedir", directory + "\n")
    status, stdout, stderr = tlsrpt(home)
    assert (status, stderr) == (0, "") and "yesterday.test: 1 successful, 0 failed sessions" in stdout


def test_a_linked_trace_file_is_not_followed(home, tmp_path):
    directory = tmp_path / "trace"
    directory.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(trace.line("2026-12-06T12:00:00Z", "linked.test", [trace.ok("mx.linked.test", "192.0.2.9")]))
    os.symlink(elsewhere, directory / "2026-12-06.jsonl")
    status, stdout, stderr = tlsrpt(home, "--tracedir", str(directory), *DAY)
    assert status == 111 and "linked.test" not in stdout
    assert "qmail-tlsrpt: unable to open %s/2026-12-06.jsonl: Too many levels of symbolic links" % directory in stderr


def test_no_tracedir_is_said(home):
    status, stdout, stderr = tlsrpt(home, *DAY)
    assert status == 111 and "no trace directory" in stderr


def test_an_empty_day(traced):
    status, stdout, stderr = tlsrpt(traced, "--day", "2020-01-01")
    assert (status, stderr) == (0, "") and "no TLS sessions to report for 2020-01-01" in stdout


class Collector(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append((self.path, self.headers.get("Content-Type"), body))
        if self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "/tlsrpt")
        else:
            self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def https(pki):
    certfile, keyfile = pki.server("localhost")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def dns():
    server = DNSServer()
    yield server
    server.stop()


@pytest.fixture
def inject(tmp_path):
    kept = tmp_path / "injected"
    kept.mkdir()
    script = tmp_path / "qmail-inject"
    script.write_text(FAKE_INJECT % kept)
    script.chmod(0o755)
    return str(script), kept


def test_send_by_mail_and_https(traced, dns, https, inject, pki, tmp_path):
    port = https.server_address[1]
    # two character-strings: joined without a space (RFC 8460 3)
    dns.add("_smtp._tls.example.com", "TXT", '"v=TLSRPTv1; rua=mailto:tls-reports@example.com," '
            '"https://localhost:%d/tlsrpt,http://insecure.example.com/"' % port, '"v=spf1 -all"')
    dns.add("_smtp._tls.dane.test", "TXT", '"v=TLSRPTv1; rua=mailto:a@dane.test"',
            '"v=TLSRPTv1; rua=mailto:b@dane.test"')
    dns.add("_smtp._tls.plain.test", "TXT", '"v=TLSRPTv1; rua=mailto:x@plain.test; bad key=1"')
    script, kept = inject
    out = tmp_path / "out"
    out.mkdir()
    status, stdout, stderr = tlsrpt(traced, "--send", "--out", str(out), "--inject", script, "--anchors", pki.ca_file,
                                    *DAY, DNSCACHEIP=dns.address())
    assert (status, stderr) == (0, ""), stdout
    assert "example.com: sent to mailto:tls-reports@example.com" in stdout
    assert "example.com: sent to https://localhost:%d/tlsrpt" % port in stdout
    assert "example.com: skipped rua" in stdout and "http://insecure.example.com/" in stdout
    assert "dane.test: not sent: no TLSRPT record (_smtp._tls.dane.test has 2 v=TLSRPTv1 records, not 1)" in stdout
    assert "plain.test: not sent: invalid TLSRPT record" in stdout
    (name,) = [n for n in os.listdir(out) if "!example.com!" in n]
    written = (out / name).read_bytes()

    assert sorted(os.listdir(kept)) == ["0.args", "0.message"]  # one mail: only example.com has a usable rua
    assert (kept / "0.args").read_text() == "-f\npostmaster@me.example\ntls-reports@example.com\n"
    message = email.message_from_bytes((kept / "0.message").read_bytes(), policy=email.policy.default)
    report = json.loads(gzip.decompress(written))
    assert message["To"] == "tls-reports@example.com" and message["From"] == "postmaster@me.example"
    assert message["Subject"] == "Report Domain: example.com Submitter: me.example Report-ID: <%s@me.example>" % \
        report["report-id"]
    assert message["TLS-Report-Domain"] == "example.com" and message["TLS-Report-Submitter"] == "me.example"
    assert message.get_content_type() == "multipart/report" and message.get_param("report-type") == "tlsrpt"
    (attachment,) = [p for p in message.iter_parts() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert attachment.get_filename() == name
    assert attachment.get_payload(decode=True) == written
    assert jsonschema_lite.errors(SCHEMA, report) == []

    assert https.posts == [("/tlsrpt", "application/tlsrpt+gzip", written)]
    assert ("_smtp._tls.example.com", "TXT", "udp") in dns.queries


def test_failures_are_said_and_exit_111(traced, dns, https, inject):
    port = https.server_address[1]
    dns.add("_smtp._tls.example.com", "TXT",
            '"v=TLSRPTv1; rua=mailto:r@example.com,https://localhost:%d/tlsrpt"' % port)
    dns.add("_smtp._tls.dane.test", "TXT", '"v=TLSRPTv1; rua=https://localhost:%d/moved"' % port)
    dns.behave("_smtp._tls.plain.test", "servfail")
    script, kept = inject
    # no --anchors: the system's trust store does not know the test CA
    status, stdout, stderr = tlsrpt(traced, "--send", "--inject", script, "--timeout", "5", *DAY,
                                    DNSCACHEIP=dns.address(), INJECT_EXIT="100")
    assert status == 111
    assert "qmail-tlsrpt: example.com: %s exited 100" % script in stderr
    assert "qmail-tlsrpt: example.com: POST to https://localhost:%d/tlsrpt failed:" % port in stderr
    assert "CERTIFICATE_VERIFY_FAILED" in stderr
    assert "qmail-tlsrpt: plain.test: not sent: lookup of _smtp._tls.plain.test TXT failed" in stderr
    assert https.posts == []  # the handshake failed before any request


def test_a_redirect_is_not_followed(traced, dns, https, inject, pki):
    port = https.server_address[1]
    dns.add("_smtp._tls.dane.test", "TXT", '"v=TLSRPTv1; rua=https://localhost:%d/moved"' % port)
    status, stdout, stderr = tlsrpt(traced, "--send", "--inject", inject[0], "--anchors", pki.ca_file, *DAY,
                                    DNSCACHEIP=dns.address())
    assert status == 111
    assert "qmail-tlsrpt: dane.test: POST to https://localhost:%d/moved: HTTP 302" % port in stderr
    assert [p[0] for p in https.posts] == ["/moved"]
