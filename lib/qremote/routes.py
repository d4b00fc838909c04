"""control/smtproutes and control/qmtproutes: parse, compile to a cdb, look a host up;
control/authsenders and control/domainips (read as they are: small files).

route_for() says the order: an empty sender's `!@` line (smtproutes), authsenders by
sender, qmtproutes by host, smtproutes by host, MX (doc/smtproutes.html). smtproutes and
authsenders take s/qmail's enhanced form too: `relay;[s]port|user|password|localip|options`
(port 465 or `s`: SMTPS; a user: AUTH). A Route never holds the password, only the user
and a reference to the line (reference()): the cdb is readable by every user, and the
secret is read by qmail-remote-io alone (credentials.py, doc/auth.html).

Syntax, as stock: one route per line, `domain:relay`, split at the first ':'; keys
compare case-insensitively; the last line for a key wins; empty lines and lines
starting with '#' are skipped. `relay` may be empty (use the MX records, and stop
looking), `host`, `host:port`, `[1.2.3.4]:port` or `[IPv6:...]:port` (the brackets
keep an IPv6 relay's colons apart from the port). Stock silently ignores a line
without ':' and takes port 0 from `relay:x`; here both refuse the file with a Z that
names the line, so a typo never quietly changes where mail goes.

control/qmtproutes (s/qmail's, looked at before smtproutes) has the same lines, and
the value may also take s/qmail's enhanced form `relay;[s]port|user|password|localip`
(parse_enhanced, shared with smtproutes and authsenders): `relay;6209`, `relay;s`,
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
from .candidates import PROTOCOLS, QMTP, QMTPS, SMTP, SMTPS
from .paths import CONTROL, RUN
from .tcpto import lock as lock_within  # the one flock-with-a-deadline

LOCK_WAIT = 5.0  # seconds; a compile takes milliseconds: longer means a stuck holder

MX = None  # lookup result: no artificial route, deliver by MX
QMTP_PORT, QMTPS_PORT, SMTPS_PORT = 209, 6209, 465
BOUNCE_KEY = b"!@"  # s/qmail: the smtproutes key for mail whose sender is empty
OPTIONS = (b"cleartext", b"xoauth2")  # the fifth field (smtproutes, authsenders): doc/auth.html


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


SMTPROUTES = RouteFile("smtproutes", True)
QMTPROUTES = RouteFile("qmtproutes", True)
SOURCE, CDB_NAME, LOCK_NAME, CDB = SMTPROUTES.source, SMTPROUTES.cdb_name, SMTPROUTES.lock_name, SMTPROUTES.cdb
_STAMP_KEY = SMTPROUTES.stamp_key


class Route:
    """An artificial route: connect to relay (a name or an IP literal) on port, speaking
    protocol (SMTP, SMTPS, QMTP, QMTPS), from localip (text) when it is not None.
    With AUTH: user (bytes) and where, the reference to the line that holds the secret
    ("smtproutes:LINE:HEX", credentials.py): the secret itself is never in a Route, nor
    in the cdb (which any user may read); options: the fifth field (OPTIONS)."""

    __slots__ = ("relay", "port", "protocol", "localip", "user", "where", "options")

    def __init__(self, relay, port, protocol=SMTP, localip=None, user=b"", where=None, options=b""):
        self.relay, self.port, self.protocol, self.localip = relay, port, protocol, localip
        self.user, self.where, self.options = user, where, options

    def _fields(self):
        return (self.relay, self.port, self.protocol, self.localip, self.user, self.where, self.options)

    def __eq__(self, other):
        return isinstance(other, Route) and self._fields() == other._fields()

    def __repr__(self):
        return "Route(%r, %r, %r, %r, %r, %r, %r)" % self._fields()

    def encode(self):
        if self.protocol == SMTP and self.localip is None and self.where is None and not self.options:
            return b"%s\0%d" % (self.relay, self.port)  # as the caches before QMTP
        base = b"%s\0%d\0%s\0%s" % (self.relay, self.port, self.protocol.encode(), (self.localip or "").encode())
        if self.where is None and not self.options:
            return base
        return base + b"\0%s\0%s\0%s" % (self.user, (self.where or "").encode(), self.options)

    @classmethod
    def decode(cls, value):
        if not value:
            return MX
        fields = value.split(b"\0")
        if len(fields) == 2:
            return cls(fields[0], int(fields[1]))
        user, where, options = fields[4:] if len(fields) == 7 else (b"", b"", b"")
        relay, port, protocol, localip = fields[:4] if len(fields) in (4, 7) else ()  # else: rebuilt
        protocol = protocol.decode("ascii")
        if protocol not in PROTOCOLS:
            raise ValueError("bad protocol")
        return cls(relay, int(port), protocol, localip.decode("ascii") or None, user,
                   where.decode("ascii") or None, options)

    @property
    def auth(self):
        return self.where is not None


def _invalid(number, why, name="smtproutes"):
    return failures.ControlInvalid(name, "line %d: %s" % (number, why))


def _port(number, text, name):
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _invalid(number, "the port must be a number from 1 to 65535", name)
    return int(text)


def parse_enhanced(number, value, name):
    """s/qmail's `relay[;[s]port]|user|password|localip|options` -> (relay, port text or
    None, implicit TLS, user, password, localip, options): the syntax only, shared by
    qmtproutes, smtproutes and authsenders. Without ';' and '|' the whole value is the
    relay (stock syntax). s/qmail's own examples also write `relay||localip` (localip in
    the password's place): an IP address there with no user is taken as localip."""
    head, bar, tail = value.partition(b"|")
    relay, semicolon, port = head.partition(b";")
    if not semicolon and not bar:
        return relay, None, False, b"", b"", b"", b""
    parts = tail.split(b"|") if bar else []
    if len(parts) > 4:
        raise _invalid(number, "more than relay;port|user|password|localip|options", name)
    parts += [b""] * (4 - len(parts))
    user, password, localip, options = parts
    if not user and password and not localip:
        from .candidates import normal_ip

        if normal_ip(password.strip().decode("ascii", "replace")) is not None:
            password, localip = b"", password
    tls = port.startswith(b"s")
    return relay, (port[1:] if tls else port) or None, tls, user, password, localip, options


