"""qmail-tlsmemory list | forget HOST | forget all: the TLS downgrade memory (doc/tlsmemory.html).

list: one line per remembered host, `HOST LEVEL YYYY-MM-DD`, with " (expired)" when it is
older than control/tlsmemory's days (or the memory is off). forget HOST / forget all:
remove the host's entry / every entry, and say how many went. As the other admin tools:
`fatal: unable to ...: reason` on stdout and exit 111; a wrong command line: usage, exit 100.
"""

import os
import sys
import time

from .. import paths, tlsmemory
from ..admintool import Fatal, run, step, write_all

USAGE = b"usage: qmail-tlsmemory list | forget HOST | forget all\n"


def valid(args):
    return args == ["list"] or (len(args) == 2 and args[0] == "forget")


def command(args):
    step(b"unable to chdir", os.chdir, paths.qmailhome())
    if args == ["list"]:
        return listing(int(time.time()), tlsmemory.configured_days())
    return forget(args[1])


def directory():
    fd = tlsmemory.open_directory()
    if fd is None:
        raise Fatal(b"unable to open %s: no such directory, or not one\n" % tlsmemory.DIRECTORY)
    return fd


def listing(now, days):
    fd = directory()
    try:
        found = step(b"unable to read " + tlsmemory.DIRECTORY, tlsmemory.entries, fd)
    finally:
        os.close(fd)
    lines = []
    for name, level, when in found:
        old = tlsmemory.remembered(name, now, days) is None
        lines.append(b"%s %s %s%s\n" % (name, level, tlsmemory.date(when).encode(), b" (expired)" if old else b""))
    return b"".join(lines)


def forget(host):
    fd = directory()
    try:
        if host == "all":
            names = [name for name, _, _ in step(b"unable to read " + tlsmemory.DIRECTORY, tlsmemory.entries, fd)]
        else:
            name = tlsmemory.host_name(host)
            if name is None:
                raise Fatal(b"unable to forget %s: not a host name\n" % host.encode("utf-8", "replace"))
            names = [name]
        gone = sum(step(b"unable to remove " + name, tlsmemory.forget, fd, name) for name in names)
    finally:
        os.close(fd)
    return b"forgot %d host%s\n" % (gone, b"" if gone == 1 else b"s")


def main():
    if not valid(sys.argv[1:]):
        write_all(1, USAGE)
        os._exit(100)
    run(lambda: command(sys.argv[1:]), b"fatal: ", 1)
