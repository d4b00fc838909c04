"""Sans-IO checks of a server's certificate chain after the handshake: DANE (RFC 6698,
RFC 7671, RFC 7672), fingerprint pins, and reference-name matching.

Input is DER bytes (the chain as the server sent it, leaf first) and the records or
pins of tlsc-io's command line; output is what verified the server, or a DaneFailure /
PinFailure with the text for TLSC_FAILURE. No socket, no OpenSSL object.

Rules of this module:
1. DANE-EE (usage 3): the leaf alone is matched, by its full DER (selector 0) or its
   SubjectPublicKeyInfo (selector 1); no name, expiry or chain check (RFC 7672 3.1.1).
2. DANE-TA (usage 2): some certificate of the chain sent matches; then the chain from the
   leaf to that certificate must verify with it as the only trust anchor, expiry included,
   and the leaf must carry one of the reference names (-k, -N), wildcards allowed
   (RFC 7672 3.2.2). That takes cryptography's x509.verification, imported only here.
3. The SPKI is cut out of the certificate by a small strict DER walker: no parser
   library on the DANE-EE path, and hostile DER raises DerError (a non-match), never more.
"""

MAX_DER = 1 << 20  # a certificate far bigger than any real one is no certificate


class DerError(ValueError):
    pass


class DaneFailure(Exception):
    pass


class PinFailure(Exception):
    pass


# --- DER ---

