"""tlsc-io's argv, built (by qmail-remote) and parsed (by tlsc-io) here.

tlsc-io [options] -- [FAILURE-CONTINUATION...] PROG [ARGS...]
  -k, --name=NAME                 server name: SNI, and the name the certificate must match with -v
  -a, --anchors=PATH              trust anchors: a PEM bundle, or a directory of hashed
                                  certificates when PATH ends in "/"
  -c, --cert=FILE                 client certificate chain (PEM), presented when the server asks
  -y, --key=FILE                  its private key (PEM; default: in the -c file)
  -v, --verify                    require a certificate that verifies and matches NAME
  -t, --handshake-timeout=SECONDS bound on the whole handshake (60; 0 = none)
  -T, --timeout=SECONDS           relay: give up after this long with no byte moving (1200; 0 = never)
  -6, --fdr=FD, -7, --fdw=FD      the connection (6 and 7)
  -F, --on-failure=N              the first N words after "--" are the failure continuation

The interface is fixed in doc/tlsc-io.html. Only cheap imports here: qmail-remote
imports this module in every delivery that may use TLS.
"""

import os

from .options import BadOption, scan

PROGRAM = "tlsc-io"
USAGE = ("tlsc-io [-k name] [-a anchors] [-c cert] [-y key] [-v] [-t handshake-timeout]"
         " [-T timeout] [-6 fdr] [-7 fdw] [-F n] -- [continuation...] prog...")


class Usage(Exception):
    """A malformed tlsc-io command line: the text after "tlsc-io: usage: "."""


class TlscOptions:
    __slots__ = ("name", "anchors", "cert", "key", "verify", "handshake_timeout", "timeout",
                 "fdr", "fdw", "continuation", "prog")

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


def _bytes(value):
    return value if isinstance(value, bytes) else os.fsencode(value)


def build_tlsc(path, name, anchors, cert, key, verify, handshake_timeout, relay_timeout,
               continuation, prog, fdr=6, fdw=7):
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
_FLAGS = {"-v": "verify", "--verify": "verify"}


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
            value = os.fsencode(value)
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
