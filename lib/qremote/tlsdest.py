"""control/tlsdestinations and control/domaincerts (s/qmail's files), parsed strictly.

tlsdestinations (doc/tlsdestinations.html): one rule a line.
  global       `*:` `?:` (STARTTLS when offered, cleartext otherwise and after a failed
               handshake), `-:` (anonymous suites allowed), `/:` (no DANE);
  mandatory    `-*:` (any TLS, anonymous too) `+*:` (a certificate that verifies)
               `~*:` (... and matches the name, wildcards too) `=*:` (... the exact
               name) `/*:` (TLS, no DANE, nothing verified): at most one of them;
  destination  [PREFIX]destination:cafile|ciphers|verifydepth;[s]port|senderdomain
               [PREFIX]destination:=fingerprint|ciphers|verifydepth;[s]port|senderdomain
               PREFIX none (mandatory TLS; verified against cafile when given), `=`
               (exact name), `~` (wildcards), `-` (anonymous allowed), `%` (pinning),
               `!` (no STARTTLS), `?` (STARTTLS, cleartext after a failed handshake),
               `/` (as none, and no DANE). `;465`, `;s` or `;sPORT`: SMTPS; `;6209`:
               QMTPS; `;PORT`: that port. Without ';' the fields are positional
               (`cafile|ciphers|depth|senderdomain`); after `;port` only `|senderdomain`.
               A cipher list in the depth field with the ciphers field empty is taken as
               the cipher list (s/qmail's example `-adhonlydomain.com:||aNULL:!kRSA`).
A destination matches the target's name (MX host, or the route's relay) or, for a
delivery by MX, the delivery's domain: the name itself or a parent domain at a dot
boundary, the most specific key first, the MX name before the domain, a line bound to
the sender's domain before an unbound one; the last of two equal lines wins. A line
that cannot be parsed is a Z naming the file and the line.

domaincerts: `senderdomain:certificate|keyfile|password`, `*` the default. Only the
paths and a reference to the line (domaincerts:LINE:HEX, the line with its password
emptied, as routes.reference) leave this module: tlsc-io reads the password itself.
"""

from . import control, failures
from .candidates import QMTPS, SMTPS
from .tlsrule import MAY, MUST, NONE, Rule

TLSDESTINATIONS, DOMAINCERTS = "tlsdestinations", "domaincerts"
GLOBAL_OPTIONAL = (b"*", b"?")
GLOBAL_MANDATORY = (b"-*", b"+*", b"~*", b"=*", b"/*")
PREFIXES = b"=~-%!?/"
FINGERPRINT_LENGTHS = (40, 56, 64, 128)  # SHA-1, SHA-224, SHA-256, SHA-512 in hex
# bytes: the plan carries each path once in one argv word (plan.py), a cafile per MX name
MAX_PATH, MAX_CAFILE = 1024, 255
SMTPS_PORT, QMTPS_PORT = 465, 6209


def _invalid(number, why, name=TLSDESTINATIONS):
    return failures.ControlInvalid(name, "line %d: %s" % (number, why))


def _where(number):
    return "control/%s line %d" % (TLSDESTINATIONS, number)


class GlobalRule:
    __slots__ = ("number", "key")

    def __init__(self, number, key):
        self.number, self.key = number, key

    def rule(self, policy, dests):
        """The Rule of this global rule (level 4 of tlsrule's precedence)."""
        required = _where(self.number)
        if self.key in GLOBAL_OPTIONAL:
            return Rule(MAY, TLSDESTINATIONS, fallback=True, anonymous=dests.anonymous)
        if self.key in (b"-*", b"/*"):
            return Rule(MUST, TLSDESTINATIONS, anonymous=self.key == b"-*" or dests.anonymous, required=required)
        verify = {b"+*": "ca", b"~*": "ca+dn*", b"=*": "ca+dn"}[self.key]
        anchors = policy.anchors or None
        return Rule(MUST, TLSDESTINATIONS, verify=verify, anchors=anchors, system=anchors is None,
                    required=required)


class Line:
    """A destination line of tlsdestinations."""

    __slots__ = ("number", "prefix", "destination", "cafile", "pin", "ciphers", "depth", "port", "protocol",
                 "sender")

    def __init__(self, number, prefix, destination):
        self.number, self.prefix, self.destination = number, prefix, destination
        self.cafile = self.pin = self.ciphers = self.depth = self.port = self.protocol = self.sender = None

    def rule(self, policy, dests):
        """The Rule of this line (level 1 of tlsrule's precedence)."""
        required = _where(self.number)
        prefix = self.prefix
        if prefix == b"!":
            rule = Rule(NONE, TLSDESTINATIONS)
        elif prefix == b"?":
            rule = Rule(MAY, TLSDESTINATIONS, fallback=True, anonymous=dests.anonymous)
        elif self.pin is not None:
            rule = Rule(MUST, TLSDESTINATIONS, verify="pin", pins=[self.pin], required=required)
        elif prefix in (b"=", b"~"):
            anchors = self.cafile or policy.anchors or None
            rule = Rule(MUST, TLSDESTINATIONS, verify="ca+dn" if prefix == b"=" else "ca+dn*", anchors=anchors,
                        system=anchors is None, required=required)
        else:  # none, `-`, `/`: mandatory TLS; a cafile makes it verified (the chain only)
            rule = Rule(MUST, TLSDESTINATIONS, verify="ca" if self.cafile else None, anchors=self.cafile,
                        anonymous=prefix == b"-", required=required)
        rule.ciphers, rule.depth = self.ciphers, self.depth
        rule.port, rule.protocol = self.port, self.protocol
        rule.dane_off = prefix == b"/"
        if self.cafile:
            rule.checks.append(("%s line %d" % (TLSDESTINATIONS, self.number), self.cafile))
        return rule


