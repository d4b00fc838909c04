"""A cdb lookup that never trusts the file: every read is bounded and checked.

The format (cr.yp.to/cdb/cdb.txt, 32-bit): 256 (table position, slot count) pairs,
then the records (key length, value length, key, value), then the tables of (hash,
record position) slots. Pairs are little-endian unsigned 32-bit. A key's hash picks
table hash & 255 and first slot (hash >> 8) % count; probing goes on to the next slot
(wrapping) until the key or an empty slot (position 0).

pure-cdb's Reader trusts all of it: a table without an empty slot loops forever, a
record position past the end raises struct.error. Here a lookup probes at most the
table's slot count, and a table, slot or record outside the file, or a table that is
full (every writer of the format leaves half of each table empty, pure-cdb's Writer
included), raises Corrupt: the caller rebuilds the file or does without it.
"""

import struct

HEADER = 2048  # 256 pairs of 8 bytes
_PAIR = struct.Struct("<LL")


class Corrupt(ValueError):
    """The cdb contradicts its own format: do not use it."""


def djb_hash(key):
    h = 5381
    for c in key:
        h = ((h << 5) + h ^ c) & 0xFFFFFFFF
    return h


def get(data, key):
    """The first value for key in data (bytes or an mmap holding a cdb), or None.

    Raises Corrupt for any inconsistency met on the way; never reads outside data,
    never probes a slot twice.
    """
    size = len(data)
    if size < HEADER:
        raise Corrupt("shorter than its header")
    h = djb_hash(key)
    table, slots = _PAIR.unpack_from(data, (h & 255) << 3)
    if not slots:
        return None
    if table < HEADER or table > size or slots > (size - table) >> 3:
        raise Corrupt("hash table outside the file")
    start = (h >> 8) % slots
    for probe in range(slots):
        slot_hash, record = _PAIR.unpack_from(data, table + (((start + probe) % slots) << 3))
        if not record:
            return None
        if slot_hash != h:
            continue
        if record < HEADER or record > size - 8:
            raise Corrupt("record outside the file")
        key_length, value_length = _PAIR.unpack_from(data, record)
        at = record + 8
        if key_length + value_length > size - at:
            raise Corrupt("record longer than the file")
        if key_length == len(key) and data[at:at + key_length] == key:
            return data[at + key_length:at + key_length + value_length]
    raise Corrupt("hash table without an empty slot")
