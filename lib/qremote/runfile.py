"""One file of a run/qmail-remote cache replaced atomically: the write every cache of the
chain (scramcache, tlsmemory, tls/tacache) shares. posix alone: imported by qmail-remote-io
and tlsc-io, which do without os.py."""

import posix


def replace(directory, name, content):
    """A new file beside name in directory (a descriptor), renamed over whatever is there (a
    damaged file, a symlink: rename replaces the link, never writes through it). A failure
    leaves what was there and no temporary file. No fsync: every cache is derived again."""
    temporary = b"tmp.%d.%s" % (posix.getpid(), posix.urandom(6).hex().encode())
    flags = posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW | posix.O_CLOEXEC
    try:
        fd = posix.open(temporary, flags, 0o600, dir_fd=directory)
    except OSError:
        return
    try:
        try:
            written = posix.write(fd, content)
        finally:
            posix.close(fd)
        if written == len(content):
            posix.rename(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
            return
    except OSError:
        pass
    try:
        posix.unlink(temporary, dir_fd=directory)
    except OSError:
        pass
