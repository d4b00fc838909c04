"""tls/tacache.py: the DANE-TA anchor cache: its file names, what it takes back (only a
certificate matching its record, read never through a link) and how it writes. Real
certificates from trustme; a real directory (the working directory is a temporary one)."""

import hashlib
import os
import ssl

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from qremote.tls import tacache


@pytest.fixture(scope="module")
def anchor():
    return ssl.PEM_cert_to_DER_cert(trustme.CA(organization_name="tacache tests").cert_pem.bytes().decode())


@pytest.fixture(scope="module")
def other():
    return ssl.PEM_cert_to_DER_cert(trustme.CA(organization_name="another CA").cert_pem.bytes().decode())


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A qmail home: the working directory, with run/qmail-remote/dane-ta in it."""
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "run" / "qmail-remote" / "dane-ta"
    directory.mkdir(parents=True, mode=0o700)
    return directory


def spki(der):
    return x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_name_from_the_record():
    data = bytes(range(32))
    assert tacache.name((2, 0, 1, data)) == b"2-0-1-" + data.hex().encode()
    assert tacache.name((2, 1, 2, b"\xab" * 64)) == b"2-1-2-" + b"ab" * 64
    # matching type 0 holds a whole certificate or key: the name holds its SHA-256
    whole = b"\x30" * 1500
    assert tacache.name((2, 0, 0, whole)) == b"2-0-0-" + hashlib.sha256(whole).hexdigest().encode()


def test_kept_then_found_for_each_matching_record(home, anchor, other):
    records = [(2, 0, 1, hashlib.sha256(anchor).digest()), (2, 1, 1, hashlib.sha256(spki(anchor)).digest()),
               (2, 1, 0, spki(anchor))]
    assert tacache.anchors(records) is None  # nothing kept yet
    tacache.keep(records + [(2, 0, 1, hashlib.sha256(other).digest())], anchor)
    # kept under each record it matches, never under another's; 0600 in the 0700 directory
    assert sorted(os.listdir(home)) == sorted(tacache.name(record).decode() for record in records)
    assert all(os.stat(home / name).st_mode & 0o777 == 0o600 for name in os.listdir(home))
    assert tacache.anchors(records) == [anchor]  # one anchor, once
    assert tacache.anchors(records[:1]) == [anchor]


def test_any_record_without_its_anchor_or_not_usage_2_means_the_cold_path(home, anchor, other):
    record = (2, 0, 1, hashlib.sha256(anchor).digest())
    tacache.keep([record], anchor)
    assert tacache.anchors([record, (2, 0, 1, hashlib.sha256(other).digest())]) is None
    assert tacache.anchors([record, (3, 0, 1, hashlib.sha256(other).digest())]) is None
    assert tacache.anchors([]) is None


def test_a_tampered_or_stale_file_is_ignored(home, anchor, other):
    record = (2, 0, 1, hashlib.sha256(anchor).digest())
    tacache.keep([record], anchor)
    path = home / tacache.name(record).decode()
    path.write_bytes(other)  # another CA's certificate under this record's name
    assert tacache.anchors([record]) is None
    path.write_bytes(anchor[:-1] + bytes([anchor[-1] ^ 1]))  # one bit changed
    assert tacache.anchors([record]) is None
    path.write_bytes(b"")
    assert tacache.anchors([record]) is None
    path.write_bytes(anchor + b"\0" * tacache.MAX_SIZE)  # too big to read
    assert tacache.anchors([record]) is None
    tacache.keep([record], anchor)  # the cold path's success replaces it
    assert tacache.anchors([record]) == [anchor]


def test_a_link_is_never_followed(home, anchor, tmp_path):
    record = (2, 0, 1, hashlib.sha256(anchor).digest())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(anchor)  # a good anchor, but not ours to trust through a link
    name = tacache.name(record).decode()
    os.symlink(elsewhere, home / name)
    assert tacache.anchors([record]) is None
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    os.unlink(home / name)
    os.symlink(victim, home / name)
    tacache.keep([record], anchor)  # replaces the link itself, never writes through it
    assert victim.read_bytes() == b"untouched"
    assert not os.path.islink(home / name) and tacache.anchors([record]) == [anchor]


def test_a_linked_directory_is_no_cache(tmp_path, monkeypatch, anchor):
    monkeypatch.chdir(tmp_path)
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "run" / "qmail-remote").mkdir(parents=True)
    os.symlink(real, tmp_path / "run" / "qmail-remote" / "dane-ta")
    record = (2, 0, 1, hashlib.sha256(anchor).digest())
    tacache.keep([record], anchor)
    assert os.listdir(real) == []


def test_without_the_directory_nothing_is_kept_and_nothing_fails(tmp_path, monkeypatch, anchor):
    monkeypatch.chdir(tmp_path)
    record = (2, 0, 1, hashlib.sha256(anchor).digest())
    tacache.keep([record], anchor)
    assert tacache.anchors([record]) is None
    assert os.listdir(tmp_path) == []


def test_a_failed_write_leaves_the_kept_file_alone(home, anchor, monkeypatch):
    record = (2, 0, 1, hashlib.sha256(anchor).digest())
    tacache.keep([record], anchor)
    kept = os.stat(home / tacache.name(record).decode()).st_ino
    monkeypatch.setattr(tacache.posix, "write", lambda fd, data: len(data) - 1)  # a short write (disk full)
    tacache.keep([record], anchor)
    # no rename happened (the same file), and no temporary file is left behind
    assert os.listdir(home) == [tacache.name(record).decode()]
    assert os.stat(home / tacache.name(record).decode()).st_ino == kept
    assert tacache.anchors([record]) == [anchor]
