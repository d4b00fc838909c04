"""tcpto: the record codec and rules (pure, explicit now and pid), then Backoff on real files.

Records are built by hand with struct in stock's layout, never with the module's own
encoder, so a layout slip cannot hide behind a matching decoder.
"""

import fcntl
import os
import socket
import struct

import pytest
from hypothesis import given, settings, strategies as st

from qremote import tcpto
from qremote.programs import qmail_tcpto6
from qremote.tcpto import IPV4, IPV6

NOW = 1_700_000_000
V4 = socket.inet_pton(socket.AF_INET, "127.0.0.1")
V4B = socket.inet_pton(socket.AF_INET, "192.0.2.7")
V6 = socket.inet_pton(socket.AF_INET6, "2001:db8::25")
V6B = socket.inet_pton(socket.AF_INET6, "::1")
PID0 = 32   # pid & 31 == 0: window 3840 s
PID31 = 31  # window 5824 s


def rec4(ip, count, when, pad1=b"\0\0\0", pad2=b"\0\0\0\0"):
    """A stock tcpto record: ip, count, 3 unused, LE u32 time, 4 unused."""
    return struct.pack("<4sB3sI4s", ip, count, pad1, when, pad2)


def rec6(ip, count, when, pad1=b"\0\0\0", pad2=b"\0" * 8):
    """A tcpto6 record: 16-byte ip, count, 3 unused, LE u32 time, 8 unused."""
    return struct.pack("<16sB3sI8s", ip, count, pad1, when, pad2)


def table4(*records, size=1024):
    data = b"".join(records)
    return data + bytes(size - len(data))


def table6(*records, size=2048):
    data = b"".join(records)
    return data + bytes(size - len(data))


def apply(table, change):
    if change is None:
        return table
    offset, record = change
    return table[:offset] + record + table[offset + len(record):]


# --- layout ---

def test_stock_sizes():
    assert (IPV4.record_size, IPV4.table_size) == (16, 1024)
    assert (IPV6.record_size, IPV6.table_size) == (32, 2048)


def test_v4_encode_is_stock_bytes_and_keeps_unused_bytes():
    old = rec4(b"\1\2\3\4", 7, 99, b"abc", b"wxyz")
    assert tcpto.encode(IPV4, old, V4, 3, 0x01020304) == b"\x7f\0\0\x01\x03abc\x04\x03\x02\x01wxyz"
    assert tcpto.encode(IPV4, old, V4, 3, 0x01020304) == rec4(V4, 3, 0x01020304, b"abc", b"wxyz")


def test_v4_fields_read_stock_bytes():
    table = table4(rec4(V4B, 1, 5), rec4(V4, 9, 0xFEDCBA98, b"\xff" * 3, b"\xff" * 4))
    assert tcpto.fields(IPV4, table, 1) == (V4, 9, 0xFEDCBA98)
    assert tcpto.fields(IPV4, table, 0) == (V4B, 1, 5)


def test_first_timeout_in_empty_stock_file_is_the_observed_record():
    # stock observed: 7f 00 00 01 01 00 00 00 <le32 now> 00 00 00 00 at offset 0
    change = tcpto.update(IPV4, bytes(1024), V4, True, NOW)
    assert change == (0, bytes.fromhex("7f00000101000000") + struct.pack("<I", NOW) + bytes(4))


def test_v6_layout():
    old = rec6(V6B, 4, 1, b"pqr", b"01234567")
    new = tcpto.encode(IPV6, old, V6, 2, 0x0A0B0C0D)
    assert new == V6 + b"\x02pqr\x0d\x0c\x0b\x0a01234567"
    assert len(new) == 32
    table = table6(rec6(V6B, 1, 3), new)
    assert tcpto.fields(IPV6, table, 1) == (V6, 2, 0x0A0B0C0D)
    assert tcpto.update(IPV6, bytes(2048), V6, True, NOW) == (0, rec6(V6, 1, NOW))


def test_time_is_stored_modulo_2_32():
    assert tcpto.encode(IPV4, bytes(16), V4, 1, (1 << 32) + 5) == rec4(V4, 1, 5)


