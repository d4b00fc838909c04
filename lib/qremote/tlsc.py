"""The contract between tlsc-io and the programs around it, in one place: its argv
(built by qmail-remote, parsed by tlsc-io), its exit codes, the failure kinds and
the TLSC_FAILURE format with its one parser, the SSL_* names it exports, and the
OpenSSL variables no program of the chain lets through.

tlsc-io [options] -- [FAILURE-CONTINUATION...] PROG [ARGS...]
  -k, --name=NAME                 server name: SNI, and the name the certificate must match with -v
  -a, --anchors=PATH              trust anchors: a PEM bundle, or a directory of hashed
                                  certificates when PATH ends in "/"
  -c, --cert=FILE                 client certificate chain (PEM), presented when the server asks
  -y, --key=FILE                  its private key (PEM; default: in the -c file)
  -v, --verify                    require a certificate that verifies and matches NAME
  -m, --name-check=dn|dn*|ca      verify (as -v), and check the name: dn the exact names (no
                                  wildcard), dn* OpenSSL's check with wildcards, ca none
  -N, --also-name=NAME            another name the certificate may match (repeatable)
  -s, --system-anchors            add OpenSSL's default trust store to the anchors
  -d, --depth=N                   at most N intermediate certificates in the verified chain
  -C, --ciphers=LIST              OpenSSL cipher list (TLS 1.2 and older)
  -n, --anonymous                 allow anonymous (aNULL) suites: no certificate, no verification
  -f, --fingerprint=HEX           pin: the SHA-1/224/256/512 digest of the server's certificate
                                  (by its length; colons dropped, any case; repeatable)
  -D, --tlsa="U S M HEX"          a DANE TLSA record, usage 2 or 3 (repeatable): the chain
                                  must match one (RFC 7671, RFC 7672)
  -p, --password-ref=REFERENCE    domaincerts:LINE:HEX: the -y/-c key's password is on that
                                  line of control/domaincerts (read here, never passed)
  -t, --handshake-timeout=SECONDS bound on the whole handshake (60; at least 1)
  -T, --timeout=SECONDS           relay: give up after this long with no byte moving (1200; at least 1)
  -6, --fdr=FD, -7, --fdw=FD      the connection (6 and 7)
  -F, --on-failure=N              the first N words after "--" are the failure continuation
  -R, --report                    in a delivery: when neither PROG nor the continuation can
                                  run (or the command line is wrong), write a qmail Z report
                                  on fd 1 and exit 0, instead of a message on fd 2 and 100/111

The interface is fixed in doc/tlsc-io.html. Only cheap imports here: qmail-remote
imports this module in every delivery that may use TLS.
"""

from .options import BadOption, fsencode, scan

PROGRAM = "tlsc-io"
USAGE = ("tlsc-io [-k name] [-a anchors] [-s] [-c cert] [-y key] [-p domaincerts:line:hex] [-v]"
         " [-m dn|dn*|ca] [-N name]... [-d depth] [-C ciphers] [-n] [-f fingerprint]... [-D 'u s m hex']..."
         " [-t handshake-timeout] [-T timeout] [-6 fdr] [-7 fdw] [-F n] [-R] -- [continuation...] prog...")
USAGE_EXIT, FATAL_EXIT = 100, 111

# --- what tlsc-io hands on ---
#
# On success PROG gets these (s6-tlsc's names; tls/context.py computes the values).
# On a failed handshake the continuation gets FAILURE_VARIABLE = "KIND: TEXT", one
# printable ASCII line of at most MAX_FAILURE bytes, KIND one of KINDS:
#   verify, name    the certificate did not verify / does not match the name
#   timeout, closed the handshake timed out / the server closed the connection
#   handshake       any other handshake error (protocol, OpenSSL, a bug of tlsc-io)
#   local           a file named on the command line cannot be used: the same for
#                   every server, so qmail-remote defers the delivery
#   dane            -D: no TLSA record matched, or the DANE-TA chain or name failed
#   pin             -f: the certificate matches no fingerprint
#   depth           -d: the verified chain is longer than allowed
# SSL_PEER_VERIFIED_BY says what verified the peer when a check of -m, -f or -D did it:
# VERIFIED_BY values (-v alone leaves it unset: tlsstrictness 2's K stays "verified").
SSL_VARIABLES = (b"SSL_PROTOCOL", b"SSL_CIPHER", b"SSL_TLS_SNI_SERVERNAME", b"SSL_PEER_CERT_HASH",
                 b"SSL_PEER_CERT_SUBJECT", b"SSL_PEER_VERIFIED", b"SSL_PEER_VERIFIED_BY")
