"""EHLO reply -> Capabilities, and the compact form qmail-remote passes in argv.

The first line of an EHLO reply is the server's greeting; each later line is one
extension keyword, maybe with parameters (RFC 5321 section 4.1.1.1). Keywords are
compared case-insensitively; we keep them upper-cased.
"""


class Capabilities:
    """What the server offered, as the transaction needs it."""

    __slots__ = ("keywords", "size_limit")

    def __init__(self, keywords=(), size_limit=0):
        self.keywords = frozenset(keywords)
        self.size_limit = size_limit  # 0: no limit announced

    def __contains__(self, keyword):
        return keyword in self.keywords

    def __repr__(self):
        return "Capabilities(%r, %r)" % (sorted(self.keywords), self.size_limit)

    @classmethod
    def from_ehlo(cls, reply):
        keywords = set()
        size_limit = 0
        for line in reply.lines()[1:]:
            words = line[4:].split()
            if not words:
                continue
            keyword = words[0].upper()
            if not keyword.replace(b"-", b"").isalnum() or not keyword.isascii():
                continue
            keywords.add(keyword.decode("ascii", "replace"))
            # a value of more than 100 digits is no limit (and int() refuses > 4300 digits)
            if keyword == b"SIZE" and len(words) > 1 and words[1].isdigit() and len(words[1]) <= 100:
                size_limit = int(words[1])
        return cls(keywords, size_limit)

    # argv form: "PIPELINING,SIZE=10240000,8BITMIME"; the empty string means HELO (no ESMTP)
    def to_arg(self):
        words = []
        for keyword in sorted(self.keywords):
            if keyword == "SIZE" and self.size_limit:
                words.append("SIZE=%d" % self.size_limit)
            else:
                words.append(keyword)
        return ",".join(words)

    @classmethod
    def from_arg(cls, arg):
        keywords = set()
        size_limit = 0
        for word in filter(None, arg.split(",")):
            keyword, _, value = word.partition("=")
            keyword = keyword.upper()
            keywords.add(keyword)
            if keyword == "SIZE":
                if value and not (value.isascii() and value.isdigit()):
                    raise ValueError("invalid SIZE value %r" % value)
                size_limit = int(value or 0)
        return cls(keywords, size_limit)
