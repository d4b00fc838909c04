"""Sans-IO QMTP client (D. J. Bernstein's qmtp.txt, 19970201): the package around the
message, and the replies parsed with bounded sizes. No I/O here: the shell
(programs/qmail_remote_qmtp.py) writes head(), then the message bytes as they are,
then tail(), and feeds what it reads to Replies.

The package (qmtp.txt section 4) is three strings, one after the other, not a
netstring of its own:
  netstring("\\n" + message)   encoding #2: <0a> then the lines with LF ends, which is
                               a qmail queue file as it is: no dot-stuffing, no CRLF
  netstring(sender)            the envelope sender as qmail-remote got it ("" = bounce)
  netstring(netstring(recipient) netstring(recipient) ...)
A netstring is LEN ":" STRING "," with LEN in decimal without leading zeros, so the
message's length must be known before its first byte goes out: the shell takes it
from fstat() of a regular file.

Replies (section 5): one netstring per recipient, in order, each "K", "Z" or "D" and a
description. Anything else is a protocol violation, which the shell reports as a
temporary failure: a length with a non-digit or a leading zero, a length over
MAX_REPLY (known from its digits, before its bytes are read), an empty reply, a
missing ",", a first byte other than K/Z/D, bytes beyond the last expected reply.
"""

MAX_REPLY = 2048  # bytes of one reply: qmail-qmtpd's are below 100
_MAX_DIGITS = len(str(MAX_REPLY))
ACCEPTED, TEMPORARY, PERMANENT = b"K", b"Z", b"D"


def netstring(data):
    return b"%d:%s," % (len(data), data)


def head(size):
    """What precedes a message of size bytes (LF line ends) in the package."""
    return b"%d:\n" % (size + 1)


def tail(sender, recipients):
    """What follows the message: the end of its netstring, the sender, the recipients.
    Its last byte is the package's last byte (section 2: the server answers after it)."""
    return b"," + netstring(sender) + netstring(b"".join(netstring(r) for r in recipients))


class ProtocolError(Exception):
    """The server broke QMTP's reply format; str() says how (our words, no server bytes)."""


class Reply:
    __slots__ = ("letter", "text")

    def __init__(self, letter, text):
        self.letter, self.text = letter, text  # text: the description, raw server bytes

    @property
    def ok(self):
        return self.letter == ACCEPTED

    def __repr__(self):
        return "Reply(%r, %r)" % (self.letter, self.text)


class Replies:
    """Parses the replies to one package of `expected` recipients, fed in any pieces."""

    def __init__(self, expected):
        self.expected = expected
        self.replies = []     # Reply objects, in order
        self._buffer = b""

    @property
    def complete(self):
        return len(self.replies) == self.expected

    def feed(self, data):
        """Take data; returns the Replies completed by it (bytes after the last expected
        one are kept for finish()). ProtocolError on any violation."""
        self._buffer += data
        done = []
        while self._buffer and not self.complete:
            reply = self._one()
            if reply is None:
                break
            done.append(reply)
            self.replies.append(reply)
        return done

    def _one(self):
        buffer = self._buffer
        colon = buffer.find(b":", 0, _MAX_DIGITS + 1)
        digits = buffer[:colon] if colon >= 0 else buffer[:_MAX_DIGITS + 1]
        if colon == 0 or (digits and not digits.isdigit()):
            raise ProtocolError("a reply length that is not a number")
        if len(digits) > 1 and digits[:1] == b"0":
            raise ProtocolError("a reply length with a leading zero")
        if digits and int(digits) > MAX_REPLY:
            raise ProtocolError("a reply longer than %d bytes" % MAX_REPLY)
        if colon < 0:
            return None  # the length is still coming
        length = int(digits)
        if length == 0:
            raise ProtocolError("an empty reply")
        end = colon + 1 + length
        if len(buffer) <= end:
            # the first byte is checked as soon as it is there: a long wrong reply fails early
            if len(buffer) > colon + 1 and buffer[colon + 1:colon + 2] not in (ACCEPTED, TEMPORARY, PERMANENT):
                raise ProtocolError("a reply that is not K, Z or D")
            return None
        if buffer[end:end + 1] != b",":
            raise ProtocolError("a reply without its ','")
        body = buffer[colon + 1:end]
        letter = body[:1]
        if letter not in (ACCEPTED, TEMPORARY, PERMANENT):
            raise ProtocolError("a reply that is not K, Z or D")
        self._buffer = buffer[end + 1:]
        return Reply(letter, body[1:])

    def finish(self, data=b""):
        """After the last expected reply: ProtocolError if any byte more came (data: what
        the shell finds already there)."""
        if self._buffer or data:
            raise ProtocolError("more replies than recipients")

    @property
    def partial(self):
        """Bytes of a reply begun but not finished (a drop there is "mid-reply")."""
        return bool(self._buffer)

    def accepted(self):
        return sum(1 for r in self.replies if r.ok)