VERIFIED_BY = ("ca", "ca+dn", "ca+dn*", "pin", "DANE-EE", "DANE-TA")
FAILURE_VARIABLE = b"TLSC_FAILURE"
KINDS = ("verify", "name", "timeout", "closed", "handshake", "local", "dane", "pin", "depth")
NAME_CHECKS = ("dn", "dn*", "ca")
# a fingerprint's digest by its length in hex digits (s/qmail's rule)
PIN_DIGESTS = {40: "sha1", 56: "sha224", 64: "sha256", 128: "sha512"}
# a TLSA record's hashed data length by matching type (1 SHA-256, 2 SHA-512; 0 is the data itself)
TLSA_LENGTHS = {1: 32, 2: 64}
MAX_FAILURE = 300
# A value for the environment is bounded: one string over 128 KiB (MAX_ARG_STRLEN)
# makes execve() fail with E2BIG, and a certificate subject is the server's to choose.
MAX_ENV_VALUE = 4096

# OpenSSL reads these from the environment when it starts: a MinProtocol in an
# OPENSSL_CONF inherited from qmail-rspawn turned TLS into cleartext. TLS depends on
# control files only, so no program of the chain passes them on, and tlsc-io drops
# them before loading OpenSSL.
OPENSSL_VARIABLES = (b"SSL_CERT_FILE", b"SSL_CERT_DIR", b"SSLKEYLOGFILE", b"CTLOG_FILE")


def openssl_variable(name):
    """name (bytes) is read by OpenSSL (or Python's ssl) and must not steer TLS."""
    return name.startswith(b"OPENSSL_") or name in OPENSSL_VARIABLES


def failure_line(kind, text):
    """FAILURE_VARIABLE's value for a failure of kind (one of KINDS) with text (str)."""
    from .sanitise import safe_text

    return safe_text("%s: %s" % (kind, text), MAX_FAILURE)


def parse_failure(value):
    """(kind, text) of FAILURE_VARIABLE's value (str); an unknown or missing kind is "handshake"."""
    kind, sep, text = value.partition(": ")
    if not sep or kind not in KINDS:
        return "handshake", value[:MAX_FAILURE]
    return kind, text[:MAX_FAILURE]


def bounded(value):
    """An environment value (bytes) cut to MAX_ENV_VALUE bytes."""
    return value[:MAX_ENV_VALUE]


def server_name(target):
    """The name tlsc-io is given (-k) for target: SNI, and what the certificate must match.

    The MX host name from DNS, the domain itself for an implicit MX, or the smtproutes
    relay, without a final dot. For an IP literal (a literal domain, or a relay given
    as an address) there is no name: the address itself is given, so that verification
    (strictness 2) needs a certificate for that address (an iPAddress subjectAltName);
    the ssl module sends no SNI for an address, as RFC 6066 wants. The same for a
    name that is no valid host name.
    """
    from .candidates import parse_literal

    name = target.name.rstrip(b".")
    # a name DNS could only print escaped (a dot or an odd byte inside a label) is no
    # host name OpenSSL would take: treat it as having none
    if not name or b"\\" in name or parse_literal(name) is not None:
        return target.ip.encode()
    return name


class Usage(Exception):
    """A malformed tlsc-io command line: the text after "tlsc-io: usage: "."""


class TlscOptions:
    __slots__ = ("name", "anchors", "cert", "key", "verify", "handshake_timeout", "timeout",
                 "fdr", "fdw", "continuation", "prog", "report", "name_check", "names", "system",
                 "depth", "ciphers", "anonymous", "pins", "tlsa", "clientref")

    def __init__(self):
        self.name = None               # str (ASCII, IDNA-encoded when it was not)
        self.anchors = None            # bytes paths from here on
        self.cert = None
        self.key = None
        self.verify = False
        self.handshake_timeout = 60
        self.timeout = 1200
        self.fdr, self.fdw = 6, 7
        self.continuation = None       # list of bytes, or None without -F
        self.prog = []
        self.report = False            # -R: failures end in a Z report on fd 1
        self.name_check = None         # -m: "dn", "dn*", "ca", or None (-v alone: OpenSSL's check)
        self.names = []                # -N: str, as -k
        self.system = False            # -s
        self.depth = None              # -d: int
        self.ciphers = None            # -C: str
        self.anonymous = False         # -n
        self.pins = []                 # -f: lowercase hex without colons
        self.tlsa = []                 # -D: (usage, selector, mtype, bytes)
        self.clientref = None          # -p: "domaincerts:LINE:HEX"


_bytes = fsencode


