"""scramcache.py: SCRAM's keys kept in run/qmail-remote/scram, RFC 7677's exchange with a cold
and a warm cache, damaged or planted files ignored and replaced, and no OpenSSL when warm."""

import binascii
import os
import stat
import subprocess
import sys

import pytest

from qremote import scramcache
from qremote.smtp import auth

NONCE = b"rOprNGfwEbeRWgbNEkqO"
FIRST = NONCE + b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SERVER_FIRST = b"r=" + FIRST + b",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
PROOF = b"c=biws,r=" + FIRST + b",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
SALT = binascii.a2b_base64(b"W22ZaJ0SNY7soEsUEjb6gQ==")
CACHE = "run/qmail-remote/scram"


def b64(data):
    return binascii.b2a_base64(data, newline=False)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A qmail home as the working directory (qmail-remote-io's, once credentials are read)."""
    os.makedirs(tmp_path / "run" / "qmail-remote")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def rfc7677_exchange():
    """RFC 7677's example through scramcache.keys; fails unless every message is the RFC's."""
    m = auth.ScramSHA256(b"user", b"pencil", nonce=NONCE, keys=scramcache.keys)
    assert binascii.a2b_base64(m.step(b64(SERVER_FIRST))) == PROOF
    m.step(b64(SERVER_FINAL))
    assert m.finished()


def entries():
    return sorted(os.listdir(CACHE))


def the_entry():
    names = entries()
    assert len(names) == 1, names
    return os.path.join(CACHE, names[0])


def test_cold_then_warm_both_give_rfc7677s_exchange(home, monkeypatch):
    rfc7677_exchange()
    path = the_entry()
    assert stat.S_IMODE(os.stat(CACHE).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert os.path.getsize(path) == scramcache.SIZE
    derived = []
    monkeypatch.setattr(scramcache, "derived_keys", lambda *args: derived.append(args))
    rfc7677_exchange()  # warm: no derivation (it would return None and fail)
    assert derived == []
    assert entries() == [os.path.basename(path)]


def test_the_name_depends_on_every_field(home):
    for user, secret, salt, count in ((b"user", b"pencil", SALT, 4096), (b"user", b"pencil", SALT, 4097),
                                      (b"user", b"pencil", SALT + b"x", 4096), (b"user", b"pencil2", SALT, 4096),
                                      (b"user2", b"pencil", SALT, 4096), (b"use", b"rpencil", SALT, 4096)):
        assert scramcache.keys(user, secret, salt, count) == auth.derived_keys(user, secret, salt, count)
    assert len(entries()) == 6
    assert all(b"pencil" not in open(os.path.join(CACHE, name), "rb").read() for name in entries())


def damage_short(path):
    with open(path, "r+b") as f:
        f.truncate(32)


def damage_flip(path):
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        data[3] ^= 1
        f.seek(0)
        f.write(data)


def damage_long(path):
    with open(path, "ab") as f:
        f.write(b"\0")


def damage_zeros(path):
    with open(path, "wb") as f:
        f.write(bytes(scramcache.SIZE))


def damage_symlink(path):
    """A link to a file holding good keys for the name: still refused (O_NOFOLLOW)."""
    os.rename(path, path + ".real")
    os.symlink(os.path.basename(path) + ".real", path)


def damage_directory(path):
    os.unlink(path)
    os.mkdir(path)


@pytest.mark.parametrize("damage", [damage_short, damage_flip, damage_long, damage_zeros, damage_symlink])
def test_a_damaged_or_planted_file_is_ignored_and_replaced(home, monkeypatch, damage):
    rfc7677_exchange()
    path = the_entry()
    good = open(path, "rb").read()
    damage(path)
    derived = []
    real = scramcache.derived_keys
    monkeypatch.setattr(scramcache, "derived_keys", lambda *args: derived.append(args) or real(*args))
    rfc7677_exchange()
    assert len(derived) == 1  # derived again, not taken from the file
    assert not os.path.islink(path) and stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert open(path, "rb").read() == good
    assert not [name for name in entries() if name.startswith("tmp.")]


def test_a_directory_in_the_way_means_no_cache(home):
    rfc7677_exchange()
    damage_directory(the_entry())
    rfc7677_exchange()  # the rename fails: the exchange goes on, the temporary file is gone
    assert not [name for name in entries() if name.startswith("tmp.")]


@pytest.mark.parametrize("setup", ["no run directory", "cache is a symlink", "cache is a file"])
def test_no_usable_directory_means_no_cache(tmp_path, monkeypatch, setup):
    monkeypatch.chdir(tmp_path)
    if setup != "no run directory":
        os.makedirs("run/qmail-remote")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        if setup == "cache is a symlink":
            os.symlink(str(elsewhere), CACHE)
        else:
            open(CACHE, "w").close()
        rfc7677_exchange()
        assert os.listdir(elsewhere) == []
    else:
        rfc7677_exchange()
        assert not os.path.exists("run")


def test_an_open_directory_is_made_private(home):
    os.mkdir(CACHE, 0o755)
    os.chmod(CACHE, 0o755)
    rfc7677_exchange()
    assert stat.S_IMODE(os.stat(CACHE).st_mode) == 0o700


WARM = r'''
import binascii, sys
sys.path.insert(0, %(lib)r)
from qremote import scramcache
from qremote.smtp import auth
m = auth.ScramSHA256(b"user", b"pencil", nonce=%(nonce)r, keys=scramcache.keys)
assert binascii.a2b_base64(m.step(binascii.b2a_base64(%(first)r, newline=False))) == %(proof)r
m.step(binascii.b2a_base64(%(final)r, newline=False))
assert m.finished()
print(" ".join(sorted(sys.modules)))
'''


def exchange_in_a_fresh_interpreter(home):
    from tests.conftest import TOP
    code = WARM % {"lib": os.path.join(TOP, "lib"), "nonce": NONCE, "first": SERVER_FIRST, "proof": PROOF,
                   "final": SERVER_FINAL}
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=str(home), capture_output=True,
                          text=True, check=True)
    return set(done.stdout.split())


def test_warm_exchange_loads_no_openssl(home):
    cold = exchange_in_a_fresh_interpreter(home)
    assert "_hashlib" in cold  # PBKDF2: the check below would see it
    warm = exchange_in_a_fresh_interpreter(home)
    assert not {"_hashlib", "hashlib", "hmac", "os"} & warm, sorted(warm)