def _localip(number, text, name, interface=False):
    """The canonical text of a localip field (with %ifname kept when interface)."""
    from .candidates import normal_ip

    text = text.strip().decode("ascii", "replace")
    address, percent, ifname = text.partition("%")
    found = normal_ip(address)
    if found is None or (percent and not (interface and ifname and ifname.isprintable())):
        raise _invalid(number, "localip must be an IP address" + (" (%ifname allowed)" if interface else ""), name)
    return found[0] + percent + ifname


def _port_after(number, relay, port, name, route, semicolon):
    if port is not None or semicolon:
        after_host = relay.rpartition(b"]")[2] if relay.startswith(b"[") else relay
        if b":" in after_host:
            raise _invalid(number, "a port after ':' and after ';'", name)
        if port is not None:
            route.port = _port(number, port, name)


def parse_qmtp_relay(number, value):
    """A qmtproutes value: MX (empty: ask smtproutes) or a QMTP or QMTPS Route."""
    name = QMTPROUTES.name
    if not value:
        return MX
    relay, port, tls, user, password, localip, options = parse_enhanced(number, value, name)
    if user or password:
        raise _invalid(number, "QMTP has no AUTH: a user or password is not used here", name)
    if options:
        raise _invalid(number, "QMTP takes no options", name)
    if not relay:
        raise _invalid(number, "no relay host before the port", name)
    route = parse_relay(number, relay, name, QMTPS_PORT if tls else QMTP_PORT)
    _port_after(number, relay, port, name, route, b";" in value.partition(b"|")[0])
    route.protocol = QMTPS if tls or route.port == QMTPS_PORT else QMTP
    if localip:
        route.localip = _localip(number, localip, name)
    return route


def reference(name, number, line):
    """The credentials reference of line `number` of control/name (no secret in it)."""
    from .credentials import secretless

    return "%s:%d:%s" % (name, number, secretless(line).hex())


def parse_smtp_relay(number, value, name="smtproutes", line=b""):
    """An smtproutes or authsenders value: MX (empty) or a Route, stock or s/qmail's form."""
    if not value:
        return MX
    relay, port, tls, user, password, localip, options = parse_enhanced(number, value, name)
    if not relay:
        raise _invalid(number, "no relay host before the port", name)
    route = parse_relay(number, relay, name, SMTPS_PORT if tls else 25)
    _port_after(number, relay, port, name, route, b";" in value.partition(b"|")[0])
    if tls or route.port == SMTPS_PORT:
        route.protocol = SMTPS
    if localip:
        route.localip = _localip(number, localip, name)
    for option in filter(None, options.split(b",")):
        if option not in OPTIONS:
            raise _invalid(number, "unknown option %r (known: cleartext, xoauth2)" % option.decode("latin-1"), name)
    route.options = options
    if password and not user:
        raise _invalid(number, "a password without a user", name)
    if user and not password:
        raise _invalid(number, "a user without a password or file:PATH", name)
    if user:
        route.user = user
        route.where = reference(name, number, line)
    elif options:
        raise _invalid(number, "options without a user", name)
    return route