# --- rule 1: the check ---

def test_window_depends_on_pid_low_bits():
    assert tcpto.window(PID0) == 3840
    assert tcpto.window(PID31) == 5824
    assert tcpto.window(12345) == (60 + (12345 & 31)) * 64


def test_check_unknown_address():
    assert tcpto.check(IPV4, table4(rec4(V4B, 5, NOW)), V4, NOW, PID0) == (False, False)


@pytest.mark.parametrize("count,age,skip", [
    (0, 0, False), (1, 0, False), (2, 0, True), (10, 0, True), (2, 3839, True),
    (2, 3840, False), (5, 100000, False), (2, -50, True),  # -50: a time in the future skips
])
def test_check_rule(count, age, skip):
    table = table4(rec4(V4B, 3, NOW), rec4(V4, count, NOW - age))
    assert tcpto.check(IPV4, table, V4, NOW, PID0) == (skip, True)


def test_check_window_follows_pid():
    table = table4(rec4(V4, 2, NOW - 4000))
    assert tcpto.check(IPV4, table, V4, NOW, PID0) == (False, True)
    assert tcpto.check(IPV4, table, V4, NOW, PID31) == (True, True)


def test_check_first_record_decides():
    table = table4(rec4(V4, 0, NOW), rec4(V4, 5, NOW))
    assert tcpto.check(IPV4, table, V4, NOW, PID0) == (False, True)


def test_check_v6():
    table = table6(rec6(V6B, 1, NOW), rec6(V6, 2, NOW - 10))
    assert tcpto.check(IPV6, table, V6, NOW, PID0) == (True, True)
    assert tcpto.check(IPV6, table, V6B, NOW, PID0) == (False, True)
    # the v4 codec must not see these bytes as the same table
    assert tcpto.check(IPV6, table, socket.inet_pton(socket.AF_INET6, "2001:db8::26"), NOW, PID0) == (False, False)


def test_short_file_holds_whole_records_only():
    # 1000 bytes: 62 whole records (0..61); the 8 bytes of record 62 are not a record
    table = bytes(992) + V4 + b"\x05" + bytes(3)
    assert len(table) == 1000 and tcpto.record_count(IPV4, table) == 62
    assert tcpto.check(IPV4, table, V4, NOW, PID0) == (False, False)
    table = bytes(61 * 16) + rec4(V4, 2, NOW) + bytes(8)
    assert tcpto.check(IPV4, table, V4, NOW, PID0) == (True, True)


def test_only_64_records_count():
    table = table4() + rec4(V4, 5, NOW)
    assert tcpto.record_count(IPV4, table) == 64
    assert tcpto.check(IPV4, table, V4, NOW, PID0) == (False, False)
    assert tcpto.record_count(IPV6, table6() + rec6(V6, 5, NOW)) == 64


def test_empty_table_disables():
    assert tcpto.check(IPV4, b"", V4, NOW, PID0) == (False, False)
    assert tcpto.update(IPV4, b"", V4, True, NOW) is None
    assert tcpto.update(IPV4, bytes(15), V4, True, NOW) is None


# --- rule 2: connected or refused ---

def test_success_zeroes_count_keeps_time_and_unused_bytes():
    table = table4(rec4(V4B, 4, 1), rec4(V4, 7, NOW - 30, b"abc", b"defg"))
    change = tcpto.update(IPV4, table, V4, False, NOW)
    assert change == (16, rec4(V4, 0, NOW - 30, b"abc", b"defg"))


def test_success_for_unknown_address_changes_nothing():
    assert tcpto.update(IPV4, table4(rec4(V4B, 4, 1)), V4, False, NOW) is None


def test_success_with_count_already_zero_needs_no_write():
    assert tcpto.update(IPV4, table4(rec4(V4, 0, 5)), V4, False, NOW) is None


# --- rule 3: timed out ---

