"""Examples for the message encoder (lib/qremote/smtp/encoder.py): line ends, dot-stuffing,
bare CRs, chunk boundaries and the terminator, byte for byte."""

import pytest

from qremote.smtp import encoder as encoding
from qremote.smtp.encoder import Encoder, PartialLine, encode


def encode_chunks(*chunks):
    encoder = Encoder()
    out = b"".join(encoder.feed(chunk) for chunk in chunks)
    return out + encoder.finish()


def every_split(message):
    """The wire form of message cut in two at each position, and one byte at a time."""
    forms = {encode_chunks(message[:cut], message[cut:]) for cut in range(len(message) + 1)}
    forms.add(encode_chunks(*[message[i:i + 1] for i in range(len(message))]))
    return forms


# --- line ends ---

def test_lf_becomes_crlf():
    assert encode(b"Subject: x\n\nbody\n") == b"Subject: x\r\n\r\nbody\r\n.\r\n"


def test_crlf_stays_one_crlf():
    assert encode(b"a\r\nb\r\n") == b"a\r\nb\r\n.\r\n"


def test_bare_cr_is_a_line_end():
    assert encode(b"a\rb\n") == b"a\r\nb\r\n.\r\n"


def test_cr_cr_lf_is_two_line_ends():
    # notqmail sends "\r\n\r\r\n" here (a bare CR on the wire); stock section 11
    assert encode(b"g\r\r\n") == b"g\r\n\r\n.\r\n"


def test_empty_lines_are_kept():
    assert encode(b"\n\n\n") == b"\r\n\r\n\r\n.\r\n"


# --- dot-stuffing ---

def test_dot_on_the_very_first_line_is_stuffed():
    assert encode(b".hidden\n") == b"..hidden\r\n.\r\n"


def test_lone_dot_line_is_stuffed():
    assert encode(b"a\n.\nb\n") == b"a\r\n..\r\nb\r\n.\r\n"


def test_dot_at_every_line_start_is_stuffed():
    assert encode(b".a\n..b\n...\n") == b"..a\r\n...b\r\n....\r\n.\r\n"


def test_dot_inside_a_line_is_not_stuffed():
    assert encode(b"a.b\nc .\n") == b"a.b\r\nc .\r\n.\r\n"


def test_dot_after_crlf_is_stuffed():
    assert encode(b"a\r\n.\r\nb\r\n") == b"a\r\n..\r\nb\r\n.\r\n"


def test_dot_after_a_chunk_boundary_at_a_line_start_is_stuffed():
    assert encode_chunks(b"a\n", b".b\n") == b"a\r\n..b\r\n.\r\n"
    assert encode_chunks(b"", b".b\n") == b"..b\r\n.\r\n"


def test_dot_after_a_chunk_boundary_inside_a_line_is_not_stuffed():
    assert encode_chunks(b"a", b".b\n") == b"a.b\r\n.\r\n"


def test_dot_chunks_one_byte_each():
    assert encode_chunks(b".", b".", b"\n", b".", b"\n") == b"...\r\n..\r\n.\r\n"


# --- bare CR then dot: must not end DATA early (the notqmail bug, stock section 11) ---

def test_cr_dot_does_not_end_data_early():
    message = b"h\r.\nMAIL FROM:<evil@example>\n"
    wire = encode(message)
    assert wire == b"h\r\n..\r\nMAIL FROM:<evil@example>\r\n.\r\n"
    assert wire.index(b"\r\n.\r\n") == len(wire) - 5  # the only terminator is the last


def test_cr_dot_split_between_cr_and_dot():
    assert every_split(b"h\r.\ntail\n") == {b"h\r\n..\r\ntail\r\n.\r\n"}


def test_stock_observed_example_without_the_hazard():
    # stock section 11's [observed] input; notqmail's output differs at "\r\r\n" and "h\r.\n"
    message = b".a\n..b\nc\r\nd\re\n\rf\n.\n\n.\r\ng\r\r\nh\r.\ntail\n"
    expected = (b"..a\r\n...b\r\nc\r\nd\r\ne\r\n\r\nf\r\n..\r\n\r\n..\r\ng\r\n\r\nh\r\n..\r\ntail\r\n"
                b".\r\n")
    assert encode(message) == expected
    assert every_split(message) == {expected}


