"""Message bytes -> DATA bytes (SMTP transparency), chunk by chunk, in bounded memory.

The message as qmail stores it has LF line ends. What goes on the wire:
- every line end becomes CRLF: LF -> CRLF, an existing CRLF stays one CRLF, and a
  bare CR (not followed by LF) is a line end too -> CRLF;
- every line that starts with '.' gets one more '.' (dot-stuffing), including a line
  that starts right after a bare CR;
- the end is ".\r\n" after the last line end.

So the wire never holds a bare CR or a bare LF, and no '.' can start a line unstuffed.
Stock notqmail also turns a bare CR into a line end but then sends the next byte
unchecked, so "CR ." ends DATA early and the rest of the message runs as SMTP
commands; netqmail sends bare CRs raw, which smuggling attacks exploit. Neither here.

Un-stuffing the wire form and turning CRLF back into LF gives the input with each
CRLF and each bare CR replaced by LF: that is the documented normalisation.

A message that ends in the middle of a line (after a byte other than LF or CR) cannot
be sent: PartialLine, as stock (no terminator is sent, so the server discards it).
A CR as the very last byte counts as a line end (stock: "x\r" -> "x\r\n.\r\n").

Each chunk is transformed with a few bytes.replace() passes (C speed); the state
between chunks is two flags: at the start of a line, and a CR held back because the
LF that may complete it is in the next chunk.
"""

from .commands import END_OF_DATA


class PartialLine(Exception):
    """The message does not end with a line end."""


class Encoder:
    def __init__(self):
        self.at_line_start = True
        self.held_cr = False

    def feed(self, chunk):
        """Wire bytes for the next chunk of the message (possibly empty)."""
        if not chunk:
            return b""
        if self.held_cr:
            chunk = b"\r" + chunk
            self.held_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self.held_cr = True
            if not chunk:
                return b""
        return self._lines(chunk)

    def _lines(self, chunk):
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        stuffed = chunk.replace(b"\n.", b"\n..")
        if self.at_line_start and chunk.startswith(b"."):
            stuffed = b"." + stuffed
        self.at_line_start = chunk.endswith(b"\n")
        return stuffed.replace(b"\n", b"\r\n")

    def finish(self):
        """The last wire bytes, ending with the terminator; PartialLine if impossible."""
        tail = b""
        if self.held_cr:
            self.held_cr = False
            tail = self._lines(b"\n")
        if not self.at_line_start:
            raise PartialLine()
        return tail + END_OF_DATA


class WireSize:
    """The message size RFC 1870 wants in SIZE=: its bytes with every line end sent as
    CRLF, as the encoder sends them (an LF, a CRLF, a bare CR: each two bytes), without
    the dot-stuffing or the final dot. Fed the message chunk by chunk; C-speed counts."""

    def __init__(self):
        self.size = 0
        self.after_cr = False  # the last chunk ended with a CR: an LF next completes a CRLF

    def feed(self, chunk):
        if not chunk:
            return
        added = chunk.count(b"\n")  # LF -> CRLF
        if b"\r" in chunk:  # rare in a queued message: a bare CR -> CRLF, a CRLF stays
            added += chunk.count(b"\r") - 2 * chunk.count(b"\r\n")
        if self.after_cr and chunk[0] == 0x0A:  # a CRLF cut in two, counted +1 twice above
            added -= 2
        self.after_cr = chunk[-1] == 0x0D
        self.size += len(chunk) + added


def encode(message):
    """The whole DATA form of a message held in memory (tests and tools)."""
    encoder = Encoder()
    return encoder.feed(message) + encoder.finish()