@pytest.mark.parametrize("count,age,expected", [
    (1, 0, None), (1, 119, None), (1, -500, None),   # recent (or future) and counted: unchanged
    (1, 120, (2, NOW)), (4, 5000, (5, NOW)),
    (0, 0, (1, NOW)),                                  # a cleared record counts again at once
    (10, 200, (10, NOW)), (9, 200, (10, NOW)),         # the cap
])
def test_timeout_on_known_address(count, age, expected):
    table = table4(rec4(V4B, 3, 1), rec4(V4, count, NOW - age, b"\1\2\3", b"\4\5\6\7"))
    change = tcpto.update(IPV4, table, V4, True, NOW)
    if expected is None:
        assert change is None
    else:
        assert change == (16, rec4(V4, expected[0], expected[1], b"\1\2\3", b"\4\5\6\7"))


def test_timeout_new_address_takes_first_free_slot():
    table = table4(rec4(V4B, 3, 1), rec4(b"\1\1\1\1", 0, 77, b"xyz", b"uvwx"), rec4(b"\2\2\2\2", 1, 0))
    # slot 1 is free (count 0) although it holds an address: taken, unused bytes kept
    assert tcpto.update(IPV4, table, V4, True, NOW) == (16, rec4(V4, 1, NOW, b"xyz", b"uvwx"))


def test_timeout_full_table_replaces_smallest_time_plus_count_times_1024():
    records = [rec4(bytes([10, 0, 0, i]), 1, NOW - 100 + i) for i in range(64)]
    records[20] = rec4(b"\x0a\0\0\x14", 3, NOW - 3000)        # key NOW - 3000 + 3072: not smallest
    records[40] = rec4(b"\x0a\0\0\x28", 1, NOW - 2000, b"abc")  # key NOW - 2000 + 1024: smallest
    table = b"".join(records)
    assert tcpto.update(IPV4, table, V4, True, NOW) == (40 * 16, rec4(V4, 1, NOW, b"abc"))


def test_timeout_full_table_tie_takes_first():
    table = b"".join(rec4(bytes([10, 0, 0, i]), 2, NOW) for i in range(64))
    assert tcpto.update(IPV4, table, V4, True, NOW) == (0, rec4(V4, 1, NOW))


def test_timeout_in_short_full_table_stays_inside_it():
    table = b"".join(rec4(bytes([10, 0, 0, i]), 1, NOW - i) for i in range(6)) + b"\1\2\3"
    assert tcpto.update(IPV4, table, V4, True, NOW) == (5 * 16, rec4(V4, 1, NOW))


def test_first_record_for_address_is_updated():
    table = table4(rec4(V4, 1, NOW - 500), rec4(V4, 1, NOW - 500))
    assert tcpto.update(IPV4, table, V4, True, NOW) == (0, rec4(V4, 2, NOW))


def test_two_timeouts_two_minutes_apart_then_skip_then_success_clears():
    table, pid = bytes(1024), PID0
    table = apply(table, tcpto.update(IPV4, table, V4, True, NOW))
    assert tcpto.check(IPV4, table, V4, NOW + 1, pid) == (False, True)
    table = apply(table, tcpto.update(IPV4, table, V4, True, NOW + 60))  # within 120 s: not counted
    assert tcpto.fields(IPV4, table, 0) == (V4, 1, NOW)
    table = apply(table, tcpto.update(IPV4, table, V4, True, NOW + 120))
    assert tcpto.fields(IPV4, table, 0) == (V4, 2, NOW + 120)
    assert tcpto.check(IPV4, table, V4, NOW + 121, pid) == (True, True)
    assert tcpto.check(IPV4, table, V4, NOW + 120 + 3840, pid) == (False, True)
    table = apply(table, tcpto.update(IPV4, table, V4, False, NOW + 200))
    assert tcpto.fields(IPV4, table, 0) == (V4, 0, NOW + 120)
    assert tcpto.check(IPV4, table, V4, NOW + 201, pid) == (False, True)


@settings(max_examples=300, deadline=None)
@given(table=st.binary(min_size=0, max_size=1100), which=st.integers(0, 70), timed_out=st.booleans(),
       now=st.integers(0, 2 ** 32 - 1))
