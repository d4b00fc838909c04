"""mtasts/cache.py alone: atomic replacement seen by a concurrent reader, the size bound,
planted files, and the lock's bounded wait (the network side is tests/chain/test_mtasts.py)."""

import os
import subprocess
import sys
import time

import pytest

from qremote.mtasts import cache
from qremote.mtasts.policy import parse_policy

POLICY = b"version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n"


@pytest.fixture
def directory(tmp_path, monkeypatch):
    os.makedirs(tmp_path / "run" / "qmail-remote")
    monkeypatch.chdir(tmp_path)
    fd, owner = cache.open_directory()
    yield fd
    os.close(fd)


def entry(policy_id, extra=b""):
    return cache.Entry(parse_policy(POLICY + extra, policy_id, 1000))


def test_a_reader_sees_the_old_or_the_new_entry_never_a_mix(directory, tmp_path):
    small, large = entry("small"), entry("large", b"x: " + b"y" * 60000 + b"\n")
    cache.write(directory, None, "example.com", small)
    reader = subprocess.Popen([sys.executable, "-c", r"""
import os, sys, time
sys.path.insert(0, %r)
from qremote.mtasts import cache
fd, _ = cache.open_directory()
seen, end = set(), time.monotonic() + 2
while time.monotonic() < end:
    e = cache.read(fd, "example.com")
    seen.add(e.policy.id if e is not None else None)
print(" ".join(sorted(map(str, seen))))
""" % os.path.join(os.path.dirname(cache.__file__), "..", "..")], cwd=str(tmp_path), stdout=subprocess.PIPE)
    end = time.monotonic() + 2.2
    while time.monotonic() < end:
        assert cache.write(directory, None, "example.com", large)
        assert cache.write(directory, None, "example.com", small)
    seen = reader.communicate(timeout=30)[0].decode().split()
    assert "None" not in seen and set(seen) <= {"small", "large"}
    assert sorted(os.listdir(directory)) == ["example.com"]  # no temporary left behind


def test_an_entry_over_the_bound_is_not_written(directory):
    huge = cache.Entry(parse_policy(POLICY + b"x: " + b"y" * cache.MAX_ENTRY + b"\n", "x", 1))
    assert not cache.write(directory, None, "example.com", huge)
    assert os.listdir(directory) == []


def test_a_file_over_the_bound_is_not_read(directory):
    with open(os.path.join("run/qmail-remote/mta-sts", "example.com"), "wb") as out:
        out.write(cache.encode(entry("a")) + b"\n" * cache.MAX_ENTRY)
    assert cache.read(directory, "example.com") is None


def test_a_planted_lock_symlink_is_not_followed(directory, tmp_path):
    target = tmp_path / "target"
    os.symlink(str(target), os.path.join("run/qmail-remote/mta-sts", "example.com=lock"))
    assert cache.lock(directory, None, "example.com", time.monotonic() + 0.1) is None
    assert not target.exists()


def test_the_lock_waits_until_the_deadline(directory):
    held = cache.lock(directory, None, "example.com", time.monotonic())
    assert held is not None
    try:
        start = time.monotonic()
        assert cache.lock(directory, None, "example.com", start + 0.3) is None
        assert 0.3 <= time.monotonic() - start < 1.0
    finally:
        os.close(held)
    again = cache.lock(directory, None, "example.com", time.monotonic())
    assert again is not None
    os.close(again)


def test_listing_ignores_locks_temporaries_and_strangers(directory):
    cache.write(directory, None, "example.com", entry("a"))
    for name in ("example.com=lock", "example.com=tmp.1.ab", "UPPER.example", "junk name"):
        open(os.path.join("run/qmail-remote/mta-sts", name), "w").close()
    assert cache.domains(directory) == ["example.com"]
    assert cache.purge(directory, "example.com") and not cache.purge(directory, "example.com")
    assert sorted(os.listdir(directory)) == ["UPPER.example", "example.com=tmp.1.ab", "junk name"]
