"""qmail-tcpto6: show run/qmail-remote/tcpto6, the IPv6 addresses that timed out recently.

Stock qmail-tcpto's twin for qremote's IPv6 table (stock qmail-tcpto shows the IPv4
one). Output as stock, one line per record with a count, on stdout:
  <address> timed out <seconds> seconds ago; # recent timeouts: <count>
Errors also go to stdout, as stock: `fatal: unable to ...: <reason>`, exit 111; else 0.
An admin tool, not run by qmail-rspawn: it writes no report stream.
"""

import _socket
import os
import time

from .. import paths, tcpto
from ..admintool import run, step


def listing(table, now):
    lines = []
    for address, count, when in tcpto.timed_out_entries(tcpto.IPV6, table):
        ip = _socket.inet_ntop(_socket.AF_INET6, address)
        lines.append(b"%s timed out %d seconds ago; # recent timeouts: %d\n" % (ip.encode(), now - when, count))
    return b"".join(lines)


def _step(what, call, *args):
    return step(b"unable to " + what, call, *args)


def show():
    _step(b"chdir", os.chdir, paths.qmailhome())
    path = tcpto.TCPTO6
    lock_fd = _step(b"open tcpto6", os.open, path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    read_fd = _step(b"open tcpto6", os.open, path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    _step(b"lock tcpto6", tcpto.lock, lock_fd)
    table = _step(b"read tcpto6", os.read, read_fd, tcpto.IPV6.table_size)
    os.close(read_fd)
    os.close(lock_fd)
    return listing(table, int(time.time()))


def main():
    run(show, b"fatal: ", 1)