class Destinations:
    """The parsed control/tlsdestinations."""

    __slots__ = ("table", "optional", "mandatory", "anonymous", "dane_off")

    def __init__(self):
        self.table = {}          # (lower-cased destination, lower-cased sender domain or None) -> Line
        self.optional = None     # GlobalRule `*:` or `?:`
        self.mandatory = None    # GlobalRule of a two-character rule
        self.anonymous = False   # `-:`
        self.dane_off = False    # `/:` or `/*:`

    @property
    def global_rule(self):
        return self.mandatory or self.optional

    def find(self, names, sender_domain=b""):
        """The Line for the first of names (most specific first) that has one, or None."""
        sender_domain = (sender_domain or b"").lower()
        for name in names:
            for key in parents(name):
                for bound in ((sender_domain, None) if sender_domain else (None,)):
                    line = self.table.get((key, bound))
                    if line is not None:
                        return line
        return None


def parents(name):
    """name (lower-cased, no final dot) and each parent domain: a.b.c, b.c, c; an IP
    literal (an smtproutes relay given as an address) only itself."""
    name = name.lower().rstrip(b".")
    from .candidates import parse_literal

    if parse_literal(name) is not None:  # an address has no parent domains
        yield name
        return
    while name:
        yield name
        name = name.partition(b".")[2]


def parse(lines):
    """(number, line) pairs of control/tlsdestinations -> Destinations."""
    dests = Destinations()
    for number, line in lines:
        key, colon, value = line.partition(b":")
        key = key.strip(b" \t")
        if not colon:
            raise _invalid(number, "no ':' after the destination")
        value = value.strip(b" \t")
        if key in GLOBAL_OPTIONAL + (b"-", b"/") + GLOBAL_MANDATORY:
            if value:
                raise _invalid(number, "a global rule (%s:) takes nothing after ':'" % key.decode())
            if key in GLOBAL_MANDATORY:
                if dests.mandatory is not None and dests.mandatory.key != key:
                    raise _invalid(number, "a second mandatory rule (line %d has %s:)"
                                   % (dests.mandatory.number, dests.mandatory.key.decode()))
                dests.mandatory = GlobalRule(number, key)
                dests.dane_off |= key == b"/*"
            elif key in GLOBAL_OPTIONAL:
                dests.optional = GlobalRule(number, key)
            elif key == b"-":
                dests.anonymous = True
            else:
                dests.dane_off = True
            continue
        prefix = key[:1] if key[:1] in (PREFIXES[i:i + 1] for i in range(len(PREFIXES))) else b""
        destination = key[len(prefix):].lower().rstrip(b".")
        if not destination or destination.startswith(b".") or b".." in destination or \
                any(c in b" \t*|;=%!?~/" for c in destination):
            raise _invalid(number, "no destination host or domain before ':'")
        parsed = Line(number, prefix, destination)
        _parse_value(parsed, value)
        dests.table[(destination, parsed.sender)] = parsed
    return dests


