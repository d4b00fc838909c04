"""MTA-STS (RFC 8461), the pure part: the TXT record, the policy text, MX patterns.

No I/O and no import beyond the builtins: a delivery with a fresh cache pays for this
module and cache.py only (doc/mta-sts.html).

TXT record (3.1). Of the TXT values of _mta-sts.<domain> (each one's character-strings
already concatenated by the resolver), those not starting with "v=STSv1" followed by
";", a space, a tab or nothing (so "v=STSv10" is another version) are discarded;
if the number left is not one, or that one does not follow the grammar, the domain has
no usable record (3.1: "senders MUST assume the recipient domain does not have an
available MTA-STS policy"). The grammar, taken strictly:
    record    = "v=STSv1" 1*(delim field) [delim]      delim = *WSP ";" *WSP
    field     = "id=" 1*32(ALPHA / DIGIT) / ext-name "=" ext-value
    ext-name  = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    ext-value = 1*(%x21-3A / %x3C / %x3E-7E)
id is REQUIRED (3.1 text); a second id field makes the record invalid (which id would
name the policy?). Names are case-sensitive (%s).

Policy (3.2): lines ended by LF or CRLF (erratum 6253), each `name ":" *WSP value *WSP`.
version (STSv1), mode (enforce | testing | none) and max_age (1 to 10 digits) exactly
once each; mx at least once unless mode is none; other names ignored if they follow the
extension grammar. Anything else (a line that is no field, a duplicate version, mode or
max_age, a bad mx pattern, bytes that are not UTF-8, a control character) makes the
whole policy invalid. Two liberties, both documented: empty lines are skipped, and a
max_age above 31557600 (the RFC's maximum, one year) is taken as 31557600 rather than
refusing a policy whose only fault is asking for protection too long.

MX patterns (4.1): `["*."] Domain`, compared case-insensitively; "*.example.com"
matches one extra leftmost label only: mx1.example.com, not example.com nor
a.b.example.com.
"""

MAX_AGE_LIMIT = 31557600
MODES = ("enforce", "testing", "none")
WSP = b" \t"
_ALNUM = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _ALNUM | frozenset(b"_-.")
_LDH = _ALNUM | frozenset(b"-")


class Invalid(Exception):
    """A record or policy that does not follow RFC 8461; args[0] says why (short text)."""


def _ext_name(name):
    return 0 < len(name) <= 32 and name[0] in _ALNUM and all(c in _NAME_REST for c in name)


# --- the TXT record ------------------------------------------------------------------------

def record_id(values):
    """The id (str) of the one STSv1 record among values (bytes), or raise Invalid.

    Invalid("no record") when none starts with v=STSv1 (not an error of the domain:
    it has no MTA-STS), Invalid("...") with the reason otherwise."""
    records = [v for v in values if v[:7] == b"v=STSv1" and v[7:8] in (b"", b";", b" ", b"\t")]
    if not records:
        raise Invalid("no record")
    if len(records) > 1:
        raise Invalid("%d STSv1 records" % len(records))
    return parse_record(records[0])


def parse_record(record):
    rest = record[7:]
    if not rest:
        raise Invalid("no id")
    record_id = None
    # every field is preceded by a delimiter: split on ";" and check what is between
    pieces = rest.split(b";")
    if pieces[0].strip(WSP) != b"":
        raise Invalid("bad version")
    fields = pieces[1:]
    if fields and fields[-1].strip(WSP) == b"":
        fields = fields[:-1]  # the optional final delimiter
    if not fields:
        raise Invalid("no id")
    for field in fields:
        field = field.strip(WSP)
        name, equals, value = field.partition(b"=")
        if not equals or not value:
            raise Invalid("bad field")
        if name == b"id":
            if record_id is not None:
                raise Invalid("two ids")
            if len(value) > 32 or not all(c in _ALNUM for c in value):
                raise Invalid("bad id")
            record_id = value.decode("ascii")
        elif not _ext_name(name) or not all(0x21 <= c <= 0x7E and c not in b";=" for c in value):
            raise Invalid("bad field")
    if record_id is None:
        raise Invalid("no id")
    return record_id


