"""EHLO reply -> Capabilities, and the compact form qmail-remote passes in argv.

The first line of an EHLO reply is the server's greeting; each later line is one
extension keyword, maybe with parameters (RFC 5321 section 4.1.1.1). Keywords are
compared case-insensitively; we keep them upper-cased.
"""


class Capabilities:
    """What the server offered, as the transaction needs it."""

    __slots__ = ("keywords", "size_limit", "auth")

    def __init__(self, keywords=(), size_limit=0, auth=()):
        self.keywords = frozenset(keywords)
        self.size_limit = size_limit  # 0: no limit announced
        self.auth = frozenset(auth)  # the SASL mechanisms AUTH offers (RFC 4954), upper-cased

    def __contains__(self, keyword):
        return keyword in self.keywords

    def __repr__(self):
        return "Capabilities(%r, %r)" % (sorted(self.keywords), self.size_limit)

    @classmethod
    def from_ehlo(cls, reply):
        keywords = set()
        size_limit = 0
        mechanisms = set()
        for line in reply.lines()[1:]:
            words = line[4:].split()
            if not words:
                continue
            keyword = words[0].upper()
            if keyword == b"AUTH":  # the pre-RFC "AUTH=" lines come with an "AUTH" line too
                mechanisms.update(w.upper().decode("ascii") for w in words[1:]
                                  if w.replace(b"-", b"").replace(b"_", b"").isalnum() and w.isascii())
            if not keyword.replace(b"-", b"").isalnum() or not keyword.isascii():
                continue
            keywords.add(keyword.decode("ascii", "replace"))
            # a value of more than 100 digits is no limit (and int() refuses > 4300 digits)
            if keyword == b"SIZE" and len(words) > 1 and words[1].isdigit() and len(words[1]) <= 100:
                size_limit = int(words[1])
        return cls(keywords, size_limit, mechanisms)

    # argv form: "PIPELINING,SIZE=10240000,8BITMIME,AUTH=CRAM-MD5/PLAIN"; the empty string means HELO (no ESMTP)
    def to_arg(self):
        words = []
        for keyword in sorted(self.keywords):
            if keyword == "SIZE" and self.size_limit:
                words.append("SIZE=%d" % self.size_limit)
            elif keyword == "AUTH" and self.auth:
                words.append("AUTH=" + "/".join(sorted(self.auth)))
            else:
                words.append(keyword)
        return ",".join(words)

    @classmethod
    def from_arg(cls, arg):
        keywords = set()
        size_limit = 0
        mechanisms = ()
        for word in filter(None, arg.split(",")):
            keyword, _, value = word.partition("=")
            keyword = keyword.upper()
            keywords.add(keyword)
            if keyword == "AUTH":
                mechanisms = [m.upper() for m in value.split("/") if m]
            if keyword == "SIZE":
                if value and not (value.isascii() and value.isdigit()):
                    raise ValueError("invalid SIZE value %r" % value)
                size_limit = int(value or 0)
        return cls(keywords, size_limit, mechanisms)
