"""Every delivery ends, with a report (issue 8, "A delivery must always end"): the
opening's one deadline, tlsc-io's failures inside a delivery, no unbounded network
wait, argv and environment values that always fit execve(), and OpenSSL's environment
variables ignored. Real servers on loopback, the installed chain."""

import os
import socket
import subprocess
import time

import pytest

from tests.chain.test_starttls import MSG, deliver, dns, need_tlsc_io, routed  # noqa: F401 (fixtures)
from tests.chain.test_tlsc_io import prog, run, servers, tlsc  # noqa: F401 (fixtures)
from tests.support.net import listening
from tests.support.smtpserver import STALL


@pytest.fixture
def mute_servers():
    """make(ips, port) -> listeners on ip:port that complete TCP connects and never say a word."""
    made = []

    def make(ips, port=0):
        for ip in ips:
            made.append(listening(ip, port))
            port = made[-1].getsockname()[1]
        return port
    yield make
    for listener in made:
        listener.close()


def test_one_deadline_bounds_the_opening_over_all_addresses(home, dns, mute_servers):
    """8 addresses that accept and never greet, 1 s each: control/timeoutopening 3 ends it
    after about 3 s with a Z naming what was tried, not after 8 x timeoutremote."""
    ips = ["127.0.61.%d" % i for i in range(1, 9)]
    port = mute_servers(ips)
    d = dns([("mute.test", "A", *ips)])
    home.route("example.org:mute.test:%d" % port)
    home.control("timeoutremote", "1\n")
    home.control("timeoutopening", "3\n")
    started = time.monotonic()
    reports, raw = deliver(home, DNSCACHEIP=d.address(), timeout=60)
    took = time.monotonic() - started
    (letter, text), = reports
    assert letter == "Z"
    assert text.startswith(b"Sorry, no server could be reached within the 3 seconds of control/timeoutopening (")
    assert text.count(b"connection died") >= 2 and text.endswith(b"(#4.4.1)\n")
    print("8 mute addresses, timeoutopening 3: %.1f s" % took)


def test_the_default_deadline_follows_timeoutremote(home, dns, mute_servers):
    """No control/timeoutopening: 3 x timeoutremote (1 s here) bounds 8 mute addresses."""
    ips = ["127.0.62.%d" % i for i in range(1, 9)]
    port = mute_servers(ips)
    d = dns([("mute.test", "A", *ips)])
    home.route("example.org:mute.test:%d" % port)
    home.control("timeoutremote", "1\n")
    reports, raw = deliver(home, DNSCACHEIP=d.address(), timeout=60)
    assert reports[-1][1].startswith(b"Sorry, no server could be reached within the 3 seconds of ")


def test_the_deadline_carries_over_a_failed_handshake(home, server, pki):
    """The resumed qmail-remote keeps the deadline the plan started with: a TLS server whose
    handshake stalls leaves no time for the cleartext retry when timeoutopening is 1."""
    s = routed(home, server, pki, 0, tls_handshake=STALL)
    home.control("timeoutopening", "1\n")
    reports, raw = deliver(home, timeout=60)
    assert reports[-1][0] == "Z"
    assert reports[-1][1].startswith(b"Sorry, no server could be reached within the 1 seconds")
    assert b"TLS handshake timed out" in reports[-1][1]


def test_timeoutconnect_0_still_bounds_the_handshake(home, server, pki):
    """A server that says 220 to STARTTLS and ignores the ClientHello: with timeoutconnect
    0 tlsc-io was given -t 0 (no bound) and the delivery hung. Now 0 is 1 s, the
    handshake times out, and strictness 0 goes on in cleartext."""
    s = routed(home, server, pki, 0, tls_handshake=STALL)
    home.control("timeoutconnect", "0\n")
    reports, raw = deliver(home, timeout=60)
    assert reports[-1][0] == "K", raw
    assert b"sent in cleartext: the TLS handshake failed (TLS handshake timed out" in reports[-1][1]


