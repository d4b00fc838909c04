"""Sans-IO SMTP reply parser: bytes in, Reply out. No fd, socket or clock here.

Rules:
1. A reply is one or more lines ending in LF; a line whose 4th byte is '-' is followed
   by another line of the same reply. Only the first line's code counts (as stock).
2. A first line that does not start with a valid code (3 digits, the first 2..5, then
   space, '-' or end of line) gives a Reply with code None: callers treat it as a
   temporary failure, never as success (stock turns "2 0" into 40 and says "accepted").
3. Everything the peer controls is bounded: at most MAX_TEXT bytes of text are kept
   (stock keeps 5000), a reply longer than MAX_REPLY bytes raises ReplyTooLong.
4. Text as stock keeps it: every line with its code, CR bytes dropped, NUL turned
   into '?', each line ended by LF.
"""

MAX_TEXT = 5000
MAX_REPLY = 256 * 1024
_KEEP_LINE = MAX_TEXT  # bytes of a line kept while waiting for its LF: one line may fill the text


class ReplyTooLong(Exception):
    """The peer sent more than MAX_REPLY bytes without finishing a reply."""


class Reply:
    __slots__ = ("code", "text")

    def __init__(self, code, text):
        self.code = code  # int 200..599, or None when the reply was malformed
        self.text = text  # bytes, stock form (see rule 4)

    def __repr__(self):
        return "Reply(%r, %r)" % (self.code, self.text)

    @property
    def ok(self):
        """A positive completion or intermediate reply (2xx or 3xx)."""
        return self.code is not None and self.code < 400

    def lines(self):
        """The text's lines, without their LF."""
        return self.text.split(b"\n")[:-1] if self.text.endswith(b"\n") else self.text.split(b"\n")


def parse_code(line):
    """The code of a reply line, or None if the line does not start with a valid one."""
    if len(line) < 3 or not line[:3].isdigit() or line[0] not in b"2345":
        return None
    if len(line) > 3 and line[3] not in b" -":
        return None
    return int(line[:3])


class ReplyParser:
    """Feed bytes; when .reply is set, one whole reply has been read.

    feed() returns how many bytes of its argument belong to the reply, so that a
    caller which must not read past the reply (qmail-remote, handing the socket on)
    knows exactly where it ends; the rest belongs to what follows.
    """

    def __init__(self):
        self.reply = None
        self._line = b""
        self._text = bytearray()
        self._size = 0
        self._first = True
        self._code = None

    def feed(self, data):
        if self.reply is not None:
            return 0
        pos = 0
        end = len(data)
        while pos < end:
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline
            self._size += stop - pos + (newline >= 0)
            if self._size > MAX_REPLY:
                raise ReplyTooLong()
            room = _KEEP_LINE - len(self._line)  # the same bytes kept however data is split
            if room > 0:
                piece = data[pos:stop]
                if b"\r" in piece:  # stock keeps no CR, so CRs must not use up the room
                    piece = piece.replace(b"\r", b"")
                self._line += piece[:room]
            if newline < 0:
                return end
            pos = newline + 1
            if self._end_of_line():
                return pos
        return end

    def _end_of_line(self):
        """Digest the complete line in self._line; True when the reply is complete."""
        line = self._line.replace(b"\r", b"")
        self._line = b""
        more = line[3:4] == b"-"
        if self._first:
            self._first = False
            self._code = parse_code(line)
            if self._code is None:
                more = False
        if len(self._text) < MAX_TEXT:
            self._text += line.replace(b"\0", b"?") + b"\n"
            del self._text[MAX_TEXT:]
        if more:
            return False
        self.reply = Reply(self._code, bytes(self._text))
        return True


def parse_replies(data):
    """Every complete reply in data, and the unconsumed rest (for tests and tools)."""
    replies = []
    while data:
        parser = ReplyParser()
        used = parser.feed(data)
        if parser.reply is None:
            break
        replies.append(parser.reply)
        data = data[used:]
    return replies, data
