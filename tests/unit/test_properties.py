"""Property tests (hypothesis) for the sans-IO core: the reply parser, the message
encoder and address quoting, on arbitrary bytes split in arbitrary ways."""

import os
import sys

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "lib"))

from qremote import addresses, failures  # noqa: E402
from qremote.smtp import encoder as encoding  # noqa: E402
from qremote.smtp.reply import MAX_REPLY, MAX_TEXT, ReplyParser, ReplyTooLong, parse_replies  # noqa: E402

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that matter to the parser, so that interesting inputs are common, plus anything.
reply_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b"2", b"5", b"0", b"250", b"354", b"-", b" ", b"\r", b"\n", b"\r\n", b"\0",
                              b"\xff", b"x", b"250-", b"250 ", b"2 0", b"99", b"2000"]),
             max_size=60).map(b"".join),
)


def splits(data):
    """A strategy for data cut at arbitrary points."""
    return st.lists(st.integers(0, len(data)), max_size=8).map(
        lambda cuts: [data[a:b] for a, b in zip([0] + sorted(cuts), sorted(cuts) + [len(data)])])


def parse_in_pieces(pieces):
    """(code, text, bytes used) or "too long", feeding the pieces one after another."""
    parser = ReplyParser()
    used = 0
    try:
        for piece in pieces:
            used += parser.feed(piece)
            if parser.reply is not None:
                break
    except ReplyTooLong:
        return "too long"
    if parser.reply is None:
        return None
    return parser.reply.code, parser.reply.text, used


# --- the reply parser ---

@SETTINGS
@given(st.data(), reply_bytes)
@example(None, b"2 0 odd\r\n")
@example(None, b"250-a\r\n250-b\r\n250 c\r\n")
def test_reply_parser_split_anywhere_same_result(data, raw):
    whole = parse_in_pieces([raw])
    pieces = data.draw(splits(raw)) if data is not None else [raw[:1], raw[1:]]
    assert parse_in_pieces(pieces) == whole
    assert parse_in_pieces([raw[i:i + 1] for i in range(len(raw))]) == whole


@SETTINGS
@given(reply_bytes)
def test_reply_is_well_formed(raw):
    result = parse_in_pieces([raw])
    if result is None or result == "too long":
        return
    code, text, used = result
    assert 0 < used <= len(raw) and raw[used - 1:used] == b"\n"
    assert code is None or 200 <= code <= 599
    if code is not None:
        assert text[:3] == b"%d" % code  # success is never guessed from a malformed line
    assert b"\r" not in text and b"\0" not in text
    assert len(text) <= MAX_TEXT + 1 and text.endswith(b"\n") or len(text) == MAX_TEXT


@SETTINGS
@given(reply_bytes)
def test_parse_replies_never_raises_anything_else(raw):
    try:
        replies, rest = parse_replies(raw)
    except ReplyTooLong:
        return
    assert all(reply.code is None or 200 <= reply.code <= 599 for reply in replies)
    assert len(rest) <= len(raw)


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.sampled_from([b"", b"\n", b"250-"]), st.data())
def test_endless_replies_are_too_long_however_split(unit, sep, data):
    assume(b"\n" not in unit or sep == b"")
    line = b"250-" + unit.replace(b"\n", b"") + b"\n" if sep == b"250-" else unit.replace(b"\n", b"x") + sep
    if sep == b"\n":
        line = b"250-" + line  # continuation lines, forever
    raw = line * (MAX_REPLY // len(line) + 2)
    cut = data.draw(st.integers(1, len(raw) - 1))
    assert parse_in_pieces([raw]) == "too long"
    assert parse_in_pieces([raw[:cut], raw[cut:]]) == "too long"


# --- the message encoder ---

message_bytes = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"\n.", b"\r.", b"x", b"\xe9", b"\0", b" "]),
             max_size=80).map(b"".join),
)


def normalised(message):
    """The documented normalisation: each CRLF and each bare CR becomes LF."""
    return message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def unstuffed(body):
    """What a server makes of the DATA lines: one leading dot off each line, CRLF -> LF."""
    lines = body.split(b"\r\n")
    assert lines[-1] == b""
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\n" for line in lines[:-1])


@SETTINGS
@given(st.data(), message_bytes)
@example(None, b"a\r\nb\rc\n")
def test_wire_size_is_the_encoded_size_without_stuffing(data, message):
    """SIZE= (RFC 1870): every line end as CRLF, no dot-stuffing, no final dot; a CRLF
    cut between two chunks is still one line end."""
    pieces = data.draw(splits(message)) if data is not None else [message]
    counter = encoding.WireSize()
    for piece in pieces:
        counter.feed(piece)
    lines = normalised(message)
    assert counter.size == len(lines) + lines.count(b"\n")
    if not message or message[-1:] in (b"\n", b"\r"):
        body = encoding.encode(message)[:-3]
        assert counter.size == len(unstuffed(body)) + unstuffed(body).count(b"\n")


def encode_in_pieces(pieces):
    encoder = encoding.Encoder()
    out = b"".join(encoder.feed(piece) for piece in pieces)
    return out + encoder.finish()


@SETTINGS
@given(st.data(), message_bytes)
@example(None, b"h\r.\nMAIL FROM:<x>\n")
@example(None, b".\r")
def test_encoder_wire_form(data, message):
    pieces = data.draw(splits(message)) if data is not None else [message]
    complete = not message or message[-1:] in (b"\n", b"\r")
    try:
        wire = encode_in_pieces(pieces)
    except encoding.PartialLine:
        assert not complete
        return
    assert complete
    assert wire == encoding.encode(message)  # chunking changes nothing
    assert wire.endswith(b".\r\n")
    body = wire[:-3]
    assert body == b"" or body.endswith(b"\r\n")
    # only CRLF line ends: no CR without LF after it, no LF without CR before it
    assert body.count(b"\r") == body.count(b"\n") == body.count(b"\r\n")
    # no line of the body is the terminator, and every line-initial dot is stuffed
    assert b"\r\n.\r\n" not in b"\r\n" + body
    assert unstuffed(body) == normalised(message)