def build_tlsc(path, name, anchors, cert, key, verify, handshake_timeout, relay_timeout,
               continuation, prog, fdr=6, fdw=7, report=False, *, name_check=None, names=(),
               system=False, depth=None, ciphers=None, anonymous=False, pins=(), tlsa=(),
               clientref=None):
    """tlsc-io's argv (a list of bytes).

    name, anchors, cert, key: str or bytes, or None to leave out; verify: bool;
    timeouts: whole seconds; continuation: the command line exec'd when the handshake
    fails (None or empty: no -F, tlsc-io then exits 111); prog: the command line
    exec'd on success. Keyword only: name_check "dn"/"dn*"/"ca" (-m); names, more
    reference names (-N); system (-s); depth int (-d); ciphers str (-C); anonymous (-n);
    pins, hex fingerprints (-f); tlsa, (usage, selector, mtype, bytes data) records (-D);
    clientref, the "domaincerts:LINE:HEX" reference of the key's password (-p).
    """
    argv = [_bytes(path)]
    if name is not None:
        argv += [b"-k", _bytes(name)]
    if anchors is not None:
        argv += [b"-a", _bytes(anchors)]
    if system:
        argv.append(b"-s")
    if cert is not None:
        argv += [b"-c", _bytes(cert)]
    if key is not None:
        argv += [b"-y", _bytes(key)]
    if clientref is not None:
        argv += [b"-p", _bytes(clientref)]
    if verify:
        argv.append(b"-v")
    if name_check is not None:
        argv += [b"-m", _bytes(name_check)]
    for other in names:
        argv += [b"-N", _bytes(other)]
    if depth is not None:
        argv += [b"-d", b"%d" % depth]
    if ciphers is not None:
        argv += [b"-C", _bytes(ciphers)]
    if anonymous:
        argv.append(b"-n")
    for pin in pins:
        argv += [b"-f", _bytes(pin)]
    for usage, selector, mtype, data in tlsa:
        argv += [b"-D", b"%d %d %d %s" % (usage, selector, mtype, bytes(data).hex().encode())]
    if report:
        argv.append(b"-R")
    argv += [b"-t", b"%d" % handshake_timeout, b"-T", b"%d" % relay_timeout]
    if (fdr, fdw) != (6, 7):
        argv += [b"-6", b"%d" % fdr, b"-7", b"%d" % fdw]
    continuation = [_bytes(word) for word in continuation or ()]
    if continuation:
        argv += [b"-F", b"%d" % len(continuation)]
    return argv + [b"--"] + continuation + [_bytes(word) for word in prog]


_VALUED = {"-k": "name", "--name": "name", "-a": "anchors", "--anchors": "anchors",
           "-c": "cert", "--cert": "cert", "-y": "key", "--key": "key",
           "-t": "handshake_timeout", "--handshake-timeout": "handshake_timeout",
           "-T": "timeout", "--timeout": "timeout", "-6": "fdr", "--fdr": "fdr",
           "-7": "fdw", "--fdw": "fdw", "-F": "continuation", "--on-failure": "continuation",
           "-m": "name_check", "--name-check": "name_check", "-N": "names", "--also-name": "names",
           "-d": "depth", "--depth": "depth", "-C": "ciphers", "--ciphers": "ciphers",
           "-f": "pins", "--fingerprint": "pins", "-D": "tlsa", "--tlsa": "tlsa",
           "-p": "clientref", "--password-ref": "clientref"}
_NUMERIC = ("handshake_timeout", "timeout", "fdr", "fdw", "continuation", "depth")
_REPEATED = ("names", "pins", "tlsa")
_FLAGS = {"-v": "verify", "--verify": "verify", "-R": "report", "--report": "report",
          "-s": "system", "--system-anchors": "system", "-n": "anonymous", "--anonymous": "anonymous"}


def wants_report(argv):
    """-R among the options (before "--"), for a command line too broken to parse."""
    for word in argv[1:]:
        word = _bytes(word)
        if word == b"--":
            return False
        if word in (b"-R", b"--report"):
            return True
    return False


