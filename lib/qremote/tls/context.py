"""The client SSL context from tlsc-io's options, why a handshake failed, and what it taught.

Rules of this module:
1. A failure is a TLSFailure(kind, text): kind is one of tlsc.KINDS; the two make
   TLSC_FAILURE (tlsc.failure_line: the format is the contract's, not ours).
2. The environment handed to PROG uses s6-tlsc's names (tlsc.SSL_VARIABLES) and formats:
   SSL_PEER_CERT_HASH is "SHA256:" and the hex SHA-256 of the DER certificate,
   SSL_PEER_CERT_SUBJECT is "C=.., ST=.., L=.., O=.., OU=.., CN=.." (the parts present,
   in that order, with ',', '=', '+', '<', '>', '#', '\\' and newline escaped by '\\').
"""

import posix

import _ssl
import _stat

from ..options import fsdecode
from ..tlsc import bounded, failure_line

_NAME_MISMATCHES = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH

SSLError = _ssl.SSLError


class TLSFailure(Exception):
    def __init__(self, kind, text):
        super().__init__(kind, text)
        self.kind = kind
        self.text = text

    def line(self):
        return failure_line(self.kind, self.text)


def _say(path):
    return fsdecode(path)


def reason(error):
    """OpenSSL's words from an OSError or SSLError, without "(_ssl.c:992)"."""
    if isinstance(error, _ssl.SSLError):
        text = error.args[1] if len(error.args) > 1 and isinstance(error.args[1], str) else str(error)
        cut = text.rfind(" (_ssl.c:")
        return text[:cut] if cut > 0 else text
    return error.strerror or str(error)


_NO_WILDCARDS, _NO_PARTIAL_WILDCARDS = 0x2, 0x4  # X509_CHECK_FLAG_*


def by_hand(options):
    """Whether the name check is done after the handshake, by us: -m dn or dn* with -N names
    (OpenSSL checks one name only), -k a DNS name. Else OpenSSL checks -k during the handshake
    (-v alone, -m without -N, an address as -k), or nothing does (-m ca)."""
    return (options.verify and options.name_check in ("dn", "dn*") and bool(options.names)
            and options.name is not None and not is_address(options.name))


def kept_anchors(options):
    """The DANE-TA anchors kept for -D (tacache.anchors: DER list), or None: the cold path.
    Only a set of usage 2 records alone looks: DANE-EE never opens the cache."""
    if not options.tlsa or any(record[0] != 2 for record in options.tlsa):
        return None
    from . import tacache

    return tacache.anchors(options.tlsa)


def build(options, anchors=None):
    """A client _SSLContext for options (tlsc.TlscOptions); TLSFailure("local") when a file is unusable.
    anchors: kept DANE-TA anchors (kept_anchors()), which OpenSSL then verifies the chain to."""
    context = _ssl._SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    # a relay cannot follow a renegotiation's interleaving sanely, and SMTP never needs one
    context.options |= _ssl.OP_NO_RENEGOTIATION
    if options.verify:
        context.verify_mode = _ssl.CERT_REQUIRED
        # -m ca checks no name; -N names are checked by hand after the handshake (check())
        context.check_hostname = options.name_check != "ca" and not by_hand(options)
        if options.name_check == "dn":
            context._host_flags = _NO_WILDCARDS | _NO_PARTIAL_WILDCARDS
    else:
        # -f, -D, -n and opportunistic TLS: any certificate (or none); -f and -D judge it after
        context.check_hostname = False
        context.verify_mode = _ssl.CERT_NONE
    if anchors:
        # the warm DANE-TA path: OpenSSL checks the chain and its dates to the kept anchors,
        # which may be intermediates (hence PARTIAL_CHAIN); the names are checked in check()
        for der in anchors:
            context.load_verify_locations(cadata=der)
        context.verify_flags |= _ssl.VERIFY_X509_PARTIAL_CHAIN
        context.verify_mode = _ssl.CERT_REQUIRED
    if options.ciphers is not None or options.anonymous:
        # aNULL suites exist only at OpenSSL's security level 0; DEFAULT deletes them for good
        # ("!COMPLEMENTOFDEFAULT"), so -n spells it with "-", then adds them last
        ciphers = options.ciphers or ("ALL:-COMPLEMENTOFDEFAULT:!eNULL" if options.anonymous else "DEFAULT")
        if options.anonymous:
            ciphers += ":aNULL:@SECLEVEL=0"
        try:
            context.set_ciphers(ciphers)
        except _ssl.SSLError as error:
            raise TLSFailure("local", "unable to use the cipher list %s: %s" % (options.ciphers, reason(error))) from None
    if options.anchors is not None:
        _load_anchors(context, options.anchors)
    if options.system:
        context.set_default_verify_paths()
    if options.cert is not None:
        password = None
        if options.clientref is not None:
            password = _password(options.clientref)
        try:
            context.load_cert_chain(fsdecode(options.cert),
                                    None if options.key is None else fsdecode(options.key),
                                    password if password is not None else _no_password)
        except OSError as error:  # SSLError is an OSError too
            where = _say(options.cert) if options.key is None else "%s and %s" % (_say(options.cert), _say(options.key))
            if getattr(error, "filename", None):
                where = _say(error.filename)
            why = reason(error)
            if password is not None and isinstance(error, _ssl.SSLError):
                # OpenSSL says only "PEM lib" for a key the password does not decrypt
                name, _, rest = options.clientref.partition(":")
                why += " (is the key password of control/%s line %s right?)" % (name, rest.partition(":")[0])
            raise TLSFailure("local", "unable to use the client certificate %s: %s" % (where, why)) from None
    return context