def test_any_change_is_one_whole_record_with_its_unused_bytes_kept(table, which, timed_out, now):
    n = tcpto.record_count(IPV4, table)
    address = table[which * 16:which * 16 + 4] if which < n else V4
    change = tcpto.update(IPV4, table, address, timed_out, now)
    if change is None:
        return
    offset, record = change
    assert offset % 16 == 0 and offset + 16 <= min(len(table), 1024) and len(record) == 16
    old = table[offset:offset + 16]
    assert record[:4] == address and 0 <= record[4] <= 10
    assert record[5:8] == old[5:8] and record[12:16] == old[12:16]
    assert tcpto.find(IPV4, apply(table, change), address) is not None


# --- addresses ---

def test_table_key():
    assert tcpto.table_key("127.0.0.1", socket.AF_INET) == (IPV4, V4)
    assert tcpto.table_key(b"127.0.0.1", socket.AF_INET) == (IPV4, V4)
    assert tcpto.table_key("2001:db8::25", socket.AF_INET6) == (IPV6, V6)
    assert tcpto.table_key("::ffff:127.0.0.1", socket.AF_INET6) == (IPV4, V4)


@pytest.mark.parametrize("ip,family", [
    ("127.0.0.1", socket.AF_INET6), ("::1", socket.AF_INET), ("fe80::1%eth0", socket.AF_INET6),
    ("", socket.AF_INET), (None, socket.AF_INET), ("1.2.3.4", socket.AF_UNIX), ("1.2.3.4", None),
    (b"\xff", socket.AF_INET), ("1.2.3.4\0", socket.AF_INET), ("999.1.1.1", socket.AF_INET),
])
def test_odd_addresses_have_no_table(ip, family):
    assert tcpto.table_key(ip, family) is None


# --- qmail-tcpto6's listing ---

def test_tcpto6_listing_is_stock_format():
    table = table6(rec6(V6, 2, NOW - 42), rec6(V6B, 0, NOW), rec6(V6B, 10, NOW + 3))
    assert qmail_tcpto6.listing(table, NOW) == (
        b"2001:db8::25 timed out 42 seconds ago; # recent timeouts: 2\n"
        b"::1 timed out -3 seconds ago; # recent timeouts: 10\n")
    assert qmail_tcpto6.listing(b"", NOW) == b""


# --- Backoff: the same rules through the locked files ---

class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now + 0.75  # fractions are dropped, as stock's whole seconds


@pytest.fixture
def files(tmp_path):
    v4, v6 = tmp_path / "tcpto", tmp_path / "tcpto6"
    v4.write_bytes(bytes(1024))
    v6.write_bytes(bytes(2048))
    return v4, v6


def backoff(files, now=NOW, pid=PID0, **kw):
    return tcpto.Backoff(str(files[0]), str(files[1]), clock=Clock(now), pid=pid, **kw)


def test_backoff_records_and_skips_through_the_files(files):
    v4, v6 = files
    b = backoff(files)
    assert b.skip("127.0.0.1", socket.AF_INET) is False
    b.record("127.0.0.1", socket.AF_INET, True)
    assert v4.read_bytes() == table4(rec4(V4, 1, NOW))
    b = backoff(files, NOW + 200)
    b.record("127.0.0.1", socket.AF_INET, True)
    assert v4.read_bytes() == table4(rec4(V4, 2, NOW + 200))
    assert backoff(files, NOW + 201).skip("127.0.0.1", socket.AF_INET) is True
    assert v6.read_bytes() == bytes(2048)


def test_backoff_v6_goes_to_tcpto6(files):
    v4, v6 = files
    b = backoff(files)
    b.record("2001:db8::25", socket.AF_INET6, True)
    b.record("::ffff:192.0.2.7", socket.AF_INET6, True)  # IPv4-mapped: the IPv4 table
    assert v6.read_bytes() == table6(rec6(V6, 1, NOW))
    assert v4.read_bytes() == table4(rec4(V4B, 1, NOW))


