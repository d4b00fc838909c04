"""SCRAM-SHA-256's ClientKey and ServerKey, kept between deliveries (doc/auth.html).

Their derivation (PBKDF2, 4096 or more rounds, with OpenSSL's _hashlib, whose loading alone
costs about 4.5 ms of CPU) is most of what SCRAM costs qmail-remote-io; for a given user,
password, salt and iteration count they never change. So they are kept in
run/qmail-remote/scram/ (paths.RUN; relative to the qmail home, the working directory
once credentials.read has run), mode 0700, one file per key, mode 0600:

  name     hex SHA-256 of the user, salt, iteration count and password, each length-prefixed
  content  ClientKey || ServerKey || the first 16 bytes of SHA-256(name || the keys) (80 bytes)

The check catches a damaged file (a crash without fsync, an edit by hand): it is taken as
absent, the keys derived again and the file replaced. A changed password or salt gives a
new name; old files are only unused (doc/auth.html: removed by age, or the whole
directory). Any error here means no cache, never a failed delivery. posix alone: os.py
costs about 1 ms of CPU.
"""

import posix

from . import runfile
from .smtp.auth import derived_keys, sha256_constructor

DIRECTORY = b"run/qmail-remote/scram"  # paths.RUN + "/scram" (paths.py would load os.py)
KEYS, CHECK = 64, 16
SIZE = KEYS + CHECK


def keys(user, secret, salt, count):
    """(ClientKey, ServerKey): from the cache when it holds them, else derived and kept."""
    sha256 = sha256_constructor()
    name = sha256(b"".join(b"%d:%s," % (len(field), field)
                           for field in (user, salt, b"%d" % count, secret))).hexdigest().encode()
    directory = open_directory()
    if directory is None:
        return derived_keys(user, secret, salt, count)
    try:
        kept = read(directory, name, sha256)
        if kept is not None:
            return kept[:32], kept[32:]
        client_key, server_key = derived_keys(user, secret, salt, count)
        content = client_key + server_key
        runfile.replace(directory, name, content + sha256(name + content).digest()[:CHECK])
        return client_key, server_key
    finally:
        posix.close(directory)


def open_directory():
    """A descriptor of the cache directory, made 0700 if absent; None when there is none to use."""
    flags = posix.O_RDONLY | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC
    try:
        posix.mkdir(DIRECTORY, 0o700)
    except OSError:
        pass  # there already (the usual case), or run/qmail-remote missing: open() says which
    try:
        fd = posix.open(DIRECTORY, flags)
    except OSError:
        return None
    try:
        if posix.fstat(fd).st_mode & 0o077:
            posix.fchmod(fd, 0o700)  # keys as good as the password: for the owner alone
        return fd
    except OSError:
        posix.close(fd)
        return None


def read(directory, name, sha256):
    """The kept keys, or None when the file is absent, not a regular file, or damaged."""
    import _stat

    try:
        fd = posix.open(name, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC,
                        dir_fd=directory)
    except OSError:
        return None
    try:
        st = posix.fstat(fd)
        if not _stat.S_ISREG(st.st_mode) or st.st_size != SIZE:
            return None
        data = posix.read(fd, SIZE + 1)
    except OSError:
        return None
    finally:
        posix.close(fd)
    if len(data) != SIZE or sha256(name + data[:KEYS]).digest()[:CHECK] != data[KEYS:]:
        return None
    return data[:KEYS]
