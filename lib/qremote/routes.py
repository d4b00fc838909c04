"""control/smtproutes and control/qmtproutes: parse, compile to a cdb, look a host up.

Syntax, as stock: one route per line, `domain:relay`, split at the first ':'; keys
compare case-insensitively; the last line for a key wins; empty lines and lines
starting with '#' are skipped. `relay` may be empty (use the MX records, and stop
looking), `host`, `host:port`, `[1.2.3.4]:port` or `[IPv6:...]:port` (the brackets
keep an IPv6 relay's colons apart from the port). Stock silently ignores a line
without ':' and takes port 0 from `relay:x`; here both refuse the file with a Z that
names the line, so a typo never quietly changes where mail goes.

control/qmtproutes (s/qmail's, looked at before smtproutes) has the same lines, and
the value may also take s/qmail's enhanced form `relay;[s]port|user|password|localip`
(parse_enhanced, which smtproutes will share once it has AUTH): `relay;6209`, `relay;s`,
`relay;s7000`, `relay;209||| 192.0.2.1`. The port is 209 (QMTP) by default; 6209, or
any port written with `s`, is QMTPS (QMTP inside TLS, through tlsc-io). A user or a
password refuses the file: QMTP has no AUTH, and a secret that is silently not used
is worse than a Z. localip is the source address of the connection (as
control/outgoingip, for this route). An empty relay ends the QMTP lookup: the host
goes by smtproutes (or MX) as without a qmtproutes line, so `.sub.example.org:`
exempts a subdomain from a wider QMTP route.

Lookup, as stock: the whole host, then each suffix starting at a '.', left to right
(`.sub.example.org`, `.example.org`, `.org`), then the empty key (the default).

The cache: run/qmail-remote/smtproutes.cdb holds the parsed table and a stamp of the
text it came from (device, inode, size, mtime and ctime in ns: the ctime changes on any
write or chmod, even one that restores size and mtime, as `cp -p` does). When the
text's stamp differs, the next delivery rebuilds it under an exclusive lock on
smtproutes.lock, writing a temporary file and renaming it over the cdb, so a reader
sees the old table or the new one, never half of one. A stamp, not "newer than": an
edit made while a compile was running would otherwise be missed forever. The text is
opened on every delivery, cache or not, so one that cannot be read is the usual Z.

The cdb is never trusted: lookups are bounded and checked (cdbread), and any
inconsistency (also a value that does not decode) rebuilds it. If the run directory
cannot be written, deliveries parse the text directly. Nothing in the run directory
is reached through a link: the cdb and the lock are opened with O_NOFOLLOW (and
non-blocking: a FIFO cannot hang a delivery), anything but a regular file is ignored,
the temporary file is created with O_EXCL. As root (a run by hand), the files it
creates are given to the run directory's owner and group, so that qmailr can go on
rebuilding the cache.
"""

import mmap
import os
import stat

from . import cdbread, control, failures
from .candidates import QMTP, QMTPS, SMTP
from .paths import CONTROL, RUN
from .tcpto import lock as lock_within  # the one flock-with-a-deadline

LOCK_WAIT = 5.0  # seconds; a compile takes milliseconds: longer means a stuck holder

MX = None  # lookup result: no artificial route, deliver by MX
QMTP_PORT, QMTPS_PORT = 209, 6209


class RouteFile:
    """One routes control file and its cache in RUN."""

    __slots__ = ("name", "source", "cdb_name", "lock_name", "cdb", "stamp_key", "enhanced")

    def __init__(self, name, enhanced):
        self.name = name
        self.source = os.path.join(CONTROL, name)
        self.cdb_name, self.lock_name = name + ".cdb", name + ".lock"
        self.cdb = os.path.join(RUN, self.cdb_name)
        self.stamp_key = b"\0qremote-%s-stamp" % name.encode()  # no domain starts with NUL: no clash
        self.enhanced = enhanced  # s/qmail's "relay;[s]port|user|password|localip" (QMTP)


SMTPROUTES = RouteFile("smtproutes", False)
QMTPROUTES = RouteFile("qmtproutes", True)
SOURCE, CDB_NAME, LOCK_NAME, CDB = SMTPROUTES.source, SMTPROUTES.cdb_name, SMTPROUTES.lock_name, SMTPROUTES.cdb
_STAMP_KEY = SMTPROUTES.stamp_key


