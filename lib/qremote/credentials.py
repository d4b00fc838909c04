"""The secret of an AUTH route, read by qmail-remote-io itself just before AUTH (and the
password of a domaincerts client key, read by tlsc-io: domaincert_password).

qmail-remote decides the route and passes only a reference, NAME:LINE:HEX (routes.reference):
the file (smtproutes or authsenders), the line number, and the line with its password field
emptied. Here the line is read again; if it is not the same line any more (an edit since the
delivery began), the delivery is deferred rather than a password sent to a relay it was not
written for. The password field is the secret itself (s/qmail's inline form), or
`file:PATH`: a credentials file (PATH relative to the qmail home), whose first line is the
password, or the bearer token of an `xoauth2` route. A credentials file must be a regular
file no other user can read (mode 0600 or 0640): a world-readable one is refused. A
relative PATH is taken from the qmail home.

So no secret is in any argv, environment, report, or the smtproutes cdb. Imported only by a
delivery with AUTH.
"""

import posix as os

from . import failures

MAX_FILE = 1 << 20  # as control.MAX_SIZE


def read(reference):
    """(user, secret, options) of reference; CredentialsUnusable when they cannot be had."""
    name, _, rest = reference.partition(":")
    number, _, pinned = rest.partition(":")
    where = "control/%s line %s" % (name, number)
    if name not in ("smtproutes", "authsenders") or not number.isdigit():
        raise failures.CredentialsUnusable("the reference " + reference[:60], "not NAME:LINE:HEX")
    lines = read_lines(where, name)
    line = dict(lines).get(int(number))
    if line is None or secretless(line).hex() != pinned:
        raise failures.CredentialsUnusable(where, "the line changed since this delivery began")
    fields = line.partition(b":")[2].partition(b"|")[2].split(b"|")
    user, secret = fields[0], fields[1]
    options = fields[3] if len(fields) > 3 else b""
    if secret.startswith(b"file:"):
        secret = from_file(where, secret[5:])
    return user, secret, set(options.split(b","))


def read_lines(where, name):
    """control.read_lines(name) with posix alone: os.py, stat and paths.py cost qmail-remote-io
    about 2 ms of CPU. In a delivery qmail-remote has made the qmail home the working
    directory; by hand (no control/ here) paths.py says where it is."""
    try:
        os.stat("control")
    except OSError:
        from . import paths

        try:
            os.chdir(paths.qmailhome())
        except OSError:
            raise failures.NoHome() from None
    data = read_file(where, ("control/" + name).encode(), private=False)
    if data is None:
        raise failures.CredentialsUnusable(where, "control/%s does not exist" % name)
    return [(number, line.rstrip(b" \t\r")) for number, line in enumerate(data.split(b"\n"), 1)]


def secretless(line):
    """A route line with its password field emptied: what a credentials reference pins
    (qmail-remote-io reads the line again and finds the secret only if this matches)."""
    key, colon, value = line.partition(b":")
    head, bar, tail = value.partition(b"|")
    if not bar:
        return line
    parts = tail.split(b"|")
    if len(parts) > 1:
        parts[1] = b""
    return key + colon + head + bar + b"|".join(parts)


def from_file(where, path):
    secret = read_file(where, path, private=True).split(b"\n", 1)[0].rstrip(b"\r")
    if not secret:
        raise failures.CredentialsUnusable(where, "%s has an empty first line" % path.decode("latin-1"))
    return secret


def read_file(where, path, private):
    """The content of a regular file (None when a control file does not exist); private:
    a credentials file, refused when every user may read it."""
    import _stat

    shown = path.decode("latin-1")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if not private:
            return None
        raise failures.CredentialsUnusable(where, "%s: No such file or directory" % shown) from None
    except OSError as error:
        raise failures.CredentialsUnusable(where, "%s: %s" % (shown, error.strerror)) from None
    try:
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode):
            raise failures.CredentialsUnusable(where, "%s is not a regular file" % shown)
        if private and st.st_mode & 0o007:
            raise failures.CredentialsUnusable(where, "%s can be read by every user (chmod 0600 or 0640)" % shown)
        chunks = []
        while sum(map(len, chunks)) <= MAX_FILE:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as error:
        raise failures.CredentialsUnusable(where, "%s: %s" % (shown, error.strerror)) from None
    finally:
        os.close(fd)


def domaincert_password(reference):
    """The password of a client key, for tlsc-io's -p domaincerts:LINE:HEX (None when the
    line gives none): the line `senderdomain:certificate|keyfile|password` read again and
    pinned as an AUTH route's is, the password inline or `file:PATH`."""
    name, _, rest = reference.partition(":")
    number, _, pinned = rest.partition(":")
    where = "control/%s line %s" % (name, number)
    if name != "domaincerts" or not number.isdigit():
        raise failures.CredentialsUnusable("the reference " + reference[:60], "not domaincerts:LINE:HEX")
    line = dict(read_lines(where, name)).get(int(number))
    if line is None or secretless(line).hex() != pinned:
        raise failures.CredentialsUnusable(where, "the line changed since this delivery began")
    fields = line.partition(b":")[2].split(b"|")
    secret = fields[2] if len(fields) > 2 else b""
    if secret.startswith(b"file:"):
        secret = from_file(where, secret[5:])
    return secret or None
