"""tls/dane.py: DANE-EE and DANE-TA matching, pins, the DER walker and name matching, on real
certificates made by trustme and cryptography. No sockets."""

import datetime
import hashlib
import ssl

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from qremote.tls import dane

NOW = datetime.datetime.now(datetime.timezone.utc)


def der_chain(leaf, root):
    """The chain as a server sends it (leaf, then intermediates, then the root), in DER."""
    pems = [blob.bytes().decode() for blob in leaf.cert_chain_pems] + [root.cert_pem.bytes().decode()]
    return [ssl.PEM_cert_to_DER_cert(pem) for pem in pems]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA(organization_name="dane tests")


@pytest.fixture(scope="module")
def chain(ca):
    return der_chain(ca.issue_cert("mx.test"), ca)


def spki_of(der):
    return x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def data(der, selector, mtype):
    selected = der if selector == 0 else spki_of(der)
    return selected if mtype == 0 else hashlib.new({1: "sha256", 2: "sha512"}[mtype], selected).digest()


def test_spki_walker_agrees_with_cryptography(chain):
    for der in chain:
        assert dane.spki(der) == spki_of(der)


@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [0, 1, 2])
def test_dane_ee_each_selector_and_matching_type(chain, selector, mtype):
    record = (3, selector, mtype, data(chain[0], selector, mtype))
    assert dane.check_dane([record], chain, ["mx.test"]) == "DANE-EE"
    # a record for the CA's certificate is no DANE-EE match: only the leaf counts
    other = (3, selector, mtype, data(chain[-1], selector, mtype))
    with pytest.raises(dane.DaneFailure, match="no TLSA record matched the certificate chain"):
        dane.check_dane([other], chain, ["mx.test"])


def test_dane_ee_skips_name_and_expiry(ca):
    expired = der_chain(ca.issue_cert("elsewhere.test", not_before=NOW - datetime.timedelta(days=30),
                                      not_after=NOW - datetime.timedelta(days=1)), ca)
    assert dane.check_dane([(3, 1, 1, data(expired[0], 1, 1))], expired, ["mx.test"]) == "DANE-EE"


@pytest.mark.parametrize("selector", [0, 1])
def test_dane_ta_the_root(chain, selector):
    assert dane.check_dane([(2, selector, 1, data(chain[-1], selector, 1))], chain, ["mx.test"]) == "DANE-TA"


def test_dane_ta_an_intermediate_of_a_longer_chain(ca):
    intermediate = ca.create_child_ca()
    chain = der_chain(intermediate.issue_cert("mx.test"), ca)
    assert len(chain) == 3
    assert dane.check_dane([(2, 0, 1, data(chain[1], 0, 1))], chain, ["mx.test"]) == "DANE-TA"


def test_dane_ta_name_from_the_other_names(chain):
    record = (2, 0, 1, data(chain[-1], 0, 1))
    assert dane.check_dane([record], chain, ["base.test", "mx.test"]) == "DANE-TA"


def test_dane_ta_wrong_name_fails(chain):
    with pytest.raises(dane.DaneFailure, match="name other.test or base.test not in the certificate"):
        dane.check_dane([(2, 0, 1, data(chain[-1], 0, 1))], chain, ["other.test", "base.test"])


def test_dane_ta_wildcard_certificate(ca):
    chain = der_chain(ca.issue_cert("*.example.test"), ca)
    assert dane.check_dane([(2, 1, 2, data(chain[-1], 1, 2))], chain, ["mx.example.test"]) == "DANE-TA"


def test_dane_ta_expired_leaf_fails(ca):
    expired = der_chain(ca.issue_cert("mx.test", not_before=NOW - datetime.timedelta(days=30),
                                      not_after=NOW - datetime.timedelta(days=1)), ca)
    with pytest.raises(dane.DaneFailure, match="DANE-TA chain does not verify: .*not valid at validation time$"):
        dane.check_dane([(2, 0, 1, data(expired[-1], 0, 1))], expired, ["mx.test"])


def test_dane_ta_leaf_not_signed_by_the_anchor(ca, chain):
    """The server sends a matching anchor beside a leaf some other CA signed."""
    stranger = trustme.CA()
    other = der_chain(stranger.issue_cert("mx.test"), stranger)
    forged = [other[0], chain[-1]]
    with pytest.raises(dane.DaneFailure, match="DANE-TA chain does not verify: "):
        dane.check_dane([(2, 0, 1, data(chain[-1], 0, 1))], forged, ["mx.test"])