def test_a_huge_certificate_subject_still_reaches_qmail_remote_io(home, server, pki):
    """A subject that escapes to more than 128 KiB made execve(qmail-remote-io) fail (E2BIG)
    and the chain end without a report: SSL_PEER_CERT_SUBJECT is bounded."""
    s = routed(home, server, pki, 0, cert=pki.odd_subject("127.0.0.1", unit="," * 70000))
    reports, raw = deliver(home, timeout=60)
    assert reports[-1][0] == "K" and b"(TLSv1." in reports[-1][1], raw


def test_openssl_conf_from_the_environment_does_not_steer_tls(home, server, pki, tmp_path):
    """qmail-rspawn's OPENSSL_CONF with MaxProtocol TLSv1.1 (the server needs 1.2 or more)
    turned a TLS delivery into cleartext: TLS depends on control files only."""
    conf = tmp_path / "openssl.cnf"
    conf.write_text("openssl_conf = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n"
                    "[sys]\nMaxProtocol = TLSv1.1\nMinProtocol = TLSv1\n")
    s = routed(home, server, pki, 0)
    reports, raw = deliver(home, OPENSSL_CONF=str(conf), timeout=60)
    assert reports[-1][0] == "K" and b"(TLSv1." in reports[-1][1] and b"cleartext" not in reports[-1][1], raw


# --- tlsc-io inside a delivery (-R): a report, never a bare exit code ---

def test_a_usage_error_with_R_is_a_Z_report(tlsc):
    done = subprocess.run([tlsc, "-R", "-t", "x", "--", "prog"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={"PATH": "/usr/bin:/bin"}, timeout=30)
    assert done.returncode == 0 and done.stderr == b""
    assert done.stdout.startswith(b"Ztlsc-io: usage: option -t needs a number") and done.stdout.endswith(b"\n\0")


def test_a_usage_error_by_hand_is_exit_100(tlsc):
    done = subprocess.run([tlsc, "-t", "x", "--", "prog"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={"PATH": "/usr/bin:/bin"}, timeout=30)
    assert done.returncode == 100 and done.stdout == b"" and done.stderr.startswith(b"tlsc-io: usage: ")


def test_prog_that_cannot_run_with_R_is_a_Z_report(tlsc, pki, servers):
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-R", "-k", "mx.test"], ["/nonexistent/qmail-remote-io"])
    assert status == 0 and err == b""
    assert out == b"Ztlsc-io: unable to run /nonexistent/qmail-remote-io: No such file or directory. (#4.3.0)\n\0"


def test_a_failed_handshake_without_continuation_with_R_is_a_Z_report(tlsc, pki, servers):
    cert, key = pki.untrusted("mx.test")
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-R", "-k", "mx.test", "-a", pki.ca_file, "-v"], ["/bin/true"])
    assert status == 0 and out.startswith(b"Ztlsc-io: verify: ") and out.endswith(b"\0")


def long_name(i):
    """A 240-octet host name (four labels) unique to i."""
    return "m%02d%s.%s.%s.%s.test" % (i, "a" * 59, "b" * 62, "c" * 62, "d" * 46)


def test_the_largest_plan_still_reaches_tlsc_io_and_back(home, server, pki, dns):
    """32 MX names of 240 octets with 16 addresses each, TLS wanted: the resume plan
    handed to tlsc-io (and back after a failed handshake) once made argv too long
    ("Unable to run tlsc-io: Argument list too long"). Only the first address listens;
    its certificate is not trusted (strictness 2), every other address refuses."""
    assert len(long_name(0)) == 240
    records = [("big.test", "MX", *["%d %s." % (i, long_name(i)) for i in range(32)])]
    records += [(long_name(i), "A", *["127.1.%d.%d" % (i, j + 1) for j in range(16)]) for i in range(32)]
    d = dns(records)
    try:
        s = server(host="127.1.0.1", port=25, tls_cert=pki.untrusted(long_name(0)))
    except OSError as error:
        pytest.skip("cannot listen on 127.1.0.1:25: %s" % error)
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "2\n")
    home.control("timeoutconnect", "5\n")
    reports, raw = home.remote("big.test", "sender@src.example", "rcpt@big.test", message=MSG,
                               DNSCACHEIP=d.address(), timeout=120)
    (letter, text), = reports
    assert letter == "Z", raw
    assert text.startswith(b"Sorry, no server would take the message over TLS"), raw
    assert b"127.1.0.1: certificate not trusted" in text
