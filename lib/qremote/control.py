"""The one reader of control files (relative to the qmail home, as stock).

Stock rules kept: a missing file means "use the default"; any other error reading it
is a temporary failure; single-value files use their first line only, with trailing
spaces and tabs removed; list files skip empty lines and lines starting with '#'.

Where stock is silent or unsafe, the rules here: a trailing CR is removed too (files
edited with CRLF line ends), a value holding another control byte is refused (it
would go on the wire), a number must be all digits (stock takes a digit prefix and
silently ignores garbage), and a file larger than MAX_SIZE is refused. Each refusal
is a Z naming the file, so the message waits while the admin fixes it.
"""

import os
import stat

from . import failures
from .paths import CONTROL

MAX_SIZE = 1 << 20
MAX_SECONDS = 10 ** 7  # larger values are clamped: a timeout of 115 days is "forever"


def read_bytes(name):
    """The whole content of control/name, or None if it does not exist."""
    path = os.path.join(CONTROL, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise failures.ControlUnreadable(name, error.strerror) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # a FIFO or device would read as empty, or forever
            raise failures.ControlUnreadable(name, "Is a directory" if stat.S_ISDIR(mode) else "not a regular file")
        chunks = []
        size = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_SIZE:
                raise failures.ControlInvalid(name, "larger than %d bytes" % MAX_SIZE)
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as error:
        raise failures.ControlUnreadable(name, error.strerror) from None
    finally:
        os.close(fd)


def _no_controls(name, value):
    if any(c < 32 and c != 9 for c in value) or b"\x7f" in value:
        raise failures.ControlInvalid(name, "it holds a control character")
    return value


def read_line(name):
    """The first line of control/name, trailing blanks removed; None if absent."""
    data = read_bytes(name)
    if data is None:
        return None
    return _no_controls(name, data.split(b"\n", 1)[0].rstrip(b" \t\r"))


def read_number(name, default, what="a number of seconds"):
    """An unsigned decimal; the default when the file is absent or empty. what: what the
    file should hold, for the error text."""
    line = read_line(name)
    if not line:
        return default
    if not line.isdigit():
        raise failures.ControlInvalid(name, "%r is not %s" % (line.decode("latin-1"), what))
    return min(int(line), MAX_SECONDS)


def switch(name):
    """A feature's on/off file (control/dane, control/mtasts): 0 turns it off; absent, empty
    or another number: on; not a number: a Z naming the file."""
    return read_number(name, 1, "0 (off) or 1 (on)") != 0


def read_lines(name):
    """The meaningful lines of a list file, with their line numbers; None if absent."""
    data = read_bytes(name)
    if data is None:
        return None
    lines = []
    for number, line in enumerate(data.split(b"\n"), 1):
        line = line.rstrip(b" \t\r")
        if line and not line.startswith(b"#"):
            lines.append((number, _no_controls(name, line)))
    return lines


class Controls:
    """What qmail-remote needs from control/, read once, in stock's order.

    A network wait is always bounded: timeoutremote and timeoutconnect 0 are taken as
    1 second (stock would time out at once, or with some code paths never).
    timeoutopening bounds the whole opening over all addresses (plan.py); its default,
    OPENING_FACTOR times timeoutremote, still leaves room to try a second and a third
    MX after a first one that accepts connections and never greets."""

    OPENING_FACTOR = 3

    __slots__ = ("timeoutremote", "timeoutconnect", "timeoutopening", "helohost", "timeoutdns", "outgoingip")

    def __init__(self, timeoutremote, timeoutconnect, helohost, timeoutdns=0, outgoingip=None, timeoutopening=None):
        self.timeoutremote = max(1, timeoutremote)
        self.timeoutconnect = max(1, timeoutconnect)
        self.timeoutopening = max(1, timeoutopening or self.OPENING_FACTOR * self.timeoutremote)
        self.helohost = helohost
        self.timeoutdns = timeoutdns  # seconds per DNS stage; 0: only the resolver's overall cap
        self.outgoingip = outgoingip or {}  # family -> local source address (connect.race's sources)

    @classmethod
    def load(cls):
        me = read_line("me")
        timeoutremote = read_number("timeoutremote", 1200)
        timeoutconnect = read_number("timeoutconnect", 60)
        helohost = read_line("helohost") or me  # stock would say "HELO " for an empty file
        if not helohost:
            raise failures.NoHelohost()
        timeoutdns = read_number("timeoutdns", 0)
        timeoutopening = read_number("timeoutopening", 0)
        return cls(timeoutremote, timeoutconnect, helohost, timeoutdns, outgoing_addresses(), timeoutopening)


def outgoing_addresses():
    """control/outgoingip: {family: address} of the local source addresses to bind.

    One address a line, at most one IPv4 and one IPv6; each is bound for connections
    of its family, the kernel chooses for the other. Absent or empty: {} (the kernel
    chooses). Anything else is a Z naming the file and the line.
    """
    found = {}
    for number, ip, family in read_addresses("outgoingip") or ():
        if family in found:
            raise failures.ControlInvalid("outgoingip", "line %d: a second address of the same family" % number)
        found[family] = ip
    return found


def read_addresses(name):
    """control/name as one IP address a line: [(line number, ip, family)], None if absent."""
    lines = read_lines(name)
    return None if lines is None else parse_addresses(name, lines)


def parse_addresses(name, lines):
    """[(line number, ip, family)] of read_lines' lines; a line that is not an address is
    a Z naming the file and the line."""
    from .candidates import normal_ip
    addresses = []
    for number, line in lines:
        address = normal_ip(line.strip(b" \t").decode("latin-1"))
        if address is None:
            raise failures.ControlInvalid(name, "line %d is not an IPv4 or IPv6 address" % number)
        addresses.append((number, address[0], address[1]))
    return addresses



def tls_policy():
    """The STARTTLS policy from trustanchors, tlsstrictness, clientcert, clientkey.

    Without trustanchors (missing, empty, or only a newline) STARTTLS is never tried
    and the other three files are not read. The files they name must be readable now:
    a typo gives a Z naming it before any connection, not a failed handshake later.
    """
    from .plan import Policy

    anchors = read_line("trustanchors")
    if not anchors:
        return Policy()
    strictness = read_number("tlsstrictness", 0, "0, 1 or 2")
    if strictness > 2:
        raise failures.ControlInvalid("tlsstrictness", "%d is not 0, 1 or 2" % strictness)
    clientcert = read_line("clientcert") or None
    clientkey = read_line("clientkey") or None
    if clientkey and not clientcert:
        raise failures.ControlInvalid("clientkey", "there is no control/clientcert to go with it")
    for name, path in (("trustanchors", anchors), ("clientcert", clientcert), ("clientkey", clientkey)):
        if path is None:
            continue
        try:
            # open, not listdir: /etc/ssl/certs/ holds hundreds of names, read at every delivery
            os.close(os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.endswith(b"/") else 0)))
        except OSError as error:
            raise failures.TLSFileUnusable(name, path, error.strerror) from None
    return Policy(strictness, anchors, clientcert, clientkey)