def test_mismatch_and_missing(chain):
    with pytest.raises(dane.DaneFailure, match="no TLSA record matched the certificate chain"):
        dane.check_dane([(3, 1, 1, b"\0" * 32), (2, 0, 1, b"\1" * 32)], chain, ["mx.test"])
    with pytest.raises(dane.DaneFailure, match="TLSA X.509 cert required but missing"):
        dane.check_dane([(3, 1, 1, b"\0" * 32)], [], ["mx.test"])


def hostile(der):
    """Mangled copies of a certificate: each must raise DerError in spki(), nothing else."""
    yield der[:len(der) // 2]                       # truncated
    yield der + b"\0"                               # trailing garbage
    yield b"\x30\x80" + der[2:]                     # indefinite length
    yield b"\x30\x85\xff\xff\xff\xff\xff" + der[4:]  # a length of five bytes
    yield b"\x30\x84\x7f\xff\xff\xff" + der[4:]     # far past the end
    yield b"\x30\x81\x05" + der[3:8]                # long form for a short length
    yield b""
    yield b"\x30"
    yield b"\x31\x03\x02\x01\x01"                   # a SET, not a SEQUENCE
    yield b"\x30\x03\x30\x01\x02"                   # a tbsCertificate that runs past its container
    yield b"\x30\x05\x30\x03\x02\x01\x01"           # a serial and nothing more


def test_hostile_der_is_a_der_error_and_no_match(chain):
    for bad in hostile(chain[0]):
        with pytest.raises(dane.DerError):
            dane.spki(bad)
        assert not dane.record_matches((3, 1, 0, spki_of(chain[0])), bad)
    # a leaf that cannot be walked matches no SPKI record: a DANE failure, not a crash
    with pytest.raises(dane.DaneFailure):
        dane.check_dane([(3, 1, 1, data(chain[0], 1, 1))], [chain[0][:100]] + chain[1:], ["mx.test"])


@pytest.mark.parametrize("name", ["sha1", "sha224", "sha256", "sha512"])
def test_pins_each_digest(chain, name):
    pin = hashlib.new(name, chain[0]).hexdigest()
    assert dane.check_pins([pin], chain[0]) == "pin"
    assert dane.digest(name, b"x") == hashlib.new(name, b"x").digest()


def test_pin_mismatch_says_so(chain):
    with pytest.raises(dane.PinFailure, match="does not match provided fingerprint: " + "ab" * 32):
        dane.check_pins(["ab" * 32], chain[0])
    with pytest.raises(dane.PinFailure, match="no certificate"):
        dane.check_pins(["ab" * 32], None)


@pytest.mark.parametrize("pattern,reference,wildcards,expected", [
    ("mx.test", "MX.test", True, True),
    ("mx.test.", "mx.test", False, True),
    ("*.example.test", "mx.example.test", True, True),
    ("*.example.test", "mx.example.test", False, False),
    ("*.example.test", "a.mx.example.test", True, False),
    ("*.example.test", "example.test", True, False),
    ("*.test", "mx.test", True, False),        # never a wildcard over a whole top-level name
    ("m*.example.test", "mx.example.test", True, False),
    ("*.*.test", "a.b.test", True, False),
    ("", "mx.test", True, False),
])
def test_name_matching(pattern, reference, wildcards, expected):
    assert dane.name_matches(pattern, reference, wildcards) is expected


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), cut=st.integers(0, 2000), flip=st.integers(0, 2000), byte=st.integers(0, 255))
def test_der_walker_raises_only_der_error(chain, data, cut, flip, byte):
    """Random bytes, and the real certificate cut or with one byte changed: spki() returns a
    slice of its input or raises DerError, nothing else."""
    mangled = bytearray(chain[0][:cut] if cut < len(chain[0]) else chain[0])
    if mangled:
        mangled[flip % len(mangled)] = byte
    for candidate in (data, bytes(mangled)):
        try:
            found = dane.spki(candidate)
        except dane.DerError:
            continue
        assert found in candidate and found[0] == 0x30