class Route:
    """An artificial route: connect to relay (a name or an IP literal) on port, speaking
    protocol (SMTP, QMTP, QMTPS), from localip (text) when it is not None."""

    __slots__ = ("relay", "port", "protocol", "localip")

    def __init__(self, relay, port, protocol=SMTP, localip=None):
        self.relay, self.port, self.protocol, self.localip = relay, port, protocol, localip

    def __eq__(self, other):
        return isinstance(other, Route) and (self.relay, self.port, self.protocol, self.localip) == (
            other.relay, other.port, other.protocol, other.localip)

    def __repr__(self):
        return "Route(%r, %r, %r, %r)" % (self.relay, self.port, self.protocol, self.localip)

    def encode(self):
        if self.protocol == SMTP and self.localip is None:
            return b"%s\0%d" % (self.relay, self.port)  # as the caches before QMTP
        return b"%s\0%d\0%s\0%s" % (self.relay, self.port, self.protocol.encode(), (self.localip or "").encode())

    @classmethod
    def decode(cls, value):
        if not value:
            return MX
        fields = value.split(b"\0")
        if len(fields) == 2:
            return cls(fields[0], int(fields[1]))
        relay, port, protocol, localip = fields  # ValueError on anything else: the cdb is rebuilt
        protocol = protocol.decode("ascii")
        if protocol not in (SMTP, QMTP, QMTPS):
            raise ValueError("bad protocol")
        return cls(relay, int(port), protocol, localip.decode("ascii") or None)


def _invalid(number, why, name="smtproutes"):
    return failures.ControlInvalid(name, "line %d: %s" % (number, why))


def _port(number, text, name):
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _invalid(number, "the port must be a number from 1 to 65535", name)
    return int(text)


def parse_enhanced(number, value, name):
    """s/qmail's `relay;[s]port|user|password|localip` -> (relay, port text or None,
    implicit TLS, user, password, localip): the syntax only, shared by the route files
    that take it. Without ';' the whole value is the relay (stock syntax)."""
    relay, semicolon, rest = value.partition(b";")
    if not semicolon:
        return relay, None, False, b"", b"", b""
    parts = rest.split(b"|")
    if len(parts) > 4:
        raise _invalid(number, "more than relay;port|user|password|localip", name)
    parts += [b""] * (4 - len(parts))
    port, user, password, localip = parts
    tls = port.startswith(b"s")
    return relay, (port[1:] if tls else port) or None, tls, user, password, localip


def parse_qmtp_relay(number, value):
    """A qmtproutes value: MX (empty: ask smtproutes) or a QMTP or QMTPS Route."""
    name = QMTPROUTES.name
    if not value:
        return MX
    relay, port, tls, user, password, localip = parse_enhanced(number, value, name)
    if user or password:
        raise _invalid(number, "QMTP has no AUTH: a user or password is not used here", name)
    if not relay:
        raise _invalid(number, "no relay host before the port", name)
    route = parse_relay(number, relay, name, QMTPS_PORT if tls else QMTP_PORT)
    if port is not None:
        after_host = relay.rpartition(b"]")[2] if relay.startswith(b"[") else relay
        if b":" in after_host:
            raise _invalid(number, "a port after ':' and after ';'", name)
        route.port = _port(number, port, name)
    route.protocol = QMTPS if tls or route.port == QMTPS_PORT else QMTP
    if localip:
        from .candidates import normal_ip

        found = normal_ip(localip.decode("ascii", "replace"))
        if found is None:
            raise _invalid(number, "localip must be an IP address", name)
        route.localip = found[0]
    return route


def parse_relay(number, relay, name="smtproutes", default_port=25):
    """The value part of a line: MX (empty) or a Route."""
    if not relay:
        return MX
    port = b"%d" % default_port
    if relay.startswith(b"["):
        close = relay.find(b"]")
        if close < 0:
            raise _invalid(number, "no ']' after '['")
        host, rest = relay[:close + 1], relay[close + 1:]
        if rest:
            if not rest.startswith(b":"):
                raise _invalid(number, "junk after ']'", name)
            port = rest[1:]
    else:
        host, colon, after = relay.partition(b":")
        if colon:
            port = after
    if not host:
        raise _invalid(number, "no relay host before the port", name)
    return Route(host, _port(number, port, name))


def parse(lines, routes=SMTPROUTES):
    """(line number, line) pairs -> {lower-cased key: Route or MX}; last one wins."""
    table = {}
    for number, line in lines:
        key, colon, relay = line.partition(b":")
        if not colon:
            raise _invalid(number, "no ':' between domain and relay", routes.name)
        relay = relay.strip(b" \t")
        table[key.lower()] = parse_qmtp_relay(number, relay) if routes.enhanced else parse_relay(number, relay)
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
    return b"%d %d %d %d %d" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


_NOT_A_FILE = b"not a regular file"  # the stamp of no cdb: the text is read, and refused