def _tlv(data, at, end):
    """(tag, content start, content end) of the DER element at data[at:end]; DerError when it
    is not one: bounded, definite length only, in its shortest form."""
    if at + 2 > end:
        raise DerError("truncated element at %d" % at)
    tag = data[at]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tag at %d" % at)
    first = data[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise DerError("indefinite or oversized length at %d" % (at - 1))
        if at + count > end:
            raise DerError("truncated length at %d" % at)
        length = int.from_bytes(data[at:at + count], "big")
        if data[at] == 0 or length < 0x80:
            raise DerError("length not in its shortest form at %d" % at)
        at += count
    if at + length > end:
        raise DerError("element at %d runs past its container" % at)
    return tag, at, at + length


_SEQUENCE, _INTEGER, _VERSION = 0x30, 0x02, 0xA0


def spki(der):
    """The SubjectPublicKeyInfo element (tag and length included) of a DER certificate."""
    der = bytes(der)
    if len(der) > MAX_DER:
        raise DerError("too long")
    tag, start, end = _tlv(der, 0, len(der))
    if tag != _SEQUENCE or end != len(der):
        raise DerError("not one SEQUENCE")
    tag, at, tbs_end = _tlv(der, start, end)  # tbsCertificate
    if tag != _SEQUENCE:
        raise DerError("no tbsCertificate")
    tag, _, after = _tlv(der, at, tbs_end)
    if tag == _VERSION:
        at = after
        tag, _, after = _tlv(der, at, tbs_end)
    if tag != _INTEGER:
        raise DerError("no serialNumber")
    at = after
    for what in ("signature", "issuer", "validity", "subject"):
        tag, _, after = _tlv(der, at, tbs_end)
        if tag != _SEQUENCE:
            raise DerError("no %s" % what)
        at = after
    tag, _, after = _tlv(der, at, tbs_end)
    if tag != _SEQUENCE:
        raise DerError("no subjectPublicKeyInfo")
    return der[at:after]


# --- digests without hashlib where the interpreter has its builtin modules ---

def digest(name, data):
    """The digest (bytes) of data by name: sha1, sha224, sha256 or sha512."""
    try:
        if name == "sha1":
            from _sha1 import sha1 as made
        elif name == "sha512":
            from _sha512 import sha512 as made  # 3.11; 3.12 has it in _sha2
        else:
            from _sha256 import sha224, sha256
            made = sha256 if name == "sha256" else sha224
    except ImportError:
        try:
            import _sha2

            made = getattr(_sha2, name)
        except (ImportError, AttributeError):
            import hashlib

            made = getattr(hashlib, name)
    return made(data).digest()


_MTYPES = {1: "sha256", 2: "sha512"}


def record_matches(record, der):
    """Whether the certificate der matches the TLSA record's selector, matching type and data."""
    _usage, selector, mtype, data = record
    try:
        selected = bytes(der) if selector == 0 else spki(der)
    except DerError:
        return False
    if mtype == 0:
        return selected == data
    return digest(_MTYPES[mtype], selected) == data


# --- reference names (RFC 6125: one leftmost "*" label, never over a public suffix check) ---

def name_matches(pattern, reference, wildcards=True):
    """Whether a certificate's DNS name pattern covers reference (ASCII, no final dot)."""
    pattern = pattern.lower().rstrip(".")
    reference = reference.lower().rstrip(".")
    if not pattern or not reference:
        return False
    if pattern == reference:
        return True
    if not wildcards or not pattern.startswith("*."):
        return False
    rest = pattern[2:]
    # "*" stands for exactly one whole label, and never for most of the name: *.com is refused
    if "*" in rest or rest.count(".") < 1:
        return False
    label, dot, parent = reference.partition(".")
    return bool(label) and bool(dot) and parent == rest


def first_matching(patterns, references, wildcards=True):
    """The first reference name one of the patterns covers, or None."""
    for reference in references:
        if any(name_matches(pattern, reference, wildcards) for pattern in patterns):
            return reference
    return None


# --- the checks ---

def check_pins(pins, leaf):
    """"pin" when the leaf's digest is one of pins (lowercase hex); PinFailure otherwise."""
    from ..tlsc import PIN_DIGESTS

    if leaf is None:
        raise PinFailure("no certificate received, so none matches the provided fingerprint")
    for pin in pins:
        if digest(PIN_DIGESTS[len(pin)], leaf).hex() == pin:
            return "pin"
    raise PinFailure("the received certificate (SHA256 %s) does not match provided fingerprint: %s"
                     % (digest("sha256", leaf).hex(), pins[0]))


def check_dane(records, chain, names, now=None, verified_to=None):
    """"DANE-EE" or "DANE-TA" when chain (DER, leaf first) satisfies one of records;
    DaneFailure saying which check failed otherwise. names: the reference names for DANE-TA;
    verified_to: called with the anchor's DER once a DANE-TA chain verified (tacache.keep)."""
    if not chain:
        raise DaneFailure("TLSA X.509 cert required but missing")
    leaf = chain[0]
    if any(record[0] == 3 and record_matches(record, leaf) for record in records):
        return "DANE-EE"
    anchors = [index for index, der in enumerate(chain)
               if any(record[0] == 2 and record_matches(record, der) for record in records)]
    if not anchors:
        raise DaneFailure("no TLSA record matched the certificate chain")
    failure = None
    for index in anchors:
        try:
            verify_to_anchor(chain, index, names, now)
        except DaneFailure as error:
            failure = failure or error
            continue
        if verified_to is not None:
            verified_to(chain[index])
        return "DANE-TA"
    raise failure


def verify_to_anchor(chain, index, names, now=None):
    """DANE-TA: chain[0] must verify up to chain[index] as the only trust anchor, and carry
    one of names. cryptography does the path validation (RFC 5280, its web PKI profile)."""
    from cryptography import x509
    from cryptography.x509.verification import (Criticality, ExtensionPolicy, PolicyBuilder, Store,
                                                VerificationError)

    try:
        certificates = [x509.load_der_x509_certificate(bytes(der)) for der in chain[:index + 1]]
    except ValueError as error:
        raise DaneFailure("DANE-TA chain does not verify: unreadable certificate: %s" % error) from None
    leaf = certificates[0]
    try:
        alternatives = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        patterns = alternatives.get_values_for_type(x509.DNSName)
    except (x509.ExtensionNotFound, ValueError):
        patterns = []
    name = first_matching(patterns, names)
    if name is None:
        raise DaneFailure("name %s not in the certificate" % " or ".join(names))
    # the web PKI profile, except the criticality of subjectAltName and extendedKeyUsage:
    # private CAs (DANE-TA's usual case; trustme too) mark them critical, which OpenSSL's
    # own verification (Postfix's DANE) takes. An extendedKeyUsage must still allow serverAuth.
    leaf_policy = ExtensionPolicy.webpki_defaults_ee().require_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None).may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _server_usage)
    builder = PolicyBuilder().store(Store([certificates[index]])).extension_policies(
        ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy)
    if now is not None:
        builder = builder.time(now)
    try:
        verifier = builder.build_server_verifier(x509.DNSName(name))
        verifier.verify(leaf, certificates[1:index])
    except (VerificationError, ValueError) as error:
        text = str(error)
        cut = text.find(" (encountered processing")  # a repr of the certificate: too long for a report
        raise DaneFailure("DANE-TA chain does not verify: %s" % (text[:cut] if cut > 0 else text)) from None


def _server_usage(policy, certificate, usages):
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if usages is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usages \
            and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
        raise ValueError("the certificate's extendedKeyUsage does not allow serverAuth")
