"""smtproutes through the installed chain: stock matching, and the cdb cache rebuilt safely
while many deliveries run at once."""

import os
import subprocess

import pytest

from tests.support.chain import decode_reports


def test_most_specific_route_wins(home, server):
    good = server()
    home.route(".example.org:127.0.0.1:1", ".sub.example.org:127.0.0.1:%d" % good.port, ":127.0.0.1:1")
    _, raw = home.remote("mx.sub.example.org", "a@b", "c@mx.sub.example.org")
    assert raw.endswith(b"K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0")


def test_last_duplicate_wins_case_insensitively(home, server):
    good = server()
    home.route("example.org:127.0.0.1:1", "EXAMPLE.ORG:[127.0.0.1]:%d" % good.port)
    _, raw = home.remote("example.org", "a@b", "c@example.org")
    assert raw.endswith(b"accepted message.\nRemote host said: 250 ok queued\n\0")


def test_cdb_is_built_and_follows_edits(home, server):
    first, second = server(), server()
    home.route("example.org:127.0.0.1:%d" % first.port)
    home.remote("example.org", "a@b", "c@example.org")
    cdb = os.path.join(home.path, "run", "qmail-remote", "smtproutes.cdb")
    assert os.path.exists(cdb)
    home.route("example.org:127.0.0.1:%d" % second.port)
    home.remote("example.org", "a@b", "c@example.org")
    assert len(first.sessions) == 1 and len(second.sessions) == 1


def test_corrupt_cdb_is_rebuilt(home, server):
    s = server()
    home.route("example.org:127.0.0.1:%d" % s.port)
    home.remote("example.org", "a@b", "c@example.org")
    cdb = os.path.join(home.path, "run", "qmail-remote", "smtproutes.cdb")
    with open(cdb, "r+b") as f:
        f.truncate(1000)
    _, raw = home.remote("example.org", "a@b", "c@example.org")
    assert raw.endswith(b"accepted message.\nRemote host said: 250 ok queued\n\0")
    assert os.path.getsize(cdb) > 2048


def test_unwritable_run_directory_still_delivers(home, server):
    s = server()
    run = os.path.join(home.path, "run", "qmail-remote")
    os.rmdir(run)
    home.route("example.org:127.0.0.1:%d" % s.port)
    _, raw = home.remote("example.org", "a@b", "c@example.org")
    assert raw.endswith(b"accepted message.\nRemote host said: 250 ok queued\n\0")


def test_concurrent_deliveries_during_a_route_change(home, server):
    """20 deliveries at once right after smtproutes changed: one rebuilds under the lock,
    all see a whole cdb, all go to the new route, no temporary file is left behind."""
    old, new = server(), server()
    home.route("example.org:127.0.0.1:%d" % old.port)
    home.remote("example.org", "a@b", "c@example.org")
    home.route("# moved\n" * 500 + "example.org:127.0.0.1:%d" % new.port, *["d%d.example:[127.0.0.9]:25" % i
                                                                           for i in range(2000)])
    message = home.message_file(b"Subject: x\n\nconcurrent\n")
    procs = []
    for i in range(20):
        with open(message, "rb") as fd0:
            procs.append(subprocess.Popen([os.path.join(home.bindir, "qmail-remote"), "example.org", "a@b",
                                           "c%d@example.org" % i], stdin=fd0, stdout=subprocess.PIPE,
                                          env=home.env()))
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    for out in outputs:
        assert decode_reports(out)[-1][0] == "K", out
    assert len(new.wait_sessions(20)) == 20
    assert len(old.sessions) == 1
    leftovers = [n for n in os.listdir(os.path.join(home.path, "run", "qmail-remote")) if ".tmp" in n]
    assert leftovers == []


def test_a_held_lock_delays_but_never_hangs_a_delivery(home, server):
    # another process holds smtproutes.lock forever (a stuck compile): after routes.LOCK_WAIT
    # the delivery reads the text file itself and delivers
    import fcntl
    smtp = server()
    home.route("example.org:127.0.0.1:%d" % smtp.port)
    run = os.path.join(home.path, "run", "qmail-remote")
    os.makedirs(run, exist_ok=True)
    holder = os.open(os.path.join(run, "smtproutes.lock"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        reports, raw = home.remote("example.org", "a@b", "c@example.org")
    finally:
        os.close(holder)
    assert reports[-1][0] == "K", raw
    assert len(smtp.sessions) == 1


def test_a_copy_with_the_same_size_and_mtime_is_noticed(home, server, tmp_path):
    """cp -p rewrites smtproutes in place (same inode) and gives it the copy's mtime: with
    the same size, only the ctime tells that the routes changed."""
    first, second = server(), server()
    path = home.control("smtproutes", "example.org:127.0.0.1:%05d\n" % first.port)
    then = 1_600_000_000_123_456_789
    os.utime(path, ns=(then, then))
    home.remote("example.org", "a@b", "c@example.org")
    new = tmp_path / "smtproutes.new"
    new.write_text("example.org:127.0.0.1:%05d\n" % second.port)
    os.utime(new, ns=(then, then))
    before = os.stat(path)
    subprocess.run(["cp", "-p", str(new), path], check=True)
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    home.remote("example.org", "a@b", "c@example.org")
    assert len(first.sessions) == 1 and len(second.wait_sessions()) == 1