def parse_relay(number, relay, name="smtproutes", default_port=25):
    """The value part of a line: MX (empty) or a Route."""
    if not relay:
        return MX
    port = b"%d" % default_port
    if relay.startswith(b"["):
        close = relay.find(b"]")
        if close < 0:
            raise _invalid(number, "no ']' after '['", name)
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
        if routes is QMTPROUTES:
            table[key.lower()] = parse_qmtp_relay(number, relay)
        else:
            table[key.lower()] = parse_smtp_relay(number, relay, routes.name, line)
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


def route_for(host, sender=None):
    """The Route for a delivery of sender's mail to host, or MX (doc/smtproutes.html):
    1. an empty sender (a bounce): smtproutes' `!@` line, when there is one;
    2. authsenders: the sender, then @its domain, then the empty key (an empty relay
       there: none of authsenders' lines applies to this sender);
    3. qmtproutes by host (an empty relay there: go on);
    4. smtproutes by host; MX when nothing matched (also when no file exists).
    sender None: host only (3 and 4)."""
    if sender is not None:
        if sender == b"":
            route = exact_in(SMTPROUTES, BOUNCE_KEY)
            if route is not None:
                return route
        route = authsenders_route(sender)
        if route is not MX:
            return route
    route = route_in(QMTPROUTES, host)
    return route if route is not MX else route_in(SMTPROUTES, host)


def exact_in(routes, key):
    """The Route (or MX) of exactly key in one routes file, or None."""
    def lookup(get):
        value = None if get is None else get(key)
        return None if value is None else Route.decode(value)
    try:
        return lookup(load(routes=routes))
    except ValueError:  # cdbread.Corrupt or a value that does not decode: compile the text again
        return lookup(load(rebuild=True, routes=routes))


AUTHSENDERS, DOMAINIPS = "authsenders", "domainips"


def sender_keys(sender):
    """authsenders' keys for sender, most specific first: the address, @domain, empty."""
    sender = sender.lower()
    keys = [sender] if sender else []
    at = sender.rfind(b"@")
    if at >= 0:
        keys.append(sender[at:])
    return keys + [b""]


def parse_authsenders(lines):
    """(number, line) pairs of control/authsenders -> {lower-cased sender key: Route or MX}."""
    table = {}
    for number, line in lines:
        key, colon, value = line.partition(b":")
        if not colon:
            raise _invalid(number, "no ':' between sender and relay", AUTHSENDERS)
        table[key.lower()] = parse_smtp_relay(number, value.strip(b" \t"), AUTHSENDERS, line)
    return table


def authsenders_route(sender):
    """The authsenders Route for sender, or MX. The file is small and read as it is."""
    lines = control.read_lines(AUTHSENDERS)
    if not lines:
        return MX
    table = parse_authsenders(lines)
    for key in sender_keys(sender):
        if key in table:
            return table[key]
    return MX


def parse_domainips(lines):
    """control/domainips -> {lower-cased sender domain or b"*": (localip text or None, helohost or None)}."""
    table = {}
    for number, line in lines:
        key, colon, value = line.partition(b":")
        if not colon or not key:
            raise _invalid(number, "no 'domain:' before the address", DOMAINIPS)
        address, _, helohost = value.partition(b"|")
        if b"|" in helohost or b" " in helohost.strip():
            raise _invalid(number, "more than localip|helohost", DOMAINIPS)
        localip = _localip(number, address, DOMAINIPS, interface=True) if address.strip() else None
        table[key.lower()] = (localip, helohost.strip() or None)
    return table


def domainips_for(sender):
    """(localip, helohost) control/domainips gives sender's domain (or `*`), each maybe None."""
    lines = control.read_lines(DOMAINIPS)
    if not lines:
        return None, None
    table = parse_domainips(lines)
    domain = sender.rpartition(b"@")[2].lower()
    return table.get(domain) or table.get(b"*") or (None, None)


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