def test_no_bare_cr_or_lf_on_the_wire():
    wire = encode(b"a\rb\r\rc\n\rd\r\n\n.\r.\r")
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")


# --- chunk boundaries between CR and LF ---

def test_chunk_boundary_between_cr_and_lf_gives_one_line_end():
    assert encode_chunks(b"a\r", b"\nb\n") == b"a\r\nb\r\n.\r\n"


def test_held_cr_gives_no_output_until_the_next_chunk():
    encoder = Encoder()
    assert encoder.feed(b"a\r") == b"a"
    assert encoder.feed(b"\r") == b"\r\n"  # the first CR was bare; the second is held
    assert encoder.feed(b"\n") == b"\r\n"
    assert encoder.finish() == b".\r\n"


def test_chunk_of_a_lone_cr():
    encoder = Encoder()
    assert encoder.feed(b"\r") == b""
    assert encoder.feed(b"\n") == b"\r\n"
    assert encoder.finish() == b".\r\n"


def test_empty_chunk_changes_nothing():
    encoder = Encoder()
    assert encoder.feed(b"a\r") == b"a"
    assert encoder.feed(b"") == b""
    assert encoder.feed(b"\n.x\n") == b"\r\n..x\r\n"
    assert encoder.finish() == b".\r\n"


@pytest.mark.parametrize("message", [
    b"a\r\nb\r\n", b"a\rb\r", b"\r\r\r\n\n", b".\r.\r\n.\n", b"x\r\n.\r\n.\r\n", b"\xe9\r\n.\xff\n",
])
def test_chunking_never_changes_the_wire_form(message):
    assert every_split(message) == {encode(message)}


# --- the end of the message ---

def test_empty_message_is_just_the_terminator():
    assert encode(b"") == b".\r\n"
    assert Encoder().finish() == b".\r\n"


def test_terminator_follows_the_last_line_end():
    wire = encode(b"last line\n")
    assert wire.endswith(b"last line\r\n.\r\n")


def test_cr_as_the_very_last_byte_is_a_line_end():
    # stock section 11 [observed]: "x\r" -> "x\r\n.\r\n"
    assert encode(b"x\r") == b"x\r\n.\r\n"
    assert encode_chunks(b"x", b"\r") == b"x\r\n.\r\n"


def test_dot_cr_at_the_end():
    assert encode(b".\r") == b"..\r\n.\r\n"


@pytest.mark.parametrize("message", [b"no line end", b"a\nb", b".", b"a\r\nb"])
def test_partial_final_line_raises_and_sends_no_terminator(message):
    # encoder.py: PartialLine, no terminator; qmail_remote_io turns it into stock's D (#5.6.2)
    encoder = Encoder()
    sent = encoder.feed(message)
    assert not sent.endswith(b".\r\n")
    with pytest.raises(PartialLine):
        encoder.finish()
    with pytest.raises(PartialLine):
        encode(message)


def test_partial_final_line_after_a_chunk_boundary():
    encoder = Encoder()
    encoder.feed(b"a\n")
    encoder.feed(b"b")
    with pytest.raises(PartialLine):
        encoder.finish()




def test_8_bit_and_nul_bytes_pass_unchanged():
    assert encode(b"\xff\x00\xe9\n") == b"\xff\x00\xe9\r\n.\r\n"


# --- SIZE= (RFC 1870): the size with CRLF line ends ---

@pytest.mark.parametrize("pieces, size", [
    ([b""], 0),
    ([b"a\n"], 3),
    ([b"a\nb\n"], 6),
    ([b"a\r\n"], 3),  # a CRLF stays one line end
    ([b"a\r", b"\n"], 3),  # ... also cut between two chunks
    ([b"a\rb\n"], 6),  # a bare CR is a line end too
    ([b"a\r"], 3),  # a last CR is sent as CRLF
    ([b".a\n..\n"], 8),  # dot-stuffing is not counted
    ([b"a\n", b"", b"\n"], 5),
])
def test_wire_size(pieces, size):
    counter = encoding.WireSize()
    for piece in pieces:
        counter.feed(piece)
    assert counter.size == size