# --- MX patterns ---------------------------------------------------------------------------

def valid_domain(name):
    """RFC 5321 Domain in ASCII: LDH labels of 1 to 63 octets, not starting or ending with
    a hyphen, at most 253 octets, no final dot."""
    if not name or len(name) > 253:
        return False
    for label in name.split(b"."):
        if not 0 < len(label) <= 63 or label[0] == 0x2D or label[-1] == 0x2D:
            return False
        if not all(c in _LDH for c in label):
            return False
    return True


def matches_pattern(pattern, name):
    """Whether name (bytes or str, an MX host; a final dot ignored) matches pattern (str, lowercase)."""
    if isinstance(name, (bytes, bytearray)):
        try:
            name = bytes(name).decode("ascii")
        except UnicodeDecodeError:
            return False
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    if pattern.startswith("*."):
        label, dot, parent = name.partition(".")
        return bool(label) and bool(dot) and parent == pattern[2:]
    return name == pattern


# --- the policy ----------------------------------------------------------------------------

class Policy:
    """A parsed policy as fetched for one TXT id; fetched_at in Unix seconds."""

    __slots__ = ("mode", "mx", "max_age", "id", "text", "fetched_at")

    def __init__(self, mode, mx, max_age, id, text, fetched_at):
        self.mode, self.mx, self.max_age = mode, mx, max_age
        self.id, self.text, self.fetched_at = id, text, fetched_at

    def __repr__(self):
        return "Policy(%r, %r, %r, %r, fetched_at=%r)" % (self.mode, self.mx, self.max_age, self.id, self.fetched_at)

    def matches(self, name):
        """Whether the MX host name is one the policy lists (4.1)."""
        return any(matches_pattern(pattern, name) for pattern in self.mx)

    def expires(self):
        return self.fetched_at + self.max_age

    def expired(self, now):
        return now >= self.fetched_at + self.max_age

    def lines(self):
        """The policy's lines, as RFC 8460's policy-string wants them."""
        return [line for line in self.text.replace("\r\n", "\n").split("\n") if line]


def parse_policy(body, id="", fetched_at=0):
    """A Policy from the bytes of a policy file, or raise Invalid with the reason."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("not UTF-8") from None
    seen = {}
    mx = []
    for line in body.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        name, colon, value = line.partition(b":")
        value = value.lstrip(WSP).rstrip(WSP)
        if not colon or not _ext_name(name):
            raise Invalid("bad line")
        if not value or any(c < 0x20 or c == 0x7F for c in value):
            raise Invalid("bad value for %s" % name.decode("ascii"))
        if name in (b"version", b"mode", b"max_age"):
            if name in seen:
                raise Invalid("two %s fields" % name.decode("ascii"))
            seen[name] = value
        elif name == b"mx":
            pattern = value.lower()
            if not valid_domain(pattern[2:] if pattern.startswith(b"*.") else pattern):
                raise Invalid("bad mx pattern")
            mx.append(pattern.decode("ascii"))
        # other names: extensions, ignored (3.2)
    if seen.get(b"version") != b"STSv1":
        raise Invalid("version missing" if b"version" not in seen else "bad version")
    mode = seen.get(b"mode")
    if mode is None:
        raise Invalid("mode missing")
    mode = mode.decode("ascii", "replace")
    if mode not in MODES:
        raise Invalid("bad mode")
    max_age = seen.get(b"max_age")
    if max_age is None:
        raise Invalid("max_age missing")
    if not 0 < len(max_age) <= 10 or not max_age.isdigit():
        raise Invalid("bad max_age")
    if not mx and mode != "none":
        raise Invalid("mx missing")
    return Policy(mode, mx, min(int(max_age), MAX_AGE_LIMIT), id, text, fetched_at)