# --- addresses ---

def unquote(local):
    """The local part as it was before quoting (RFC 5321 quoted-string)."""
    if not local.startswith(b'"'):
        return local
    assert local.endswith(b'"') and len(local) >= 2
    out = bytearray()
    inner = local[1:-1]
    i = 0
    while i < len(inner):
        c = inner[i:i + 1]
        if c == b"\\":
            out += inner[i + 1:i + 2]
            i += 2
            continue
        assert c != b'"', "unescaped quote inside a quoted string: %r" % local
        out += c
        i += 1
    return bytes(out)


ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"

address_bytes = st.one_of(
    st.binary(max_size=60),
    st.lists(st.sampled_from([b"a", b"@", b".", b"..", b'"', b"\\", b"<", b">", b" ", b"\r", b"\n", b"\0",
                              b"\xce\xb4", b"\xce", b"\xe9", b"x.example", b"[1.2.3.4]"]), max_size=20).map(b"".join),
)


@SETTINGS
@given(address_bytes)
@example(b"a@b> SIZE=1")
@example(b'"<"@x')
def test_address_quoting(address):
    try:
        (sender, [recipient]) = addresses.envelope(address, [address])
    except failures.BadAddress:
        return
    assert sender == recipient
    for forbidden in (b"\r", b"\n", b"\0"):
        assert forbidden not in recipient
    if b"@" not in address:  # sent as it is (stock): "" is the null sender
        assert recipient == address and b"<" not in address and b">" not in address
        return
    if recipient.startswith(b'"'):
        end = quoted_end(recipient)
        local, rest = recipient[:end], recipient[end:]
        assert rest.startswith(b"@")
        domain = rest[1:]
        assert unquote(local) == address.rpartition(b"@")[0]
    else:
        local, _, domain = recipient.rpartition(b"@")
        assert recipient == address
        # not quoted: nothing in it may act as a bracket of the path, and it is a
        # dot-string of RFC 6531 atext (atom bytes and UTF-8 non-ASCII characters)
        assert b"<" not in local and b">" not in local
        if local:
            atoms = local.decode("utf-8").split(".")
            assert all(atom and all(not ch.isascii() or ch in ATEXT for ch in atom) for atom in atoms), local
    assert b"<" not in domain and b">" not in domain  # "<" + path + ">" stays one path


def quoted_end(text):
    """The index just past the quoted string text starts with."""
    i = 1
    while i < len(text):
        if text[i:i + 1] == b"\\":
            i += 2
            continue
        if text[i:i + 1] == b'"':
            return i + 1
        i += 1
    raise AssertionError("unterminated quoted string: %r" % text)


@SETTINGS
@given(address_bytes)
def test_bad_address_only_for_unsendable_bytes(address):
    """BadAddress exactly for CR, LF, NUL anywhere, or an angle bracket in the unquoted part."""
    unquoted = address.rpartition(b"@")[2]
    unsendable = any(c in address for c in (b"\r", b"\n", b"\0")) or b"<" in unquoted or b">" in unquoted
    try:
        addresses.envelope(b"", [address])
    except failures.BadAddress:
        assert unsendable
    else:
        assert not unsendable


# --- the transaction: K only after a 2xx to the final dot ---

from qremote.smtp.ehlo import Capabilities  # noqa: E402
from qremote.smtp.reply import Reply  # noqa: E402
from qremote.smtp.transaction import AFTER_DOT, BODY, DONE, Transaction  # noqa: E402

reply_codes = st.one_of(st.none(), st.integers(200, 599), st.sampled_from([250, 354, 451, 550]))


@SETTINGS
@given(st.lists(reply_codes, max_size=12), st.integers(1, 4), st.booleans(), st.integers(0, 12))
def test_transaction_success_only_after_2xx_to_the_dot(codes, recipients, pipelining, drop_at):
    """Any reply sequence, a connection lost at any point: DONE only after a 2xx to the
    dot, one report per recipient answered, a possible duplicate only after the dot."""
    caps = Capabilities(["PIPELINING"] if pipelining else [])
    transaction = Transaction(b"192.0.2.1", b"s@x", [b"r%d@y" % i for i in range(recipients)], caps)
    transaction.opening()
    reports = []
    replies = 0
    try:
        for code in codes:
            if transaction.phase == BODY:
                transaction.final_write(3, 3)
            if replies == drop_at:
                died = transaction.died()
                assert died.duplicate == (transaction.phase == AFTER_DOT)
                break
            replies += 1
            text = b"%d x\n" % code if code is not None else b"junk\n"
            transaction.receive(Reply(code, text))
            reports += transaction.take_reports()
            if transaction.phase == DONE:
                break
    except failures.Failure as failure:
        reports += transaction.take_reports()
        assert failure.letter in (failures.Z, failures.D)
        assert transaction.phase != DONE
    assert len(reports) <= recipients
    if transaction.phase == DONE:
        assert 200 <= transaction.success.code < 300
        assert any(letter == failures.RCPT_OK for letter, _ in reports)


import pytest  # noqa: E402


def test_bad_address_text_names_the_angle_bracket():
    with pytest.raises(failures.BadAddress) as raised:
        addresses.envelope(b"", [b"a@b> NOTIFY=NEVER"])
    assert b"<" in raised.value.text() or b"angle" in raised.value.text()
