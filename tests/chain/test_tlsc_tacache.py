"""tlsc-io's DANE-TA anchor cache (run/qmail-remote/dane-ta, tls/tacache.py), with the
installed tlsc-io, a real TLS server sending its chain, and the working directory as the
qmail home. Which path ran is seen from the imports: tlsc-io runs under -X importtime, and
only the cold path imports cryptography (its X.509 verifier: ~110 ms of CPU)."""

import hashlib
import os
import ssl

import trustme

from tests.chain.test_tlsc_io import prog, report, run, servers, tlsc  # noqa: F401 - fixtures
from tests.chain.test_tlsc_verify import der, failed, with_ca


def cache(home):
    directory = home / "run" / "qmail-remote" / "dane-ta"
    directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    return directory


def interpreter(tlsc):
    """The installed tlsc-io's shebang, as argv words (the interpreter and its -IS)."""
    with open(tlsc) as f:
        return f.readline()[2:].split()


def traced(tlsc, port, options, prog_argv, home, **kw):
    """run() with tlsc-io under -X importtime: (stdout, whether cryptography was imported)."""
    words = interpreter(tlsc)
    out, err, status = run(words[0], port, words[1:] + ["-X", "importtime", tlsc] + options, prog_argv,
                           cwd=str(home), **kw)
    imported = [line.rsplit("|", 1)[-1].strip() for line in err.decode().splitlines()
                if line.startswith("import time:")]
    assert "qremote.programs.tlsc_io" in imported, err  # the trace works
    return out, any(name.split(".")[0] == "cryptography" for name in imported)


def ca_record(pki):
    return "2 0 1 " + hashlib.sha256(der(pki.ca_file)).hexdigest()


def kept_name(pki):
    return "2-0-1-" + hashlib.sha256(der(pki.ca_file)).hexdigest()


def test_cold_keeps_the_anchor_then_warm_uses_it_without_cryptography(tlsc, installed, pki, servers, tmp_path):
    from tests.support.chain import decode_reports

    home = tmp_path / "home"
    directory = cache(home)
    cert, key = pki.server("mx.test")
    message = tmp_path / "message"
    message.write_bytes(b"Subject: x\n\nanchored\n")
    io = os.path.join(installed, "qmail-remote-io")
    for warm in (False, True):
        s = servers(with_ca(pki, cert, tmp_path), key, mode="smtp")
        with open(message, "rb") as fd0:
            out, imported = traced(tlsc, s.port, ["-k", "base.test", "-N", "mx.test", "-D", ca_record(pki)],
                                   [io, "-g", "-h", "tls.client.test", "--", "127.0.0.1", "a@src.test", "b@mx.test"],
                                   home, stdin=fd0)
        (r, _), (k, text) = decode_reports(out)
        assert (r, k) == ("r", "K"), out
        assert b" TLSA validated DANE-TA, cipher " in text.split(b"\n")[0], text
        assert imported is not warm  # cold: cryptography verified; warm: OpenSSL did, in the handshake
        # the anchor, kept under its record's name, 0600
        assert os.listdir(directory) == [kept_name(pki)]
        assert (directory / kept_name(pki)).read_bytes() == der(pki.ca_file)
        assert os.stat(directory / kept_name(pki)).st_mode & 0o777 == 0o600


def test_warm_refuses_a_name_the_certificate_lacks(tlsc, prog, pki, servers, tmp_path):
    home = tmp_path / "home"
    (cache(home) / kept_name(pki)).write_bytes(der(pki.ca_file))
    cert, key = pki.server("mx.test")
    s = servers(with_ca(pki, cert, tmp_path), key, mode="echo")
    out, imported = traced(tlsc, s.port, ["-k", "base.test", "-N", "other.test", "-D", ca_record(pki)],
                           [prog, "pingpong"], home, continuation=[prog, "failed"])
    assert not imported
    assert failed(out) == "dane: name base.test or other.test not in the certificate"
    assert bytes(s.wait_sessions()[0].tls_received) == b""


def test_warm_refuses_an_expired_leaf(tlsc, prog, pki, servers, tmp_path):
    home = tmp_path / "home"
    (cache(home) / kept_name(pki)).write_bytes(der(pki.ca_file))
    cert, key = pki.expired("mx.test")
    s = servers(with_ca(pki, cert, tmp_path), key, mode="echo")
    out, imported = traced(tlsc, s.port, ["-k", "mx.test", "-D", ca_record(pki)],
                           [prog, "pingpong"], home, continuation=[prog, "failed"])
    assert not imported
    assert failed(out) == "dane: DANE-TA chain does not verify: certificate has expired"


