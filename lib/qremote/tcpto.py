"""tcpto: back off from addresses that keep timing out (stock qmail's rule, IPv4 and IPv6).

Files, relative to the qmail home (qmail-remote's cwd):
  queue/lock/tcpto          IPv4: stock qmail's own file, byte for byte, so stock
                            qmail-tcpto and qmail-tcpok keep working on it
  run/qmail-remote/tcpto6   IPv6: the same rules, wider records

Record layout (byte offsets); a table is 64 records (1024 or 2048 bytes):
                 IPv4 (16 bytes)   IPv6 (32 bytes)
  address        0..3              0..15     network order
  count          4                 16        recent timeouts: 0 = free slot, at most 10
  unused         5..7              17..19    left as found
  time           8..11             20..23    last timeout, Unix seconds, unsigned 32-bit
                                             little-endian
  unused         12..15            24..31    left as found
IPv6 keeps IPv4's shape, the address widened to 16 bytes and the rest shifted by 12,
padded to a power of two so a record never straddles a 512-byte block.

Only the first 64 records are read. A shorter file holds floor(size / record size)
records; an empty, missing or unreadable file disables the mechanism for its family,
silently, as stock.

Rules (stock's tcpto.c; now and pid are arguments of the pure functions below):
 1. Before connecting: the first record holding the address decides. Skip the address
    iff count >= 2 and now - time < (60 + (pid & 31)) * 64 seconds (a time in the
    future skips too). Whether a record was found ("was there") is kept for rule 2.
 2. Connected, or failed other than by timeout: if the address was there at the
    check, lock, reread, and set its count to 0 (time kept). Else nothing.
 3. Timed out: lock, reread. A record for the address with a non-zero count and a
    time less than 120 s old stays as it is; else count + 1 (at most 10), time = now.
    No record: take the first free slot, else the record with the smallest
    time + count * 1024; write the address, count 1 and time = now there.
So an address is avoided for about an hour after two timeouts at least two minutes
apart with no connection in between. The table is keyed by address, not port.

Locking, as stock: the file is opened write-only (no create, non-blocking) and
flock'ed exclusively (tcpto6, in qremote's run directory, is never reached through a
symlink planted there: O_NOFOLLOW; queue/lock/tcpto is opened as stock opens it); it is read through a separate read-only fd; a change is one
record-sized write at its offset on the locked fd. Stock waits for the lock forever;
here a delivery waits at most LOCK_WAIT seconds, then goes on as if the file were
missing. Any OSError does the same: a delivery never fails because of tcpto.

Counts are read as unsigned bytes (stock's signed char would treat a corrupt count of
128 or more as negative). An IPv4-mapped IPv6 address (::ffff:a.b.c.d) goes to the
IPv4 table: connecting to it reaches a.b.c.d over IPv4. An address that does not
parse for its family is never skipped and never recorded.
"""

import _socket  # the C module: socket.py costs ~13 ms of imports
import fcntl
import os
import struct
import time

from . import paths
from .candidates import ipv4_of

TCPTO6 = paths.RUN + "/tcpto6"
RECORDS = 64
MAX_COUNT = 10
QUIET = 120          # seconds after a recorded timeout during which another is not counted
LOCK_WAIT = 5.0      # seconds a delivery waits for the lock before doing without
_TIME = struct.Struct("<I")


class Layout:
    """Where the fields of one family's records are."""

    __slots__ = ("family", "address_size", "record_size", "count_at", "time_at", "table_size")

    def __init__(self, family, address_size, record_size, count_at, time_at):
        self.family, self.address_size, self.record_size = family, address_size, record_size
        self.count_at, self.time_at = count_at, time_at
        self.table_size = RECORDS * record_size


IPV4 = Layout(_socket.AF_INET, 4, 16, 4, 8)       # stock qmail's queue/lock/tcpto
IPV6 = Layout(_socket.AF_INET6, 16, 32, 16, 20)   # run/qmail-remote/tcpto6


# --- the pure codec: tables are bytes, now and pid are arguments ---

def record_count(layout, table):
    return min(len(table), layout.table_size) // layout.record_size


def fields(layout, table, index):
    """(address, count, time) of record index."""
    at = index * layout.record_size
    return (bytes(table[at:at + layout.address_size]), table[at + layout.count_at],
            _TIME.unpack_from(table, at + layout.time_at)[0])


def encode(layout, old, address, count, when):
    """A record with address, count and time set; its unused bytes are those of old."""
    record = bytearray(old)
    record[:layout.address_size] = address
    record[layout.count_at] = count
    _TIME.pack_into(record, layout.time_at, when & 0xFFFFFFFF)
    return bytes(record)


def find(layout, table, address):
    """Index of the first record holding address, or None."""
    for index in range(record_count(layout, table)):
        at = index * layout.record_size
        if table[at:at + layout.address_size] == address:
            return index
    return None