def source_stamp(routes=SMTPROUTES):
    """The stamp of control/smtproutes (or qmtproutes), or None if there is none.

    Opened, not just stat'ed: a file that cannot be read any more (its mode, or a group
    the user lost) is a Z even while the cdb built from it is current.
    """
    try:
        fd = os.open(routes.source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise failures.ControlUnreadable(routes.name, error.strerror) from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return stamp_of(st) if stat.S_ISREG(st.st_mode) else _NOT_A_FILE


# --- the cdb cache ---

def _open_cdb(stamp, routes):
    """A lookup function over the cdb if it exists, is sound, and matches stamp; else None.

    The function raises cdbread.Corrupt (a ValueError) when the lookup meets damage.
    """
    try:
        # O_NONBLOCK: a FIFO put in its place must not hang the delivery in open()
        fd = os.open(routes.cdb, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
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
        if cdbread.get(data, routes.stamp_key) != stamp:
            return None
    except cdbread.Corrupt:
        return None
    return lambda key: cdbread.get(data, key)


def _lock_run_directory(routes):
    """(run directory fd, locked lock fd, owner for new files or None), or None: no cache.

    The lock is opened read-only (flock needs no more), so a lock file left by another
    user is still usable; a link or anything but a regular file there means no cache.
    """
    try:
        run = os.open(RUN, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None  # run directory missing or not ours: deliver without the cache
    lock = None
    try:
        owner = None
        if os.geteuid() == 0:  # by hand: what we create must stay replaceable by qmailr
            st = os.fstat(run)
            owner = st.st_uid, st.st_gid
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            lock = os.open(routes.lock_name, flags | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=run)
        except FileExistsError:
            lock = os.open(routes.lock_name, flags, dir_fd=run)
            if not stat.S_ISREG(os.fstat(lock).st_mode):
                os.close(lock)
                os.close(run)
                return None
        else:
            if owner is not None:  # only a file we created: never one found there
                try:
                    os.fchown(lock, *owner)
                except OSError:
                    os.unlink(routes.lock_name, dir_fd=run)
                    raise
        lock_within(lock, LOCK_WAIT)  # held too long by another delivery: OSError
        return run, lock, owner
    except OSError:
        if lock is not None:
            os.close(lock)
        os.close(run)
        return None


def _write_cdb(run, owner, table, stamp, routes):
    temp = "%s.tmp%d" % (routes.cdb_name, os.getpid())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, 0o644, dir_fd=run)
    except FileExistsError:
        # left by a dead delivery that had our pid, or planted: we hold the lock, so no
        # live writer uses this name; unlink removes the name (a link), never a target
        os.unlink(temp, dir_fd=run)
        fd = os.open(temp, flags, 0o644, dir_fd=run)
    try:
        with os.fdopen(fd, "wb") as out:
            from cdblib import Writer

            writer = Writer(out)
            writer.put(routes.stamp_key, stamp)
            for key, route in table.items():
                writer.put(key, route.encode() if route is not MX else b"")
            writer.finalize()
            out.flush()
            os.fchmod(fd, 0o644)
            if owner is not None:
                os.fchown(fd, *owner)
            os.fsync(fd)
        os.rename(temp, routes.cdb_name, src_dir_fd=run, dst_dir_fd=run)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=run)
        except OSError:
            pass
        raise


def _read_source(routes):
    """(stamp, lines) of the text, or (None, None) when there is no such file."""
    stamp = source_stamp(routes)  # before the content: a later edit only makes the cdb stale
    lines = None if stamp is None else control.read_lines(routes.name)
    return (None, None) if lines is None else (stamp, lines)


def _table_getter(table):
    def get(key):
        route = table.get(key, 0)
        if route == 0:
            return None
        return route.encode() if route is not MX else b""
    return get


def load(rebuild=False, routes=SMTPROUTES):
    """A get(key) -> encoded value function for the current routes, or None if none.

    Fast path: the cdb matches the text; no lock, one open of the text, one mmap. Slow
    path: take the lock, check again (another delivery may have just rebuilt it),
    compile. rebuild: the cdb matched but turned out damaged; compile anyway.
    """
    stamp = source_stamp(routes)
    if stamp is None:
        return None
    get = None if rebuild else _open_cdb(stamp, routes)
    if get is not None:
        return get
    locked = _lock_run_directory(routes)
    try:
        stamp, lines = _read_source(routes)
        if stamp is None:
            return None
        if locked is not None and not rebuild:
            get = _open_cdb(stamp, routes)
            if get is not None:
                return get
        table = parse(lines, routes)
        if locked is not None:
            run, _, owner = locked
            try:
                _write_cdb(run, owner, table, stamp, routes)
            except OSError:
                pass  # cannot cache it this time: the table in memory still serves
        return _table_getter(table)
    finally:
        if locked is not None:
            os.close(locked[1])
            os.close(locked[0])


def route_for(host):
    """The Route for host: qmtproutes' first (an empty relay there is no route), then
    smtproutes'; MX when neither has one (also when neither file exists)."""
    route = route_in(QMTPROUTES, host)
    return route if route is not MX else route_in(SMTPROUTES, host)


def route_in(routes, host):
    """The Route for host in one routes file, or MX."""
    get = load(routes=routes)
    if get is None:
        return MX
    try:
        value = lookup_in(get, host)
        return MX if value is None else Route.decode(value)
    except ValueError:  # cdbread.Corrupt or a value that does not decode: compile the text again
        get = load(rebuild=True, routes=routes)
        value = None if get is None else lookup_in(get, host)
        return MX if value is None else Route.decode(value)