def test_backoff_connect_clears_only_what_the_check_found(files):
    v4, _ = files
    v4.write_bytes(table4(rec4(V4, 1, NOW - 500, b"abc", b"defg")))
    b = backoff(files)
    b.record("127.0.0.1", socket.AF_INET, False)  # no check before: stock's "not there", no write
    assert v4.read_bytes() == table4(rec4(V4, 1, NOW - 500, b"abc", b"defg"))
    assert b.skip("127.0.0.1", socket.AF_INET) is False
    b.record("127.0.0.1", socket.AF_INET, False)
    assert v4.read_bytes() == table4(rec4(V4, 0, NOW - 500, b"abc", b"defg"))


def test_backoff_writes_only_the_record(files):
    v4, _ = files
    tail = b"tail bytes beyond the 64 records"
    v4.write_bytes(table4(rec4(V4B, 2, 5)) + tail)
    backoff(files).record("127.0.0.1", socket.AF_INET, True)
    assert v4.read_bytes() == table4(rec4(V4B, 2, 5), rec4(V4, 1, NOW)) + tail


@pytest.mark.parametrize("content", [None, b"", b"\1" * 15])
def test_backoff_missing_empty_or_tiny_file_disables(files, content):
    v4, _ = files
    if content is None:
        v4.unlink()
    else:
        v4.write_bytes(content)
    b = backoff(files)
    assert b.skip("127.0.0.1", socket.AF_INET) is False
    b.record("127.0.0.1", socket.AF_INET, True)
    b.record("127.0.0.1", socket.AF_INET, False)
    if content is None:
        assert not v4.exists()  # never created
    else:
        assert v4.read_bytes() == content


def test_backoff_unopenable_file_disables(files):
    v4, v6 = files
    v4.unlink()
    v4.mkdir()  # open for writing fails with EISDIR, even for root
    v6.unlink()
    os.mkfifo(v6)  # write-only non-blocking open of a FIFO without reader: ENXIO, no hang
    b = backoff(files)
    for ip, family in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
        assert b.skip(ip, family) is False
        b.record(ip, family, True)


def test_backoff_does_without_a_lock_held_too_long(files):
    v4, _ = files
    v4.write_bytes(table4(rec4(V4, 5, NOW)))
    holder = os.open(v4, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        b = backoff(files, lock_wait=0.2)
        assert b.skip("127.0.0.1", socket.AF_INET) is False  # would be True with the lock
        b.record("127.0.0.1", socket.AF_INET, True)
        b.record("192.0.2.7", socket.AF_INET, True)
        assert v4.read_bytes() == table4(rec4(V4, 5, NOW))
    finally:
        os.close(holder)
    assert backoff(files, lock_wait=0.2).skip("127.0.0.1", socket.AF_INET) is True


@pytest.mark.parametrize("ip,family", [(None, None), ("junk", socket.AF_INET), ("1.2.3.4", 12345)])
def test_backoff_odd_input_never_raises(files, ip, family):
    b = backoff(files)
    assert b.skip(ip, family) is False
    b.record(ip, family, True)
    assert files[0].read_bytes() == bytes(1024) and files[1].read_bytes() == bytes(2048)


def test_backoff_default_paths_are_relative_to_the_home(tmp_path, monkeypatch):
    (tmp_path / "queue" / "lock").mkdir(parents=True)
    (tmp_path / "run" / "qmail-remote").mkdir(parents=True)
    (tmp_path / "queue" / "lock" / "tcpto").write_bytes(bytes(1024))
    (tmp_path / "run" / "qmail-remote" / "tcpto6").write_bytes(bytes(2048))
    monkeypatch.chdir(tmp_path)
    b = tcpto.Backoff()
    b.record("127.0.0.1", socket.AF_INET, True)
    b.record("::1", socket.AF_INET6, True)
    assert (tmp_path / "queue" / "lock" / "tcpto").read_bytes()[:5] == V4 + b"\1"
    assert (tmp_path / "run" / "qmail-remote" / "tcpto6").read_bytes()[:17] == V6B + b"\1"