def window(pid):
    """How long (s) an address with 2+ timeouts is skipped: 3840..5824 s, by pid."""
    return (60 + (pid & 31)) * 64


def check(layout, table, address, now, pid):
    """Rule 1: (skip, was_there)."""
    index = find(layout, table, address)
    if index is None:
        return False, False
    _, count, when = fields(layout, table, index)
    return count >= 2 and now - when < window(pid), True


def update(layout, table, address, timed_out, now):
    """Rules 2 and 3 on the table reread under the lock: (offset, record) to write, or None.

    The caller applies rule 2's "was there" test before locking (as stock).
    """
    size = layout.record_size
    index = find(layout, table, address)
    if index is not None:
        old = table[index * size:(index + 1) * size]
        _, count, when = fields(layout, table, index)
        if not timed_out:
            new = encode(layout, old, address, 0, when)
        elif count and now - when < QUIET:
            return None
        else:
            new = encode(layout, old, address, min(count + 1, MAX_COUNT), now)
        return (index * size, new) if new != old else None
    if not timed_out:
        return None
    index = _slot_to_take(layout, table)
    if index is None:
        return None
    old = table[index * size:(index + 1) * size]
    return index * size, encode(layout, old, address, 1, now)


def _slot_to_take(layout, table):
    """The first free record, else the one with the smallest time + count * 1024."""
    best, best_key = None, None
    for index in range(record_count(layout, table)):
        _, count, when = fields(layout, table, index)
        if count == 0:
            return index
        key = when + (count << 10)
        if best is None or key < best_key:
            best, best_key = index, key
    return best


def timed_out_entries(layout, table):
    """(address, count, time) of every record with a count (what qmail-tcpto shows)."""
    found = []
    for index in range(record_count(layout, table)):
        address, count, when = fields(layout, table, index)
        if count:
            found.append((address, count, when))
    return found


def table_key(ip, family):
    """(layout, packed address) for ip (text) of family, or None if it does not parse."""
    try:
        if isinstance(ip, bytes):
            ip = ip.decode("ascii")
        if family not in (_socket.AF_INET, _socket.AF_INET6):
            return None
        address = _socket.inet_pton(family, ip)
    except (OSError, ValueError, TypeError, UnicodeError):
        return None
    v4 = ipv4_of(address)
    return (IPV4, v4) if v4 is not None else (IPV6, address)


# --- the locked file I/O ---

def lock(fd, wait=None):
    """flock(LOCK_EX) on fd; with wait, give up (BlockingIOError) after wait seconds."""
    if wait is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def open_lock(path, wait=None, flags=0):
    """The lock fd: path opened write-only (never created, plus flags) and locked."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | flags)
    try:
        lock(fd, wait)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_table(path, layout, flags=0):
    """The first table_size bytes of path, read through their own fd in one read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | flags)
    try:
        return os.read(fd, layout.table_size)
    finally:
        os.close(fd)


class Backoff:
    """The tcpto tables of both families, as one delivery uses them (cwd = qmail home).

    Holds, per address, whether the check found it (rule 2 needs it). Never raises.
    """

    def __init__(self, tcpto=paths.TCPTO, tcpto6=TCPTO6, clock=time.time, pid=None, lock_wait=LOCK_WAIT):
        self.files = {IPV4: tcpto, IPV6: tcpto6}
        self.open_flags = {IPV4: 0, IPV6: os.O_NOFOLLOW}  # tcpto6 lives in our run directory
        self.clock = clock
        self.pid = os.getpid() if pid is None else pid
        self.lock_wait = lock_wait
        self.was_there = {}  # (layout, packed address) -> bool, set by skip()

    def skip(self, ip, family):
        """Whether to skip ip without trying it (recent repeated timeouts)."""
        key = table_key(ip, family)
        if key is None:
            return False
        layout, address = key
        self.was_there[key] = False
        path, flags = self.files[layout], self.open_flags[layout]
        try:
            fd = open_lock(path, self.lock_wait, flags)
            try:
                table = read_table(path, layout, flags)
            finally:
                os.close(fd)
        except OSError:
            return False
        skip, self.was_there[key] = check(layout, table, address, int(self.clock()), self.pid)
        return skip

    def record(self, ip, family, timed_out):
        """The outcome of one connection attempt to ip: connected or refused, or timed out."""
        key = table_key(ip, family)
        if key is None or not (timed_out or self.was_there.get(key)):
            return
        layout, address = key
        path, flags = self.files[layout], self.open_flags[layout]
        try:
            fd = open_lock(path, self.lock_wait, flags)
            try:
                change = update(layout, read_table(path, layout, flags), address, bool(timed_out), int(self.clock()))
                if change is not None:
                    offset, record = change
                    os.lseek(fd, offset, os.SEEK_SET)
                    os.write(fd, record)  # a short write is as harmless as stock's
            finally:
                os.close(fd)
        except OSError:
            pass