def _no_password():
    """For a key without -p: an encrypted key fails at once instead of OpenSSL asking on a terminal."""
    return b""


def _password(reference):
    from .. import credentials, failures

    try:
        return credentials.domaincert_password(reference)
    except failures.CredentialsUnusable as error:
        raise TLSFailure("local", "unable to read the key password of %s: %s" % (error.where, error.why)) from None


def warm_failure(failure):
    """The TLSFailure of a handshake that failed OpenSSL's check to kept DANE-TA anchors: DANE's."""
    if failure.kind in ("verify", "name"):
        return TLSFailure("dane", "DANE-TA chain does not verify: %s" % failure.text)
    return failure


def check(sslobj, options, anchors=None):
    """What verified the server after a finished handshake (a tlsc.VERIFIED_BY value, or None),
    for the checks OpenSSL does not do: -f, -D, the names of -m/-N, -d. TLSFailure otherwise.
    dane.py is imported only for those: plain STARTTLS loads nothing more.
    anchors: build()'s, when OpenSSL already verified the chain to kept DANE-TA anchors."""
    if anchors:
        return _check_warm(sslobj, options)
    if options.pins or options.tlsa:
        from . import dane

        chain = [cert.public_bytes(_ssl.ENCODING_DER) for cert in sslobj.get_unverified_chain() or ()]
        try:
            if options.pins:
                return dane.check_pins(options.pins, chain[0] if chain else None)
            names = [name for name in [options.name] + options.names if name is not None]
            return dane.check_dane(options.tlsa, chain, names, verified_to=_keeper(options.tlsa))
        except dane.PinFailure as failure:
            raise TLSFailure("pin", str(failure)) from None
        except dane.DaneFailure as failure:
            raise TLSFailure("dane", str(failure)) from None
        except ImportError as error:  # DANE-TA without cryptography installed: the same for every server
            raise TLSFailure("local", "DANE-TA needs the cryptography module: %s" % error) from None
    if not options.verify:
        return None
    if options.depth is not None:
        chain = sslobj.get_verified_chain() or ()
        # OpenSSL's count: the leaf is depth 0, the trust anchor is not limited
        intermediates = max(len(chain) - 2, 0)
        if intermediates > options.depth:
            raise TLSFailure("depth", "the verified chain has %d intermediate certificates, more than -d %d allows"
                             % (intermediates, options.depth))
    if by_hand(options):
        from . import dane

        references = [options.name] + options.names
        patterns = [value for kind, value in (sslobj.getpeercert() or {}).get("subjectAltName", ()) if kind == "DNS"]
        if dane.first_matching(patterns, references, options.name_check == "dn*") is None:
            raise TLSFailure("name", "the certificate is not valid for %s" % " or ".join(references))
    if options.name_check is None:
        return None  # -v alone: tlsstrictness 2, whose K says "verified" as it always did
    return {"ca": "ca", "dn": "ca+dn", "dn*": "ca+dn*"}[options.name_check]


def _keeper(records):
    if not any(record[0] == 2 for record in records):
        return None

    def keep(anchor):
        from . import tacache

        tacache.keep(records, anchor)
    return keep


def _check_warm(sslobj, options):
    """DANE-TA after OpenSSL verified the chain to kept anchors: what the cold path checks
    beside the chain (dane.check_dane): a certificate sent matches a record, and the leaf
    carries -k or an -N name (DNS subjectAltNames, wildcards allowed)."""
    from . import dane

    chain = [cert.public_bytes(_ssl.ENCODING_DER) for cert in sslobj.get_unverified_chain() or ()]
    if not any(dane.record_matches(record, der) for der in chain for record in options.tlsa):
        raise TLSFailure("dane", "no TLSA record matched the certificate chain")
    names = [name for name in [options.name] + options.names if name is not None]
    patterns = [value for kind, value in (sslobj.getpeercert() or {}).get("subjectAltName", ()) if kind == "DNS"]
    if dane.first_matching(patterns, names) is None:
        raise TLSFailure("dane", "name %s not in the certificate" % " or ".join(names))
    return "DANE-TA"