def parse_tlsc(argv):
    """TlscOptions from sys.argv (str or bytes words); Usage on anything malformed."""
    options = TlscOptions()
    try:
        found, rest = scan([_bytes(word) for word in argv[1:]], _FLAGS, _VALUED, _NUMERIC,
                           ("anchors", "cert", "key", "ciphers", "name_check", "clientref"), _REPEATED)
    except BadOption as error:
        raise Usage(str(error)) from None
    failure_words = found.pop("continuation", None)
    for field, value in found.items():
        if field == "name":
            value = _server_name(value)
        elif field == "names":
            value = [_server_name(one, "-N") for one in value]
        elif field in ("anchors", "cert", "key"):
            value = fsencode(value)
        elif field == "pins":
            value = [_pin(one) for one in value]
        elif field == "tlsa":
            value = [_tlsa(one) for one in value]
        elif field == "name_check" and value not in NAME_CHECKS:
            raise Usage("-m takes dn, dn* or ca, not %r" % value)
        elif field == "clientref" and not _is_reference(value):
            raise Usage("-p needs domaincerts:LINE:HEX")
        setattr(options, field, value)
    if failure_words is not None:
        if failure_words == 0 or len(rest) <= failure_words:
            raise Usage("-F %d: the continuation and the program need %d words and more"
                        % (failure_words, failure_words + 1))
        options.continuation = rest[:failure_words]
        rest = rest[failure_words:]
    if not rest:
        raise Usage(USAGE)
    if options.key is not None and options.cert is None:
        raise Usage("-y needs -c")
    if options.handshake_timeout < 1 or options.timeout < 1:
        raise Usage("-t and -T need at least 1 second: a network wait is always bounded")
    if options.name_check is not None:
        options.verify = True  # -m says how the name is checked on a verified chain
    if options.verify and options.name is None and options.name_check != "ca":
        raise Usage("-v needs -k: a certificate is verified against a name")
    if options.clientref is not None and options.cert is None:
        raise Usage("-p needs -c")
    # one way to authenticate the server at a time: each says what SSL_PEER_VERIFIED_BY is
    ways = [flag for flag, used in (("-v/-m", options.verify), ("-f", options.pins), ("-D", options.tlsa),
                                    ("-n", options.anonymous)) if used]
    if len(ways) > 1:
        raise Usage("%s exclude each other" % " and ".join(ways))
    if options.tlsa and options.name is None and any(usage == 2 for usage, _, _, _ in options.tlsa):
        raise Usage("-D with usage 2 needs -k: DANE-TA checks a name")
    options.prog = rest
    return options


def _pin(value):
    """A fingerprint as s/qmail takes it: colons dropped, any case, its length says the digest."""
    pin = value.replace(":", "").lower()
    if len(pin) not in PIN_DIGESTS or not _is_hex(pin):
        raise Usage("-f needs a SHA-1, SHA-224, SHA-256 or SHA-512 fingerprint in hex, not %r" % value[:140])
    return pin


def _is_hex(text):
    return text.isascii() and all(c in "0123456789abcdefABCDEF" for c in text)


def _tlsa(value):
    """(usage, selector, mtype, data) of "U S M HEX"; only what DANE for SMTP can use (RFC 7672 3.1)."""
    fields = value.split()
    if len(fields) != 4 or not all(f.isascii() and f.isdigit() and len(f) <= 3 for f in fields[:3]):
        raise Usage("-D needs \"USAGE SELECTOR MTYPE HEX\", not %r" % value[:140])
    usage, selector, mtype = (int(f) for f in fields[:3])
    data = fields[3]
    if usage not in (2, 3):
        raise Usage("-D: TLSA usage %d is not for SMTP (RFC 7672 3.1.3: only DANE-TA 2 and DANE-EE 3)" % usage)
    if selector not in (0, 1) or mtype not in (0, 1, 2):
        raise Usage("-D: TLSA selector %d, matching type %d: only 0/1 and 0/1/2 are known" % (selector, mtype))
    if not data or len(data) % 2 or not _is_hex(data):
        raise Usage("-D: the TLSA data must be hex digits")
    data = bytes.fromhex(data)
    if mtype in TLSA_LENGTHS and len(data) != TLSA_LENGTHS[mtype]:
        raise Usage("-D: matching type %d needs %d bytes of data, not %d" % (mtype, TLSA_LENGTHS[mtype], len(data)))
    return usage, selector, mtype, data


def _is_reference(value):
    name, _, rest = value.partition(":")
    number, _, pinned = rest.partition(":")
    return name == "domaincerts" and number.isascii() and number.isdigit() and _is_hex(pinned)


def _server_name(value, option="-k"):
    """NAME as OpenSSL wants it: ASCII, a trailing dot dropped, A-labels for a U-label
    (hostname.to_ascii: IDNA 2008, the encoder of the DNS lookup too)."""
    name = value[:-1] if value.endswith(".") else value
    if not name or "\0" in name or ".." in name:
        raise Usage("%s needs a host name" % option)
    if not name.isascii():
        from .hostname import to_ascii
        try:
            name = to_ascii(name.encode("utf-8", "surrogateescape").decode("utf-8"))
        except ValueError:  # UnicodeDecodeError, hostname.InvalidName
            raise Usage("%s %r is not a valid host name" % (option, value)) from None
    return name
