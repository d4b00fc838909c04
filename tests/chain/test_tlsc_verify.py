"""tlsc-io's per-destination checks with real TLS (issue 11): DANE records (-D), pins (-f),
depth (-d), name checks (-m, -N), ciphers (-C), anonymous suites (-n), and a client key
whose password tlsc-io reads from control/domaincerts (-p). Loopback servers, real
processes; the helpers are test_tlsc_io's."""

import datetime
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.chain.test_tlsc_io import ONTO_6_AND_7, prog, report, run, servers, tlsc  # noqa: F401 - fixtures
from tests.support.tlsserver import connect


def der(certfile):
    with open(certfile) as f:
        pem = f.read()
    end = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(pem[:end])


def spki_sha256(der_bytes):
    key = x509.load_der_x509_certificate(der_bytes).public_key()
    return hashlib.sha256(key.public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def with_ca(pki, certfile, tmp_path):
    """A chain file the server sends whole: its leaf, then the CA (DANE-TA needs the anchor sent)."""
    path = tmp_path / ("%s.chain" % os.path.basename(certfile))
    with open(certfile) as leaf, open(pki.ca_file) as ca:
        path.write_text(leaf.read() + ca.read())
    return str(path)


def failed(out):
    seen = report(out)
    assert seen["mode"] == "failed", seen
    return seen["env"]["TLSC_FAILURE"]


# --- DANE ---

def test_dane_ee_matches_any_certificate_and_says_so(tlsc, prog, pki, servers):
    """DANE-EE 3 1 1: an untrusted certificate for another name is fine when its key matches."""
    cert, key = pki.untrusted("other.test")
    s = servers(cert, key, mode="echo")
    record = "3 1 1 " + spki_sha256(der(cert))
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-D", "3 1 1 " + "00" * 32, "-D", record],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    seen = report(out)
    assert seen["mode"] == "pingpong" and seen["got"] == "ping"
    assert seen["env"]["SSL_PEER_VERIFIED_BY"] == "DANE-EE" and seen["env"]["SSL_PEER_VERIFIED"] == "1"
    assert s.wait_sessions()[0].sni == "mx.test"


def test_dane_mismatch_nothing_reaches_prog(tlsc, prog, pki, servers):
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-D", "3 1 1 " + "ab" * 32, "-D", "2 0 1 " + "cd" * 32],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    assert failed(out) == "dane: no TLSA record matched the certificate chain"
    assert report(out)["fds"] == [0, 1, 2]
    session, = s.wait_sessions()
    assert bytes(session.tls_received) == b""


def test_dane_ta_chain_and_name(tlsc, prog, pki, servers, tmp_path):
    cert, key = pki.server("mx.test")
    s = servers(with_ca(pki, cert, tmp_path), key, mode="echo")
    anchor = "2 0 1 " + hashlib.sha256(der(pki.ca_file)).hexdigest()
    out, err, status = run(tlsc, s.port, ["-k", "base.test", "-N", "mx.test", "-D", anchor],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    assert report(out)["env"]["SSL_PEER_VERIFIED_BY"] == "DANE-TA"
    # the same anchor, a name the certificate does not carry
    s = servers(with_ca(pki, cert, tmp_path), key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "base.test", "-N", "other.test", "-D", anchor],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    assert failed(out) == "dane: name base.test or other.test not in the certificate"


def test_dane_ta_expired_leaf_fails(tlsc, prog, pki, servers, tmp_path):
    cert, key = pki.expired("mx.test")
    s = servers(with_ca(pki, cert, tmp_path), key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-D", "2 1 1 " + spki_sha256(der(pki.ca_file))],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    assert failed(out).startswith("dane: DANE-TA chain does not verify: ")


# --- pins ---

@pytest.mark.parametrize("digest", ["sha1", "sha224", "sha256", "sha512"])
def test_pin_each_digest_length(tlsc, prog, pki, servers, digest):
    cert, key = pki.untrusted("other.test")
    s = servers(cert, key, mode="echo")
    pin = hashlib.new(digest, der(cert)).hexdigest().upper()
    pin = ":".join(pin[i:i + 2] for i in range(0, len(pin), 2))  # as s/qmail's admins write them
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-f", pin], [prog, "pingpong"],
                           continuation=[prog, "failed"])
    seen = report(out)
    assert seen["got"] == "ping" and seen["env"]["SSL_PEER_VERIFIED_BY"] == "pin"


def test_pin_mismatch(tlsc, prog, pki, servers):
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-f", "ab" * 32], [prog, "pingpong"],
                           continuation=[prog, "failed"])
    why = failed(out)
    assert why.startswith("pin: ") and why.endswith("does not match provided fingerprint: " + "ab" * 32)
    assert bytes(s.wait_sessions()[0].tls_received) == b""


# --- depth, name checks ---

def test_depth(tlsc, prog, servers, tmp_path):
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("mx.test")
    chain, key, anchors = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))  # leaf, intermediate
    leaf.private_key_pem.write_to_path(str(key))
    root.cert_pem.write_to_path(str(anchors))
    s = servers(str(chain), str(key), mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", str(anchors), "-m", "ca", "-d", "0"],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    assert failed(out) == "depth: the verified chain has 1 intermediate certificates, more than -d 0 allows"
    s = servers(str(chain), str(key), mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-a", str(anchors), "-m", "ca", "-d", "1"],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    assert report(out)["env"]["SSL_PEER_VERIFIED_BY"] == "ca"


def test_exact_name_refuses_a_wildcard_which_dn_star_takes(tlsc, prog, pki, servers):
    cert, key = pki.server("*.example.test")
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "mx.example.test", "-a", pki.ca_file, "-m", "dn"],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    assert failed(out).startswith("name: Hostname mismatch")
    for options in (["-m", "dn*"], ["-m", "dn*", "-N", "other.test"]):
        s = servers(cert, key, mode="echo")
        out, err, status = run(tlsc, s.port, ["-k", "mx.example.test", "-a", pki.ca_file] + options,
                               [prog, "pingpong"], continuation=[prog, "failed"])
        assert report(out)["env"]["SSL_PEER_VERIFIED_BY"] == "ca+dn*", options


def test_other_names(tlsc, prog, pki, servers):
    """-N: the certificate may be for another reference name (the MX name, the TLSA base)."""
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "base.test", "-N", "mx.test", "-a", pki.ca_file, "-m", "dn"],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    assert report(out)["env"]["SSL_PEER_VERIFIED_BY"] == "ca+dn"
    assert s.wait_sessions()[0].sni == "base.test"
    s = servers(cert, key, mode="echo")
    out, err, status = run(tlsc, s.port, ["-k", "base.test", "-N", "x.test", "-a", pki.ca_file, "-m", "dn"],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    assert failed(out) == "name: the certificate is not valid for base.test or x.test"


# --- ciphers, anonymous suites ---

def test_cipher_the_server_lacks(tlsc, prog, pki, servers):
    """TLS 1.2 with an ECDSA certificate: an RSA-only cipher list has nothing in common."""
    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="echo", max_version="TLSv1.2")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-C", "ECDHE-RSA-AES256-GCM-SHA384"],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    assert failed(out).startswith("handshake: ")
    s = servers(cert, key, mode="echo", max_version="TLSv1.2")
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-C", "ECDHE-ECDSA-AES256-GCM-SHA384"],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    assert report(out)["env"]["SSL_CIPHER"] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    out, err, status = run(tlsc, s.port, ["-k", "mx.test", "-C", "NO-SUCH-CIPHER"],
                           [prog, "pingpong"], continuation=[prog, "failed"])
    assert failed(out).startswith("local: unable to use the cipher list NO-SUCH-CIPHER")