def _is_directory(path):
    try:
        return _stat.S_ISDIR(posix.stat(path).st_mode)
    except OSError:
        return False


def _load_anchors(context, path):
    shown = _say(path)
    try:
        if path.endswith(b"/"):
            # OpenSSL reads a hashed directory lazily, during verification: check it is there now
            if not _is_directory(path) or not posix.access(path, posix.R_OK | posix.X_OK):
                raise TLSFailure("local", "unable to read trust anchors %s: not a readable directory" % shown)
            context.load_verify_locations(None, fsdecode(path))
        else:
            context.load_verify_locations(fsdecode(path))
    except TLSFailure:
        raise
    except OSError as error:
        raise TLSFailure("local", "unable to read trust anchors %s: %s" % (shown, reason(error))) from None


def failure_from(error):
    """TLSFailure for an exception raised by do_handshake()."""
    if isinstance(error, _ssl.SSLCertVerificationError):
        code = getattr(error, "verify_code", None)
        message = getattr(error, "verify_message", None) or reason(error)
        return TLSFailure("name" if code in _NAME_MISMATCHES else "verify", message)
    if isinstance(error, (_ssl.SSLEOFError, _ssl.SSLZeroReturnError)):
        return TLSFailure("closed", "the server closed the connection during the handshake")
    if isinstance(error, _ssl.SSLError):
        if "UNEXPECTED_EOF" in reason(error).upper():
            return TLSFailure("closed", "the server closed the connection during the handshake")
        return TLSFailure("handshake", reason(error))
    return TLSFailure("handshake", str(error))


def is_address(name):
    """An IP address given as NAME: verified as such (iPAddress), and never sent as SNI (RFC 6066)."""
    from ..candidates import normal_ip
    return normal_ip(name) is not None


def environment(sslobj, name, verified, by=None):
    """{variable: value} (bytes) for PROG after a successful handshake; None values are unset.
    by: what verified the server (tlsc.VERIFIED_BY), when check() said."""
    env = {
        b"SSL_PROTOCOL": (sslobj.version() or "").encode("ascii"),
        b"SSL_CIPHER": ((sslobj.cipher() or ("",))[0]).encode("ascii"),
        b"SSL_TLS_SNI_SERVERNAME": name.encode("ascii") if name and not is_address(name) else None,
        b"SSL_PEER_CERT_HASH": None,
        b"SSL_PEER_CERT_SUBJECT": None,
        b"SSL_PEER_VERIFIED": b"1" if verified or by else b"0",
        b"SSL_PEER_VERIFIED_BY": by.encode("ascii") if by else None,
    }
    der = sslobj.getpeercert(True)
    if der:
        try:
            from _sha256 import sha256  # builtin in 3.11: hashlib would add its OpenSSL wrapper
        except ImportError:
            try:
                from _sha2 import sha256  # its name from 3.12 on
            except ImportError:  # a Python built without it
                from hashlib import sha256
        env[b"SSL_PEER_CERT_HASH"] = b"SHA256:" + sha256(der).hexdigest().encode("ascii")
        chain = sslobj.get_unverified_chain() or ()
        if chain:
            env[b"SSL_PEER_CERT_SUBJECT"] = subject_text(chain[0].get_info().get("subject", ()))
    for variable, value in env.items():
        if value is not None:
            env[variable] = bounded(value)
    return env


_SUBJECT_ORDER = (("countryName", "C"), ("stateOrProvinceName", "ST"), ("localityName", "L"),
                  ("organizationName", "O"), ("organizationalUnitName", "OU"), ("commonName", "CN"))
_ESCAPED = frozenset(",=+<>#\\\n")


def subject_text(subject):
    """s6-tlsc's SSL_PEER_CERT_SUBJECT from ssl's subject form (((key, value),), ...) (bytes)."""
    found = {}
    for rdn in subject:
        for key, value in rdn:
            found.setdefault(key, value)  # the first of each, as one value per keyword fits
    parts = []
    for key, keyword in _SUBJECT_ORDER:
        if key in found:
            value = found[key].strip(" ")
            value = "".join("\\" + c if c in _ESCAPED else c for c in value)
            parts.append("%s=%s" % (keyword, value))
    text = ", ".join(parts)
    # an environment value cannot hold NUL; keep the rest (UTF-8), control bytes shown as '?'
    return "".join("?" if ord(c) < 32 and c != "\n" else c for c in text).encode("utf-8", "replace") or None
