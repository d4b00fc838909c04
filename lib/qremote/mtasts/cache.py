"""The MTA-STS policy cache: run/qmail-remote/mta-sts/, one file per policy domain.

Relative to the qmail home (the working directory of a delivery). Names in the directory:
  <domain>           the entry: the last good policy and the last failed fetch
  <domain>=lock      flock'ed by the one delivery fetching that domain's policy
  <domain>=tmp.*     an entry being written (O_EXCL), renamed over <domain>
"=" is in no domain name, so these never collide; anything else is ignored by `list`.

An entry (bytes, at most MAX_ENTRY):
  qremote-mta-sts 1\n
  fetched <unix seconds>\n            when the policy below was fetched (0: no policy)
  id <TXT id>\n                       the TXT record's id it was fetched for ("-": none)
  failed <unix seconds> <id> <why>\n  the last failed fetch since (optional)
  \n
  <the policy text, as served>
The policy is parsed again on every read (a few microseconds), so a file edited or
damaged by hand is never trusted beyond what policy.parse_policy accepts; an entry that
does not parse at all counts as absent.

Safety, as scramcache.py and tcpto6: the directory is opened O_DIRECTORY|O_NOFOLLOW
and used through its fd; files are opened O_NOFOLLOW|O_NONBLOCK (a symlink, a FIFO
planted there is refused, never followed), checked to be regular files and read with a
size cap; written to an O_EXCL temporary and renamed. Run by root (the admin command,
or a test by hand), what is created gets the owner of run/qmail-remote, so deliveries
(qmailr) can still replace it. Any OSError means "no cache", never a failed delivery.
"""

import fcntl
import os
import time

from .policy import Invalid, parse_policy, valid_domain

DIRECTORY = "run/qmail-remote/mta-sts"
MAX_ENTRY = 65536 + 4096  # the RFC's 64 KiB policy and the header
MAGIC = b"qremote-mta-sts 1"


class Entry:
    """What the cache holds for a domain: policy (Policy or None), and the last failure."""

    __slots__ = ("policy", "failed_at", "failed_id", "failure")

    def __init__(self, policy=None, failed_at=0, failed_id="", failure=""):
        self.policy, self.failed_at, self.failed_id, self.failure = policy, failed_at, failed_id, failure


def normal_domain(domain):
    """The policy domain as the cache names it (lowercase ASCII, no final dot), or None."""
    if isinstance(domain, str):
        try:
            domain = domain.encode("ascii")
        except UnicodeEncodeError:
            return None
    domain = bytes(domain).lower()
    if domain.endswith(b"."):
        domain = domain[:-1]
    return domain.decode("ascii") if valid_domain(domain) else None


# --- the entry codec ----------------------------------------------------------------------

def encode(entry):
    policy = entry.policy
    head = [MAGIC, b"fetched %d" % (policy.fetched_at if policy else 0),
            b"id %s" % ((policy.id or "-").encode() if policy else b"-")]
    if entry.failed_at:
        why = " ".join(entry.failure.split())[:200].encode("utf-8", "replace")
        head.append(b"failed %d %s %s" % (entry.failed_at, (entry.failed_id or "-").encode(), why))
    body = policy.text.encode("utf-8") if policy else b""
    return b"\n".join(head) + b"\n\n" + body


def decode(data):
    """The Entry in data, or None when it is not one."""
    head, blank, body = data.partition(b"\n\n")
    lines = head.split(b"\n")
    if not blank or lines[0] != MAGIC or len(lines) < 3:
        return None
    try:
        fetched = lines[1].split(b" ")
        record = lines[2].split(b" ")
        if fetched[0] != b"fetched" or record[0] != b"id" or len(fetched) != 2 or len(record) != 2:
            return None
        entry = Entry()
        fetched_at = int(fetched[1])
        if fetched_at:
            policy_id = record[1].decode("ascii")
            entry.policy = parse_policy(body, "" if policy_id == "-" else policy_id, fetched_at)
        for line in lines[3:]:
            word, _, rest = line.partition(b" ")
            if word == b"failed":
                when, _, rest = rest.partition(b" ")
                failed_id, _, why = rest.partition(b" ")
                entry.failed_at, entry.failure = int(when), why.decode("utf-8", "replace")
                entry.failed_id = "" if failed_id == b"-" else failed_id.decode("ascii")
        return entry
    except (ValueError, UnicodeDecodeError, Invalid):
        return None


# --- the directory ------------------------------------------------------------------------

def open_directory(create=True):
    """(directory fd, owner for new files or None), or None: no cache to use."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    owner = None
    if os.geteuid() == 0:  # by hand: what we create must stay replaceable by qmailr
        try:
            st = os.stat(os.path.dirname(DIRECTORY), follow_symlinks=False)
            owner = st.st_uid, st.st_gid
        except OSError:
            return None
    if create:
        try:
            os.mkdir(DIRECTORY, 0o755)
        except FileExistsError:
            pass
        except OSError:
            return None  # run/qmail-remote missing or not ours: no cache
        else:
            if owner is not None:
                try:
                    os.chown(DIRECTORY, *owner, follow_symlinks=False)
                except OSError:
                    pass
    try:
        fd = os.open(DIRECTORY, flags)
    except OSError:
        return None
    return fd, owner


def read(directory, domain):
    """The Entry kept for domain, or None (absent, not a regular file, too big, damaged)."""
    import _stat

    try:
        fd = os.open(domain, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode) or st.st_size > MAX_ENTRY:
            return None
        data = b""
        while len(data) <= MAX_ENTRY:
            chunk = os.read(fd, MAX_ENTRY + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        os.close(fd)
    return decode(data) if len(data) <= MAX_ENTRY else None


def write(directory, owner, domain, entry):
    """Atomically (an O_EXCL temporary renamed over the name: a link there is replaced,
    never followed). Whether it was written."""
    content = encode(entry)
    if len(content) > MAX_ENTRY:
        return False
    temporary = "%s=tmp.%d.%s" % (domain, os.getpid(), os.urandom(6).hex())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temporary, flags, 0o644, dir_fd=directory)
    except OSError:
        return False
    try:
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(temporary, domain, src_dir_fd=directory, dst_dir_fd=directory)
        return True
    except OSError:
        try:
            os.unlink(temporary, dir_fd=directory)
        except OSError:
            pass
        return False


def lock(directory, owner, domain, deadline):
    """A descriptor of <domain>=lock, flock'ed; None if not got by deadline (time.monotonic)
    or on any error. Closing it releases the lock."""
    name = domain + "=lock"
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    import _stat

    try:
        try:
            fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=directory)
            if owner is not None:
                os.fchown(fd, *owner)
        except FileExistsError:
            fd = os.open(name, flags, dir_fd=directory)
    except OSError:
        return None
    try:
        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        pause = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    os.close(fd)
                    return None
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.05)
    except OSError:
        os.close(fd)
        return None


def domains(directory):
    """The domains with an entry (sorted)."""
    names = os.listdir(directory)
    return sorted(name for name in names if "=" not in name and normal_domain(name) == name)


def purge(directory, domain):
    """Remove domain's entry and lock; whether there was an entry."""
    found = False
    for name in (domain, domain + "=lock"):
        try:
            os.unlink(name, dir_fd=directory)
            found = found or name == domain
        except FileNotFoundError:
            pass
    return found
