"""DANE-TA trust anchors kept between deliveries (doc/dane.html#tacache).

Checking a usage 2 record the first time takes cryptography's X.509 verifier (about 110 ms
of CPU, nearly all of it its import). Once a chain verified to the certificate matching
the record, that certificate is kept in run/qmail-remote/dane-ta/ (relative to the working
directory: the qmail home in a delivery; absent, e.g. by hand elsewhere: no cache), one
file per record, its DER alone:

  name     2-S-M-HEX: the record's selector, matching type and data in lowercase hex
           (matching type 0, the data itself: the hex SHA-256 of the data, for a bounded name)

Next time OpenSSL verifies the chain to it during the handshake (tls/context.py). A file
is used only when its certificate matches its record again (the selector and digest are
recomputed): a damaged, tampered or stale file is ignored, and the cold path runs and
replaces it. Any error here means no cache, never a failed delivery. posix alone: os.py
costs about 1 ms of CPU.
"""

import posix

from . import dane
from .. import runfile

DIRECTORY = b"run/qmail-remote/dane-ta"  # paths.RUN + "/dane-ta" (paths.py would load os.py)
MAX_SIZE = 1 << 16  # no trust anchor is near this: a bigger file is no anchor of ours


def name(record):
    """The file name (bytes) of a usage 2 record (usage, selector, mtype, data)."""
    usage, selector, mtype, data = record
    shown = dane.digest("sha256", bytes(data)) if mtype == 0 else bytes(data)
    return b"%d-%d-%d-%s" % (usage, selector, mtype, shown.hex().encode("ascii"))


def _open_directory():
    try:
        return posix.open(DIRECTORY, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC)
    except OSError:
        return None


def anchors(records):
    """The kept anchors (DER list) for records when every one is usage 2 and has a kept
    certificate matching it; None otherwise (the cold path)."""
    if not records or any(record[0] != 2 for record in records):
        return None
    directory = _open_directory()
    if directory is None:
        return None
    try:
        found = []
        for record in records:
            der = _read(directory, name(record))
            if der is None or not dane.record_matches(record, der):
                return None
            if der not in found:
                found.append(der)
        return found
    finally:
        posix.close(directory)


def _read(directory, filename):
    import _stat

    try:
        fd = posix.open(filename, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC,
                        dir_fd=directory)
    except OSError:
        return None
    try:
        st = posix.fstat(fd)
        if not _stat.S_ISREG(st.st_mode) or not 0 < st.st_size <= MAX_SIZE:
            return None
        data = posix.read(fd, MAX_SIZE + 1)
    except OSError:
        return None
    finally:
        posix.close(fd)
    return data if 0 < len(data) <= MAX_SIZE else None


def keep(records, anchor):
    """After the cold path verified a chain to anchor (DER): keep it under each usage 2 record
    it matches. Failures change nothing."""
    anchor = bytes(anchor)
    if not anchor or len(anchor) > MAX_SIZE:
        return
    directory = _open_directory()
    if directory is None:
        return
    try:
        for record in records:
            if record[0] == 2 and dane.record_matches(record, anchor):
                runfile.replace(directory, name(record), anchor)
    finally:
        posix.close(directory)
