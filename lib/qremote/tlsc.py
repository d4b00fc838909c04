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
USAGE = ("tlsc-io [-k name] [-a anchors] [-c cert] [-y key] [-v] [-t handshake-timeout]"
         " [-T timeout] [-6 fdr] [-7 fdw] [-F n] [-R] -- [continuation...] prog...")
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
SSL_VARIABLES = (b"SSL_PROTOCOL", b"SSL_CIPHER", b"SSL_TLS_SNI_SERVERNAME", b"SSL_PEER_CERT_HASH",
                 b"SSL_PEER_CERT_SUBJECT", b"SSL_PEER_VERIFIED")
FAILURE_VARIABLE = b"TLSC_FAILURE"
KINDS = ("verify", "name", "timeout", "closed", "handshake", "local")
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
                 "fdr", "fdw", "continuation", "prog", "report")

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


_bytes = fsencode


def build_tlsc(path, name, anchors, cert, key, verify, handshake_timeout, relay_timeout,
               continuation, prog, fdr=6, fdw=7, report=False):
    """tlsc-io's argv (a list of bytes).

    name, anchors, cert, key: str or bytes, or None to leave out; verify: bool;
    timeouts: whole seconds; continuation: the command line exec'd when the handshake
    fails (None or empty: no -F, tlsc-io then exits 111); prog: the command line
    exec'd on success.
    """
    argv = [_bytes(path)]
    if name is not None:
        argv += [b"-k", _bytes(name)]
    if anchors is not None:
        argv += [b"-a", _bytes(anchors)]
    if cert is not None:
        argv += [b"-c", _bytes(cert)]
    if key is not None:
        argv += [b"-y", _bytes(key)]
    if verify:
        argv.append(b"-v")
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
           "-7": "fdw", "--fdw": "fdw", "-F": "continuation", "--on-failure": "continuation"}
_NUMERIC = ("handshake_timeout", "timeout", "fdr", "fdw", "continuation")
_FLAGS = {"-v": "verify", "--verify": "verify", "-R": "report", "--report": "report"}


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
                           ("anchors", "cert", "key"))
    except BadOption as error:
        raise Usage(str(error)) from None
    failure_words = found.pop("continuation", None)
    for field, value in found.items():
        if field == "name":
            value = _server_name(value)
        elif field in ("anchors", "cert", "key"):
            value = fsencode(value)
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
    if options.verify and options.name is None:
        raise Usage("-v needs -k: a certificate is verified against a name")
    options.prog = rest
    return options


def _server_name(value):
    """NAME as OpenSSL wants it: ASCII, a trailing dot dropped, A-labels for a U-label
    (hostname.to_ascii: IDNA 2008, the encoder of the DNS lookup too)."""
    name = value[:-1] if value.endswith(".") else value
    if not name or "\0" in name or ".." in name:
        raise Usage("-k needs a host name")
    if not name.isascii():
        from .hostname import to_ascii
        try:
            name = to_ascii(name.encode("utf-8", "surrogateescape").decode("utf-8"))
        except ValueError:  # UnicodeDecodeError, hostname.InvalidName
            raise Usage("-k %r is not a valid host name" % value) from None
    return name