def test_warm_refuses_a_leaf_of_another_ca(tlsc, prog, pki, servers, tmp_path):
    """The server sends the anchor the record names, but its leaf is another CA's."""
    home = tmp_path / "home"
    (cache(home) / kept_name(pki)).write_bytes(der(pki.ca_file))
    cert, key = pki.untrusted("mx.test")
    s = servers(with_ca(pki, cert, tmp_path), key, mode="echo")
    out, imported = traced(tlsc, s.port, ["-k", "mx.test", "-D", ca_record(pki)],
                           [prog, "pingpong"], home, continuation=[prog, "failed"])
    assert not imported
    assert failed(out).startswith("dane: DANE-TA chain does not verify: "), failed(out)


def test_warm_with_an_intermediate_as_the_anchor(tlsc, prog, pki, servers, tmp_path):
    """A usage 2 record may name an intermediate: OpenSSL takes it as the anchor (PARTIAL_CHAIN)."""
    home = tmp_path / "home"
    directory = cache(home)
    cert, key = pki.intermediate("mx.test")
    with open(cert) as f:
        pems = f.read().split("-----END CERTIFICATE-----")
    intermediate = ssl.PEM_cert_to_DER_cert(pems[1].strip() + "\n-----END CERTIFICATE-----")
    record = "2 0 1 " + hashlib.sha256(intermediate).hexdigest()
    for warm in (False, True):
        s = servers(cert, key, mode="echo")
        out, imported = traced(tlsc, s.port, ["-k", "mx.test", "-D", record], [prog, "pingpong"], home,
                               continuation=[prog, "failed"])
        assert report(out)["env"]["SSL_PEER_VERIFIED_BY"] == "DANE-TA", out
        assert imported is not warm
        assert os.listdir(directory) == ["2-0-1-" + hashlib.sha256(intermediate).hexdigest()]


def test_a_tampered_file_is_ignored_and_replaced(tlsc, prog, pki, servers, tmp_path):
    home = tmp_path / "home"
    kept = cache(home) / kept_name(pki)
    # a CA the record does not name, under its record's name (an attacker's, or a stale file)
    intruder = trustme.CA(organization_name="intruder")
    kept.write_bytes(ssl.PEM_cert_to_DER_cert(intruder.cert_pem.bytes().decode()))
    cert, key = pki.server("mx.test")
    s = servers(with_ca(pki, cert, tmp_path), key, mode="echo")
    out, imported = traced(tlsc, s.port, ["-k", "mx.test", "-D", ca_record(pki)], [prog, "pingpong"], home,
                           continuation=[prog, "failed"])
    assert imported  # the cold path
    assert report(out)["env"]["SSL_PEER_VERIFIED_BY"] == "DANE-TA"
    assert kept.read_bytes() == der(pki.ca_file)
    # and a server of the intruder's CA is refused, whatever the file said
    kept.write_bytes(ssl.PEM_cert_to_DER_cert(intruder.cert_pem.bytes().decode()))
    leaf = intruder.issue_cert("mx.test")
    chainfile, keyfile = tmp_path / "intruder.pem", tmp_path / "intruder.key"
    chainfile.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems) + intruder.cert_pem.bytes())
    leaf.private_key_pem.write_to_path(str(keyfile))
    s = servers(str(chainfile), str(keyfile), mode="echo")
    out, imported = traced(tlsc, s.port, ["-k", "mx.test", "-D", ca_record(pki)], [prog, "pingpong"], home,
                           continuation=[prog, "failed"])
    assert failed(out) == "dane: no TLSA record matched the certificate chain"


def test_a_mixed_set_or_a_missing_anchor_takes_the_cold_path(tlsc, prog, pki, servers, tmp_path):
    home = tmp_path / "home"
    (cache(home) / kept_name(pki)).write_bytes(der(pki.ca_file))
    cert, key = pki.server("mx.test")
    for other in ("3 1 1 " + "ab" * 32, "2 0 1 " + "cd" * 32):
        s = servers(with_ca(pki, cert, tmp_path), key, mode="echo")
        out, imported = traced(tlsc, s.port, ["-k", "mx.test", "-D", ca_record(pki), "-D", other],
                               [prog, "pingpong"], home, continuation=[prog, "failed"])
        assert imported, other
        assert report(out)["env"]["SSL_PEER_VERIFIED_BY"] == "DANE-TA"


def test_without_the_directory_no_cache(tlsc, prog, pki, servers, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    cert, key = pki.server("mx.test")
    for _ in range(2):
        s = servers(with_ca(pki, cert, tmp_path), key, mode="echo")
        out, imported = traced(tlsc, s.port, ["-k", "mx.test", "-D", ca_record(pki)], [prog, "pingpong"], home,
                               continuation=[prog, "failed"])
        assert imported and report(out)["env"]["SSL_PEER_VERIFIED_BY"] == "DANE-TA"
    assert os.listdir(home) == []