def _parse_value(line, value):
    number = line.number
    head, semicolon, tail = value.partition(b";")
    fields = head.split(b"|")
    if semicolon:
        if len(fields) > 3:
            raise _invalid(number, "more than cafile|ciphers|verifydepth before ';'")
        port, _, sender = tail.partition(b"|")
        if b"|" in sender or b";" in sender:
            raise _invalid(number, "more than ;port|senderdomain after ';'")
        _port(line, port)
    else:
        if len(fields) > 4:
            raise _invalid(number, "more than cafile|ciphers|verifydepth|senderdomain")
        sender = fields[3] if len(fields) == 4 else b""
    fields += [b""] * (3 - len(fields[:3]))
    first, ciphers, depth = fields[:3]
    if depth and not ciphers and not depth.isdigit():  # s/qmail's own example `-host:||aNULL:!kRSA`
        ciphers, depth = depth, b""
    if first.startswith(b"="):
        pin = first[1:].replace(b":", b"").lower()
        if len(pin) not in FINGERPRINT_LENGTHS or any(c not in b"0123456789abcdef" for c in pin):
            raise _invalid(number, "the fingerprint must be %s hex digits (SHA-1, SHA-224, SHA-256, SHA-512)"
                           % ", ".join("%d" % n for n in FINGERPRINT_LENGTHS))
        line.pin = pin.decode("ascii")
    elif line.prefix == b"%":
        raise _invalid(number, "a '%' line needs =fingerprint after ':'")
    elif first:
        if len(first) > MAX_CAFILE:
            raise _invalid(number, "the cafile path is longer than %d bytes" % MAX_CAFILE)
        line.cafile = first
    if ciphers:
        if any(c <= 32 or c > 126 for c in ciphers):
            raise _invalid(number, "the cipher list holds a space or a byte that is not printable ASCII")
        line.ciphers = ciphers.decode("ascii")
    if depth:
        if not depth.isdigit() or int(depth) > 100:
            raise _invalid(number, "the verification depth must be a number from 0 to 100")
        line.depth = int(depth)
    if sender:
        sender = sender.strip(b" \t").lower().lstrip(b"@")
        if not sender or any(c in b" \t:|;@" for c in sender):
            raise _invalid(number, "the sender domain is not a domain")
        line.sender = sender
    if line.prefix in (b"!", b"?") and (line.cafile or line.pin or line.ciphers or line.depth is not None):
        raise _invalid(number, "a '%s' line takes no cafile, fingerprint, ciphers or depth (nothing is verified)"
                       % line.prefix.decode())
    if line.prefix == b"!" and line.protocol is not None:
        raise _invalid(number, "a '!' line (no TLS) cannot ask for SMTPS or QMTPS")


def _port(line, text):
    number = line.number
    smtps = text.startswith(b"s")
    digits = text[1:] if smtps else text
    if not digits:
        if smtps:
            line.port, line.protocol = SMTPS_PORT, SMTPS
            return
        raise _invalid(number, "no port after ';'")
    if not digits.isdigit() or not 0 < int(digits) < 65536:
        raise _invalid(number, "the port must be a number from 1 to 65535 (or s, sPORT)")
    line.port = int(digits)
    if smtps or line.port == SMTPS_PORT:
        line.protocol = SMTPS
    elif line.port == QMTPS_PORT:
        line.protocol = QMTPS


def load():
    """The Destinations of control/tlsdestinations, or None when there is no such file."""
    lines = control.read_lines(TLSDESTINATIONS)
    return None if lines is None else parse(lines)


# --- domaincerts ---

def parse_domaincerts(lines):
    """(number, line) pairs of control/domaincerts -> {lower-cased sender domain or b"*":
    (certificate, keyfile or None, reference or None)}; the reference only when the line
    has a password (tlsc-io reads it from the line; never in argv)."""
    table = {}
    for number, line in lines:
        key, colon, value = line.partition(b":")
        key = key.strip(b" \t").lower().lstrip(b"@")
        if not colon or not key:
            raise _invalid(number, "no 'senderdomain:' before the certificate", DOMAINCERTS)
        fields = value.split(b"|")
        if len(fields) > 3:
            raise _invalid(number, "more than certificate|keyfile|password", DOMAINCERTS)
        fields += [b""] * (3 - len(fields))
        cert, key_file, password = fields[0].strip(b" \t"), fields[1].strip(b" \t"), fields[2]
        if not cert:
            raise _invalid(number, "no certificate file", DOMAINCERTS)
        if len(cert) > MAX_PATH or len(key_file) > MAX_PATH:
            raise _invalid(number, "a path longer than %d bytes" % MAX_PATH, DOMAINCERTS)
        # the line with its password emptied pins it (credentials.secretless's rule, without
        # importing an AUTH module into qmail-remote): tlsc-io reads the password from the line
        pinned = line.partition(b":")[0] + b":" + b"|".join(value.split(b"|")[:2]) + b"|"
        reference = "%s:%d:%s" % (DOMAINCERTS, number, pinned.hex()) if password else None
        table[key] = (cert, key_file or None, reference, number)
    return table


def client_for(sender_domain, lines=None):
    """(certificate, keyfile, reference) control/domaincerts gives the sender's domain (or
    `*`), with the files it names checked: None when there is no line for it. lines:
    control/domaincerts as control.read_lines gave it (None: read it now)."""
    lines = control.read_lines(DOMAINCERTS) if lines is None else lines
    if not lines:
        return None
    table = parse_domaincerts(lines)
    found = table.get((sender_domain or b"").lower()) or table.get(b"*")
    if found is None:
        return None
    cert, key, reference, number = found
    for path in filter(None, (cert, key)):
        check_file("domaincerts line %d" % number, path)
    return cert, key, reference


def check_file(named, path):
    """path (named by control/NAMED) must open now: a typo is a Z before any connection."""
    import os

    try:
        os.close(os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.endswith(b"/") else 0)))
    except OSError as error:
        raise failures.TLSFileUnusable(named, path, error.strerror) from None
