"""TLS downgrade memory (doc/tlsmemory.html): which MX hosts did TLS, and when.

control/tlsmemory holds a number of days (default 0: off). After a K over TLS,
qmail-remote-io records the server's name (tlsc-io's SSL_TLS_SNI_SERVERNAME: the MX host,
or the route's relay; an address has no name and is not remembered) in
run/qmail-remote/tlsmemory/ (paths.RUN; relative to the qmail home, the working
directory of the chain), one file per host, mode 0600 in a 0700 directory:

  name     the host name, lower case, without a final dot (letters, digits, '-', '.')
  content  LEVEL SECONDS\\n: "verified" or "encrypted", and the time of the delivery

remembered(name, now, days) is what qmail-remote asks: a host recorded less than `days`
days ago must not lose TLS (the TLS rule's "must", origin "memory").

Safe files as scramcache.py: the directory opened O_NOFOLLOW, every file opened
O_NOFOLLOW relative to it, written as a new file renamed over the old one; a file is at
most MAX_SIZE bytes and is taken as absent when it is not a regular file or not in the
format; at most MAX_ENTRIES hosts (a new one beyond that is not recorded). A host is
written again only when its level changed or its date is a day old, so a busy
destination costs one rename a day. Any error here means "not remembered", never a
failed delivery. posix alone: os.py costs about 1 ms of CPU.
"""

import posix

from . import runfile

DIRECTORY = b"run/qmail-remote/tlsmemory"  # paths.RUN + "/tlsmemory"
CONTROL = b"control/tlsmemory"
LEVELS = (b"verified", b"encrypted")
MAX_SIZE = 64
MAX_ENTRIES = 10000
DAY = 86400
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-.")


def host_name(name):
    """The file name for a host name (bytes or str), or None when it is none."""
    if isinstance(name, str):
        name = name.encode("ascii", "replace")
    name = name.lower().rstrip(b".")
    if not 0 < len(name) <= 253 or not _NAME_BYTES.issuperset(name) or name.startswith(b".") or b".." in name:
        return None
    if name.replace(b".", b"").isdigit():  # an IPv4 address is no host name
        return None
    return name


def configured_days():
    """control/tlsmemory: days (0 when absent, empty or not a number: off)."""
    try:
        fd = posix.open(CONTROL, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
    except OSError:
        return 0
    try:
        line = posix.read(fd, 64).split(b"\n", 1)[0].strip(b" \t\r")
    except OSError:
        return 0
    finally:
        posix.close(fd)
    return min(int(line), 100000) if line.isdigit() else 0


def open_directory(create=False):
    """A descriptor of the memory's directory, or None."""
    if create:
        try:
            posix.mkdir(DIRECTORY, 0o700)
        except OSError:
            pass  # there already, or run/qmail-remote missing: open() says which
    try:
        return posix.open(DIRECTORY, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC)
    except OSError:
        return None


def read(directory, name):
    """(level bytes, seconds) of host file name, or None (absent, not a regular file, damaged)."""
    import _stat

    try:
        fd = posix.open(name, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC,
                        dir_fd=directory)
    except OSError:
        return None
    try:
        if not _stat.S_ISREG(posix.fstat(fd).st_mode):
            return None
        data = posix.read(fd, MAX_SIZE + 1)
    except OSError:
        return None
    finally:
        posix.close(fd)
    fields = data.split(b" ")
    if len(data) > MAX_SIZE or not data.endswith(b"\n") or len(fields) != 2 or fields[0] not in LEVELS:
        return None
    when = fields[1][:-1]
    return (fields[0], int(when)) if when.isdigit() else None


def date(seconds):
    import time

    return "%04d-%02d-%02d" % time.gmtime(seconds)[:3]


def remembered(name, now, days):
    """(level, date) when host name did TLS less than days days before now (seconds since
    the epoch): level "verified" or "encrypted", date "YYYY-MM-DD" (UTC); else None."""
    name = host_name(name)
    if days <= 0 or name is None:
        return None
    directory = open_directory()
    if directory is None:
        return None
    try:
        found = read(directory, name)
    finally:
        posix.close(directory)
    if found is None or not now - days * DAY < found[1] <= now + DAY:
        return None
    return found[0].decode("ascii"), date(found[1])


def reason(name, found):
    """What a Z says of a remembered host (found: remembered()'s answer), for the lead's
    TLS rule: e.g. "mx.example.org did verified TLS on 2026-12-07 (control/tlsmemory)"."""
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return "%s did %s TLS on %s (control/tlsmemory)" % (name.rstrip("."), found[0], found[1])


def record(name, verified, now):
    """After a K over TLS with host name: keep its level and now (seconds)."""
    name = host_name(name)
    if name is None:
        return
    level = LEVELS[0] if verified else LEVELS[1]
    directory = open_directory(create=True)
    if directory is None:
        return
    try:
        found = read(directory, name)
        if found is not None and found[0] == level and 0 <= now - found[1] < DAY:
            return  # recorded today: no write
        if found is None and len(posix.listdir(directory)) >= MAX_ENTRIES:
            return
        runfile.replace(directory, name, b"%s %d\n" % (level, now))
    except OSError:
        pass
    finally:
        posix.close(directory)


def after_delivery(environ):
    """qmail-remote-io after its K over TLS (environ: tlsc-io's SSL_* variables)."""
    try:
        name = environ.get(b"SSL_TLS_SNI_SERVERNAME")
        if name and configured_days() > 0:
            import time

            record(name, environ.get(b"SSL_PEER_VERIFIED") == b"1", int(time.time()))
    except Exception:  # noqa: BLE001 - the message is delivered: memory is never worth a report
        pass


def entries(directory):
    """[(name, level, seconds)] of every host file, sorted by name (the command's list)."""
    found = []
    for name in sorted(name.encode("ascii", "replace") for name in posix.listdir(directory)):
        if host_name(name) == name:
            kept = read(directory, name)
            if kept is not None:
                found.append((name, kept[0], kept[1]))
    return found


def forget(directory, name):
    """Remove host name's entry; False when there was none."""
    try:
        posix.unlink(name, dir_fd=directory)
        return True
    except FileNotFoundError:
        return False