def _anonymous_server():
    """openssl s_server with no certificate, anonymous TLS 1.2 suites only, for one connection:
    (process, port) once it accepts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["openssl", "s_server", "-nocert", "-cipher", "aNULL@SECLEVEL=0", "-tls1_2",
                               "-accept", "127.0.0.1:%d" % port, "-naccept", "1"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line or line.startswith(b"ACCEPT"):
            break
    return server, port


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
@pytest.mark.parametrize("allowed", [True, False])
def test_anonymous_suites_against_openssl_s_server(tlsc, prog, allowed):
    server, port = _anonymous_server()
    try:
        out, err, status = run(tlsc, port, ["-n"] if allowed else [], [prog, "write-and-exit"],
                               continuation=[prog, "failed"])
    finally:
        server.kill()
        server.wait()
    if not allowed:
        assert failed(out).startswith("handshake: ")
        return
    seen = report(out)
    assert seen["mode"] == "write-and-exit", seen
    assert seen["env"]["SSL_CIPHER"].startswith(("ADH-", "AECDH-")), seen["env"]
    assert "SSL_PEER_CERT_HASH" not in seen["env"] and seen["env"]["SSL_PEER_VERIFIED"] == "0"


# --- a client key whose password is in control/domaincerts ---

SCAN_PROC = r'''
import json, os, sys
found = {}
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        with open("/proc/%s/environ" % pid, "rb") as f:
            environ = f.read()
        if b"QREMOTE_TEST_MARK=" + sys.argv[2].encode() not in environ:
            continue
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            cmdline = f.read()
    except OSError:
        continue
    found[pid] = [cmdline.hex(), environ.hex()]
with open(sys.argv[1], "w") as out:
    json.dump(found, out)
os.write(7, b"ping")
os.close(7)
os.write(1, json.dumps({"mode": "scanned", "env": {k: v for k, v in os.environ.items() if k.startswith("SSL_")},
                        "fds": [], "got": ""}).encode() + b"\n")
'''


def _encrypted_client(pki, tmp_path, password):
    cert, key = pki.client("relay.client.test")
    with open(key, "rb") as f:
        private = serialization.load_pem_private_key(f.read(), None)
    encrypted = tmp_path / "client-encrypted.key"
    encrypted.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.BestAvailableEncryption(password)))
    return cert, str(encrypted)


def _domaincerts(tmp_path, cert, key, password):
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    lines = [b"# client certificates", b"other.test:/nowhere.pem|/nowhere.key|",
             b"src.test:%s|%s|%s" % (cert.encode(), key.encode(), password)]
    (home / "control" / "domaincerts").write_bytes(b"\n".join(lines) + b"\n")
    secretless = b"src.test:%s|%s|" % (cert.encode(), key.encode())
    return str(home), "domaincerts:3:" + secretless.hex()


def test_encrypted_key_password_from_domaincerts(tlsc, prog, pki, servers, tmp_path):
    password = b"s3cret-Pa55word"
    cert, key = _encrypted_client(pki, tmp_path, password)
    home, reference = _domaincerts(tmp_path, cert, key, password)
    scan = tmp_path / "scan"
    scan.write_text("#!%s\n%s" % (open(prog).readline()[2:].strip(), SCAN_PROC))
    scan.chmod(0o755)
    found = tmp_path / "found.json"
    scert, skey = pki.server("mx.test")
    s = servers(scert, skey, mode="echo", client_ca=pki.ca_file)
    mark = "m%d" % os.getpid()
    sock = connect(s.port)
    try:
        argv = [sys.executable, "-I", "-S", "-c", ONTO_6_AND_7, str(sock.fileno()), tlsc, "-k", "mx.test",
                "-a", pki.ca_file, "-v", "-c", cert, "-y", key, "-p", reference, "-F", "2", "--",
                prog, "failed", str(scan), str(found), mark]
        done = subprocess.run(argv, pass_fds=(sock.fileno(),), cwd=home, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "QREMOTE_TEST_MARK": mark})
    finally:
        sock.close()
    assert report(done.stdout)["mode"] == "scanned", done
    session, = s.wait_sessions()
    assert session.client_subject is not None and session.error is None
    assert bytes(session.tls_received) == b"ping"
    seen = json.loads(found.read_text())
    assert len(seen) >= 2  # PROG (tlsc-io's pid) and the relay
    for pid, (cmdline, environ) in seen.items():
        assert password not in bytes.fromhex(cmdline) and password not in bytes.fromhex(environ), pid
        assert b"-p\0domaincerts:3:" in bytes.fromhex(cmdline) or b"scan" in bytes.fromhex(cmdline)


@pytest.mark.parametrize("case", ["wrong password", "line changed", "no password"])
def test_domaincerts_password_failures_are_local(tlsc, prog, pki, servers, tmp_path, case):
    password = b"right"
    cert, key = _encrypted_client(pki, tmp_path, password)
    home, reference = _domaincerts(tmp_path, cert, key, b"wrong" if case == "wrong password" else password)
    options = ["-k", "mx.test", "-a", pki.ca_file, "-c", cert, "-y", key]
    if case == "line changed":
        reference = reference[:-2] + "00"
    if case != "no password":
        options += ["-p", reference]
    scert, skey = pki.server("mx.test")
    s = servers(scert, skey, mode="echo", client_ca=pki.ca_file)
    sock = connect(s.port)
    try:
        argv = [sys.executable, "-I", "-S", "-c", ONTO_6_AND_7, str(sock.fileno()), tlsc] + options + [
            "-F", "2", "--", prog, "failed", prog, "pingpong"]
        done = subprocess.run(argv, pass_fds=(sock.fileno(),), cwd=home, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    finally:
        sock.close()
    why = failed(done.stdout)
    assert why.startswith("local: "), why
    if case == "line changed":
        assert "control/domaincerts line 3: the line changed" in why
    else:
        assert os.path.basename(key) in why


# --- what qmail-remote-io says in the K ---

@pytest.mark.parametrize("options,words", [
    (lambda cert, ca: ["-D", "3 1 1 " + spki_sha256(der(cert))], b"TLSA validated DANE-EE"),
    (lambda cert, ca: ["-f", hashlib.sha256(der(cert)).hexdigest()], b"CERT pinning"),
    (lambda cert, ca: ["-a", ca, "-m", "dn"], b"verified CA+DN"),
    (lambda cert, ca: ["-a", ca, "-v"], b"verified"),
])
def test_k_report_names_the_verification(tlsc, installed, pki, servers, tmp_path, options, words):
    from tests.support.chain import decode_reports

    cert, key = pki.server("mx.test")
    s = servers(cert, key, mode="smtp")
    path = tmp_path / "message"
    path.write_bytes(b"Subject: x\n\nverified how\n")
    io = os.path.join(installed, "qmail-remote-io")
    with open(path, "rb") as fd0:
        out, err, status = run(tlsc, s.port, ["-k", "mx.test"] + options(cert, pki.ca_file),
                               [io, "-g", "-h", "tls.client.test", "--", "127.0.0.1", "a@src.test", "b@mx.test"],
                               stdin=fd0)
    (r, _), (k, text) = decode_reports(out)
    assert (r, k) == ("r", "K"), out
    first = text.split(b"\n")[0]
    assert first.startswith(b"127.0.0.1 accepted message. (TLSv1.3 " + words + b", cipher "), first
