"""qmail-tcpok6: forget every recent IPv6 timeout: zero run/qmail-remote/tcpto6.

Stock qmail-tcpok's twin for qremote's IPv6 table (stock qmail-tcpok clears the IPv4
one). Under the exclusive lock, zeros are written over the whole file from offset 0;
the file is never truncated or created, and keeps its size (stock writes a fixed
1024 bytes: an empty file, which disables the mechanism, would come back enabled).
Silent on success (exit 0); errors on stderr as `qmail-tcpok6: fatal: ...`, exit 111.
An admin tool, not run by qmail-rspawn: it writes no report stream.
"""

import os

from .. import paths, tcpto
from ..admintool import run, step as _step

CHUNK = 65536


def zero(fd, size):
    """Write size zero bytes from offset 0 on fd."""
    os.lseek(fd, 0, os.SEEK_SET)
    while size > 0:
        size -= os.write(fd, bytes(min(size, CHUNK)))


def clear():
    home = paths.qmailhome()
    _step(b"unable to chdir to " + os.fsencode(home), os.chdir, home)
    full = os.fsencode(os.path.join(home, tcpto.TCPTO6))
    fd = _step(b"unable to write " + full, os.open, tcpto.TCPTO6,
               os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)  # never through a planted link
    _step(b"unable to lock " + full, tcpto.lock, fd)
    size = _step(b"unable to clear " + full, os.fstat, fd).st_size
    _step(b"unable to clear " + full, zero, fd, size)
    os.close(fd)
    return b""


def main():
    run(clear, b"qmail-tcpok6: fatal: ", 2)
