"""control/smtproutes: parse (stock syntax), compile to a cdb, look a host up.

Syntax, as stock: one route per line, `domain:relay`, split at the first ':'; keys
compare case-insensitively; the last line for a key wins; empty lines and lines
starting with '#' are skipped. `relay` may be empty (use the MX records, and stop
looking), `host`, `host:port`, `[1.2.3.4]:port` or `[IPv6:...]:port` (the brackets
keep an IPv6 relay's colons apart from the port). Stock silently ignores a line
without ':' and takes port 0 from `relay:x`; here both refuse the file with a Z that
names the line, so a typo never quietly changes where mail goes.

Lookup, as stock: the whole host, then each suffix starting at a '.', left to right
(`.sub.example.org`, `.example.org`, `.org`), then the empty key (the default).

The cache: run/qmail-remote/smtproutes.cdb holds the parsed table and a stamp of the
text it came from (mtime in ns, size, inode). When the text's stamp differs, the next
delivery rebuilds it under an exclusive lock on smtproutes.lock, writing a temporary
file and renaming it over the cdb, so a reader sees the old table or the new one,
never half of one. A stamp, not "newer than": an edit made while a compile was
running would otherwise be missed forever. If the run directory cannot be written,
deliveries parse the text directly; a corrupt cdb is rebuilt (also one whose stamp
matches but whose value for the host does not decode), and anything but a regular file
in its place is ignored (opened non-blocking: a FIFO cannot hang a delivery).
"""

import mmap
import os
import stat

from . import control, failures
from .paths import CONTROL, RUN
from .tcpto import lock as lock_within  # the one flock-with-a-deadline

SOURCE = os.path.join(CONTROL, "smtproutes")
CDB = os.path.join(RUN, "smtproutes.cdb")
LOCK = os.path.join(RUN, "smtproutes.lock")
LOCK_WAIT = 5.0  # seconds; a compile takes milliseconds: longer means a stuck holder
_STAMP_KEY = b"\0qremote-smtproutes-stamp"  # no domain starts with NUL: no clash

MX = None  # lookup result: no artificial route, deliver by MX


class Route:
    """An artificial route: connect to relay (a name or an IP literal) on port."""

    __slots__ = ("relay", "port")

    def __init__(self, relay, port):
        self.relay, self.port = relay, port

    def __eq__(self, other):
        return isinstance(other, Route) and (self.relay, self.port) == (other.relay, other.port)

    def __repr__(self):
        return "Route(%r, %r)" % (self.relay, self.port)

    def encode(self):
        return b"%s\0%d" % (self.relay, self.port)

    @classmethod
    def decode(cls, value):
        if not value:
            return MX
        relay, _, port = value.partition(b"\0")
        return cls(relay, int(port))


def _invalid(number, why):
    return failures.ControlInvalid("smtproutes", "line %d: %s" % (number, why))


def parse_relay(number, relay):
    """The value part of a line: MX (empty) or a Route."""
    if not relay:
        return MX
    port = b"25"
    if relay.startswith(b"["):
        close = relay.find(b"]")
        if close < 0:
            raise _invalid(number, "no ']' after '['")
        host, rest = relay[:close + 1], relay[close + 1:]
        if rest:
            if not rest.startswith(b":"):
                raise _invalid(number, "junk after ']'")
            port = rest[1:]
    else:
        host, colon, after = relay.partition(b":")
        if colon:
            port = after
    if not host:
        raise _invalid(number, "no relay host before the port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _invalid(number, "the port must be a number from 1 to 65535")
    return Route(host, int(port))


def parse(lines):
    """(line number, line) pairs -> {lower-cased key: Route or MX}; last one wins."""
    table = {}
    for number, line in lines:
        key, colon, relay = line.partition(b":")
        if not colon:
            raise _invalid(number, "no ':' between domain and relay")
        table[key.lower()] = parse_relay(number, relay.strip(b" \t"))
    return table


def candidate_keys(host):
    """The keys to try for host, most specific first (stock order)."""
    host = host.lower()
    yield host
    for i, c in enumerate(host):
        if c == 46:  # '.'
            yield host[i:]
    yield b""


def lookup_in(get, host):
    """First hit among candidate_keys(host) in a table reached through get()."""
    for key in candidate_keys(host):
        value = get(key)
        if value is not None:
            return value
    return None


def stamp_of(st):
    return b"%d %d %d" % (st.st_mtime_ns, st.st_size, st.st_ino)


# --- the cdb cache ---

def _open_cdb(stamp):
    """A lookup function over the cdb if it exists, is sound, and matches stamp; else None."""
    from cdblib import Reader

    try:
        # O_NONBLOCK: a FIFO put in its place must not hang the delivery in open()
        fd = os.open(CDB, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    try:
        reader = Reader(data=data)
        if reader.get(_STAMP_KEY) != stamp:
            return None
    except Exception:  # a truncated or corrupt cdb: rebuild it
        return None
    return reader.get


def _write_cdb(table, stamp):
    from cdblib import Writer

    temp = "%s.tmp%d" % (CDB, os.getpid())
    try:
        with open(temp, "wb") as out:
            writer = Writer(out)
            writer.put(_STAMP_KEY, stamp)
            for key, route in table.items():
                writer.put(key, route.encode() if route is not MX else b"")
            writer.finalize()
            out.flush()
            os.fchmod(out.fileno(), 0o644)
            os.fsync(out.fileno())
        os.rename(temp, CDB)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _read_source():
    """(stamp, lines) of the text, or (None, None) when there is no smtproutes."""
    try:
        st = os.stat(SOURCE)
    except FileNotFoundError:
        return None, None
    except OSError as error:
        raise failures.ControlUnreadable("smtproutes", error.strerror) from None
    lines = control.read_lines("smtproutes")
    return stamp_of(st), lines


def _table_getter(table):
    def get(key):
        route = table.get(key, 0)
        if route == 0:
            return None
        return route.encode() if route is not MX else b""
    return get


def load(rebuild=False):
    """A get(key) -> encoded value function for the current routes, or None if none.

    Fast path: the cdb matches the text; no lock, one stat, one mmap. Slow path: take
    the lock, check again (another delivery may have just rebuilt it), compile.
    rebuild: the cdb matched but held a value that does not decode; compile anyway.
    """
    try:
        st = os.stat(SOURCE)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise failures.ControlUnreadable("smtproutes", error.strerror) from None
    get = None if rebuild else _open_cdb(stamp_of(st))
    if get is not None:
        return get
    try:
        lock = os.open(LOCK, os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError:
        lock = None  # run directory missing or not ours: deliver without the cache
    try:
        if lock is not None:
            try:
                lock_within(lock, LOCK_WAIT)
            except OSError:  # held too long by another delivery: do without the cache
                os.close(lock)
                lock = None
        stamp, lines = _read_source()
        if stamp is None:
            return None
        if lock is not None and not rebuild:
            get = _open_cdb(stamp)
            if get is not None:
                return get
        table = parse(lines)
        if lock is not None:
            try:
                _write_cdb(table, stamp)
            except OSError:
                pass  # cannot cache it this time: the table in memory still serves
        return _table_getter(table)
    finally:
        if lock is not None:
            os.close(lock)


def route_for(host):
    """The Route for host, or MX (also when there is no smtproutes at all)."""
    get = load()
    if get is None:
        return MX
    value = lookup_in(get, host)
    try:
        return MX if value is None else Route.decode(value)
    except ValueError:  # a damaged cdb whose stamp still matches: compile the text again
        get = load(rebuild=True)
        value = None if get is None else lookup_in(get, host)
        return MX if value is None else Route.decode(value)
