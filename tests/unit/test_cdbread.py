"""cdbread: the bounded cdb lookup. Whatever the file holds, a lookup ends, reads only
inside the file, and either answers as pure-cdb's Reader does on a sound cdb or raises
Corrupt."""

import io
import struct

from hypothesis import given, settings, strategies as st
from cdblib import Reader, Writer

from qremote import cdbread


def build(items):
    out = io.BytesIO()
    writer = Writer(out)
    for key, value in items:
        writer.put(key, value)
    writer.finalize()
    return out.getvalue()


def test_hash_is_pure_cdbs():
    from cdblib.djb_hash import djb_hash
    for key in (b"", b"a", b"example.org", bytes(range(256)) * 3):
        assert cdbread.djb_hash(key) == djb_hash(key)


@given(st.dictionaries(st.binary(max_size=40), st.binary(max_size=40), max_size=300), st.binary(max_size=40))
@settings(max_examples=200, deadline=None)
def test_agrees_with_pure_cdb_on_a_sound_cdb(table, other):
    data = build(table.items())
    reader = Reader(data)
    for key, value in table.items():
        assert cdbread.get(data, key) == value == reader.get(key)
    assert cdbread.get(data, other) == table.get(other)


def test_first_value_of_a_duplicate_key():
    assert cdbread.get(build([(b"k", b"1"), (b"k", b"2")]), b"k") == b"1"


def slots(data, key):
    h = cdbread.djb_hash(key)
    table, count = struct.unpack_from("<LL", data, (h & 255) * 8)
    return h, table, count


def patched(data, at, fmt, *values):
    data = bytearray(data)
    struct.pack_into(fmt, data, at, *values)
    return bytes(data)


def raises_corrupt(data, key):
    try:
        cdbread.get(data, key)
    except cdbread.Corrupt:
        return True
    return False


def test_a_full_table_is_corrupt_not_an_endless_probe():
    data = build([(b"example.org", b"x"), (b"other", b"y")])
    h, table, count = slots(data, b"example.org")
    data = patched(data, table, "<" + "L" * 2 * count, *([h ^ 0x100, 2048] * count))
    assert raises_corrupt(data, b"example.org")


def test_a_record_outside_the_file_is_corrupt():
    data = build([(b"example.org", b"x")])
    h, table, count = slots(data, b"example.org")
    slot = next(at for at in range(table, table + 8 * count, 8) if struct.unpack_from("<L", data, at)[0] == h)
    for where in (len(data) - 4, len(data), 0xFFFFFFF0, 100):
        assert raises_corrupt(patched(data, slot + 4, "<L", where), b"example.org")


def test_a_record_longer_than_the_file_is_corrupt():
    data = build([(b"example.org", b"x")])
    assert raises_corrupt(patched(data, 2048, "<LL", 11, 0xFFFFFFF0), b"example.org")


def test_a_table_outside_the_file_is_corrupt():
    data = build([(b"example.org", b"x")])
    h = cdbread.djb_hash(b"example.org")
    for table, count in ((len(data) - 8, 2), (0xFFFFFFF8, 2), (0, 2), (2048, 0x7FFFFFFF)):
        assert raises_corrupt(patched(data, (h & 255) * 8, "<LL", table, count), b"example.org")


def test_shorter_than_the_header_is_corrupt():
    assert raises_corrupt(b"\0" * 2047, b"k")
    assert cdbread.get(b"\0" * 2048, b"k") is None  # an empty cdb


@given(st.binary(min_size=2048, max_size=6000), st.binary(max_size=20))
@settings(max_examples=300, deadline=None)
def test_noise_answers_or_is_corrupt(data, key):
    try:
        value = cdbread.get(data, key)
    except cdbread.Corrupt:
        return
    assert value is None or isinstance(value, bytes)
