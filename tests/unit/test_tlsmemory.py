"""The TLS downgrade memory's files (lib/qremote/tlsmemory.py), in a scratch qmail home."""

import os
import time

import pytest

from qremote import tlsmemory

DAY = 86400
NOW = 1796640000  # 2026-12-07 (UTC)


@pytest.fixture
def qmailhome(tmp_path, monkeypatch):
    os.makedirs(tmp_path / "run" / "qmail-remote")
    os.makedirs(tmp_path / "control")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def memory_dir(home):
    return home / "run" / "qmail-remote" / "tlsmemory"


def test_recorded_host_is_remembered_within_the_days(qmailhome):
    tlsmemory.record(b"MX.Example.ORG.", True, NOW)
    assert (memory_dir(qmailhome) / "mx.example.org").read_bytes() == b"verified %d\n" % NOW
    assert oct(os.stat(memory_dir(qmailhome)).st_mode & 0o777) == "0o700"
    assert tlsmemory.remembered("mx.example.org", NOW + 5 * DAY, 30) == ("verified", "2026-12-07")
    assert tlsmemory.remembered(b"mx.example.org.", NOW, 30) == ("verified", "2026-12-07")
    assert tlsmemory.remembered("mx.example.org", NOW + 31 * DAY, 30) is None  # expired
    assert tlsmemory.remembered("mx.example.org", NOW, 0) is None               # off
    assert tlsmemory.remembered("other.example.org", NOW, 30) is None


def test_level_changes_and_dates_are_rewritten_at_most_daily(qmailhome):
    path = memory_dir(qmailhome) / "mx.example.org"
    tlsmemory.record("mx.example.org", True, NOW)
    tlsmemory.record("mx.example.org", True, NOW + 3600)  # same level, same day: no write
    assert path.read_bytes() == b"verified %d\n" % NOW
    tlsmemory.record("mx.example.org", False, NOW + 7200)  # the level changed
    assert path.read_bytes() == b"encrypted %d\n" % (NOW + 7200)
    tlsmemory.record("mx.example.org", False, NOW + 7200 + DAY)
    assert path.read_bytes() == b"encrypted %d\n" % (NOW + 7200 + DAY)
    assert [n for n in os.listdir(memory_dir(qmailhome))] == ["mx.example.org"]  # no temporary left


@pytest.mark.parametrize("name", ["127.0.0.1", "", "a/b", "..", "x..y", ".lead", "bad_name", "a" * 254, "é.example"])
def test_odd_names_are_never_recorded(qmailhome, name):
    tlsmemory.record(name, True, NOW)
    assert not memory_dir(qmailhome).exists() or os.listdir(memory_dir(qmailhome)) == []


def test_links_and_damaged_files_are_not_memory(qmailhome, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "target").write_bytes(b"verified %d\n" % NOW)
    tlsmemory.record("a.example", True, NOW)
    os.symlink(elsewhere / "target", memory_dir(qmailhome) / "link.example")
    (memory_dir(qmailhome) / "damaged.example").write_bytes(b"verified soon\n")
    (memory_dir(qmailhome) / "long.example").write_bytes(b"verified %d\n" % NOW + b" " * 100)
    os.mkfifo(memory_dir(qmailhome) / "fifo.example")
    for name in ("link.example", "damaged.example", "long.example", "fifo.example"):
        assert tlsmemory.remembered(name, NOW, 30) is None, name
    fd = tlsmemory.open_directory()
    try:
        assert [e[0] for e in tlsmemory.entries(fd)] == [b"a.example"]
    finally:
        os.close(fd)
    tlsmemory.record("link.example", False, NOW)  # replaces the link itself, never writes through it
    assert (elsewhere / "target").read_bytes() == b"verified %d\n" % NOW
    assert tlsmemory.remembered("link.example", NOW, 30) == ("encrypted", "2026-12-07")


def test_a_linked_directory_is_no_memory(qmailhome, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    os.symlink(elsewhere, memory_dir(qmailhome))
    tlsmemory.record("a.example", True, NOW)
    assert os.listdir(elsewhere) == []
    assert tlsmemory.remembered("a.example", NOW, 30) is None


def test_bounded_number_of_hosts(qmailhome, monkeypatch):
    monkeypatch.setattr(tlsmemory, "MAX_ENTRIES", 3)
    for i in range(5):
        tlsmemory.record("h%d.example" % i, True, NOW)
    assert sorted(os.listdir(memory_dir(qmailhome))) == ["h0.example", "h1.example", "h2.example"]
    tlsmemory.record("h1.example", False, NOW)  # a known host is still updated
    assert tlsmemory.remembered("h1.example", NOW, 1) == ("encrypted", "2026-12-07")


@pytest.mark.parametrize("content,days", [(None, 0), (b"", 0), (b"30\n", 30), (b"thirty\n", 0), (b" 7 \r\n", 7)])
def test_configured_days(qmailhome, content, days):
    if content is not None:
        (qmailhome / "control" / "tlsmemory").write_bytes(content)
    assert tlsmemory.configured_days() == days


def test_after_delivery_needs_the_control_file_and_a_name(qmailhome):
    env = {b"SSL_PROTOCOL": b"TLSv1.3", b"SSL_TLS_SNI_SERVERNAME": b"mx.example.org", b"SSL_PEER_VERIFIED": b"0"}
    tlsmemory.after_delivery(env)
    assert not memory_dir(qmailhome).exists()  # off by default
    (qmailhome / "control" / "tlsmemory").write_bytes(b"10\n")
    tlsmemory.after_delivery({b"SSL_PROTOCOL": b"TLSv1.3", b"SSL_PEER_VERIFIED": b"1"})  # an address: no name
    assert not memory_dir(qmailhome).exists()
    tlsmemory.after_delivery(env)
    assert tlsmemory.remembered("mx.example.org", int(time.time()) + 9 * DAY, 10)[0] == "encrypted"


def test_reason_names_the_memory(qmailhome):
    tlsmemory.record("mx.example.org", True, NOW)
    found = tlsmemory.remembered(b"mx.example.org.", NOW, 30)
    assert tlsmemory.reason(b"mx.example.org.", found) == "mx.example.org did verified TLS on 2026-12-07 (control/tlsmemory)"
