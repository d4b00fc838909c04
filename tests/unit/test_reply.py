"""Examples for the sans-IO reply parser (lib/qremote/smtp/reply.py): what a reply is,
where it ends, what is kept of its text, and what counts as malformed. The property
tests (test_properties.py) cover arbitrary bytes; these pin the readable cases down."""

import pytest

from qremote.smtp.reply import MAX_REPLY, MAX_TEXT, Reply, ReplyParser, ReplyTooLong, parse_code, parse_replies


def parse(data):
    """(reply, bytes used) from one feed of data."""
    parser = ReplyParser()
    used = parser.feed(data)
    return parser.reply, used


def parse_pieces(pieces):
    """(code, text, bytes used) feeding pieces in order, or None if no whole reply came."""
    parser = ReplyParser()
    used = 0
    for piece in pieces:
        used += parser.feed(piece)
    if parser.reply is None:
        return None
    return parser.reply.code, parser.reply.text, used


# --- single-line and multi-line replies ---

def test_single_line_reply():
    reply, used = parse(b"250 ok\r\n")
    assert (reply.code, reply.text, used) == (250, b"250 ok\n", 8)
    assert reply.ok


def test_multi_line_reply_ends_at_the_line_without_dash():
    data = b"250-mx.example hello\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
    reply, used = parse(data)
    assert reply.code == 250
    assert reply.text == b"250-mx.example hello\n250-PIPELINING\n250 8BITMIME\n"
    assert reply.lines() == [b"250-mx.example hello", b"250-PIPELINING", b"250 8BITMIME"]
    assert used == len(data)


def test_continuation_lines_keep_the_parser_waiting():
    parser = ReplyParser()
    assert parser.feed(b"250-first\r\n") == 11
    assert parser.reply is None
    assert parser.feed(b"250-second\r\n") == 12
    assert parser.reply is None
    assert parser.feed(b"250 last\r\n") == 10
    assert parser.reply.text == b"250-first\n250-second\n250 last\n"


def test_code_alone_is_a_whole_reply():
    reply, _ = parse(b"250\r\n")
    assert (reply.code, reply.text) == (250, b"250\n")


def test_line_with_code_and_dash_only_continues():
    reply, _ = parse(b"250-\r\n250 \r\n")
    assert (reply.code, reply.text) == (250, b"250-\n250 \n")


def test_continuation_line_with_another_code_keeps_the_first_code():
    # reply.py rule 1: only the first line's code counts (as stock, section 10)
    reply, _ = parse(b"250-looks fine\r\n550 but is not\r\n")
    assert reply.code == 250
    assert reply.text == b"250-looks fine\n550 but is not\n"


def test_continuation_line_without_a_code_ends_the_reply_unless_its_4th_byte_is_dash():
    reply, used = parse(b"250-a\r\nxyz-b\r\nabc c\r\nrest")
    assert (reply.code, reply.text) == (250, b"250-a\nxyz-b\nabc c\n")
    assert used == len(b"250-a\r\nxyz-b\r\nabc c\r\n")


def test_short_continuation_line_ends_the_reply():
    reply, _ = parse(b"250-a\r\nok\r\n")
    assert (reply.code, reply.text) == (250, b"250-a\nok\n")


# --- split anywhere, line ends ---

REPLIES = [
    b"250 ok\r\n",
    b"250-mx.example\r\n250-SIZE 1000\r\n250 PIPELINING\r\n",
    b"554-no\nthing\r\n",
    b"2 0 odd\r\n",
    b"451-a\0b\r\n451 \xff\r\n",
]


@pytest.mark.parametrize("data", REPLIES)
def test_split_at_every_byte_boundary_gives_the_same_reply(data):
    whole = parse_pieces([data])
    assert whole is not None and whole[2] == len(data)
    for cut in range(len(data) + 1):
        assert parse_pieces([data[:cut], data[cut:]]) == whole, cut
    assert parse_pieces([data[i:i + 1] for i in range(len(data))]) == whole


def test_split_between_cr_and_lf():
    assert parse_pieces([b"250 ok\r", b"\n"]) == (250, b"250 ok\n", 8)


def test_bare_lf_line_ends():
    reply, used = parse(b"250-a\n250-b\n250 c\n")
    assert (reply.code, reply.text, used) == (250, b"250-a\n250-b\n250 c\n", 18)


def test_mixed_line_ends():
    reply, _ = parse(b"250-a\r\n250-b\n250 c\r\n")
    assert reply.text == b"250-a\n250-b\n250 c\n"


def test_cr_bytes_inside_a_line_are_dropped():
    # stock section 10: every byte but CR is stored
    reply, _ = parse(b"250 a\rb\r\r\n")
    assert reply.text == b"250 ab\n"


def test_incomplete_reply_waits_for_its_line_end():
    parser = ReplyParser()
    assert parser.feed(b"250 ok") == 6
    assert parser.reply is None
    assert parser.feed(b"") == 0
    assert parser.reply is None
    assert parser.feed(b"\r\n") == 2
    assert parser.reply.code == 250


def test_a_finished_parser_takes_no_more_bytes():
    parser = ReplyParser()
    assert parser.feed(b"250 a\r\n250 b\r\n") == 7
    assert parser.feed(b"354 more\r\n") == 0
    assert parser.reply.text == b"250 a\n"


# --- malformed codes: code None, never success (reply.py rule 2) ---

@pytest.mark.parametrize("line", [
    b"2 0 odd",  # stock computes 40 from this and says "accepted"
    b"99",
    b"99 x",
    b"2000 x",
    b"2500",
    b"250x",
    b"abc x",
    b"hello",
    b"",
    b"600 too high",
    b"199 too low",
    b"099 x",
    b" 250 leading blank",
    b"25",
    b"\xb2\xb5\xb0 8-bit digits",
])
def test_malformed_first_line_gives_code_none(line):
    reply, used = parse(line + b"\r\n")
    assert reply.code is None
    assert not reply.ok
    assert used == len(line) + 2


def test_malformed_first_line_ends_the_reply_even_with_a_dash():
    # a malformed line cannot announce continuation lines: what follows is the next reply
    replies, rest = parse_replies(b"2x0-more\r\n250 ok\r\n")
    assert [(r.code, r.text) for r in replies] == [(None, b"2x0-more\n"), (250, b"250 ok\n")]
    assert rest == b""


@pytest.mark.parametrize("line, code", [
    (b"200", 200), (b"220 ready", 220), (b"354-go", 354), (b"421 bye", 421), (b"599 x", 599),
])
def test_parse_code_valid(line, code):
    assert parse_code(line) == code


@pytest.mark.parametrize("code, ok", [(250, True), (354, True), (421, False), (550, False), (None, False)])
def test_reply_ok_only_for_2xx_and_3xx(code, ok):
    assert Reply(code, b"x\n").ok is ok


# --- text: NUL, 8-bit, the 5000-byte cap ---

def test_nul_becomes_question_mark_and_8_bit_and_controls_are_kept():
    # reply.py rule 4 and stock section 10: only NUL is replaced; tabs, ESC, 8-bit raw
    reply, _ = parse(b"550 bad\0user \xff\xe9\t\x1b[1m\r\n")
    assert reply.code == 550
    assert reply.text == b"550 bad?user \xff\xe9\t\x1b[1m\n"


def test_nul_in_a_continuation_line():
    reply, _ = parse(b"250-\0\0\r\n250 ok\r\n")
    assert reply.text == b"250-??\n250 ok\n"


def test_long_line_text_is_capped_at_5000_bytes():
    assert MAX_TEXT == 5000  # as stock
    data = b"250 " + b"x" * 6000 + b"\r\n"
    reply, used = parse(data)
    assert reply.code == 250
    assert used == len(data)
    assert reply.text == b"250 " + b"x" * (MAX_TEXT - 4)  # cut where the cap hit, no LF


def test_text_of_exactly_5000_bytes_is_kept_whole():
    line = b"250 " + b"y" * (MAX_TEXT - 5)  # 4999 bytes + LF = 5000
    reply, _ = parse(line + b"\r\n")
    assert reply.text == line + b"\n"
    assert len(reply.text) == MAX_TEXT


def test_many_lines_text_is_capped_at_5000_bytes_and_the_reply_still_ends():
    lines = [b"250-" + (b"%04d" % i) * 20 for i in range(200)] + [b"250 end"]
    data = b"".join(line + b"\r\n" for line in lines)
    reply, used = parse(data)
    assert used == len(data)
    assert reply.code == 250
    assert reply.text == b"".join(line + b"\n" for line in lines)[:MAX_TEXT]


def test_long_line_capped_the_same_however_split():
    data = b"550 " + b"z" * 7000 + b"\r\n"
    whole = parse_pieces([data])
    for cut in (1, 4, 4999, 5000, 5001, 6000, len(data) - 1):
        assert parse_pieces([data[:cut], data[cut:]]) == whole


def test_cr_bytes_do_not_count_against_the_text_cap():
    data = b"250 " + b"\r" * 5000 + b"tail\r\n"
    reply, _ = parse(data)
    assert reply.text == b"250 tail\n"


# --- MAX_REPLY ---

def reply_of_size(total):
    """A multi-line 250 reply of exactly total bytes (lines of 1024 bytes, LF ends)."""
    lines = []
    left = total
    while left > 2048:
        lines.append(b"250-" + b"x" * 1019 + b"\n")
        left -= 1024
    lines.append(b"250 " + b"y" * (left - 5) + b"\n")
    data = b"".join(lines)
    assert len(data) == total
    return data


def test_reply_of_exactly_max_reply_bytes_is_read():
    data = reply_of_size(MAX_REPLY)
    reply, used = parse(data)
    assert reply.code == 250 and used == MAX_REPLY


def test_reply_one_byte_over_max_reply_is_too_long():
    with pytest.raises(ReplyTooLong):
        parse(reply_of_size(MAX_REPLY + 1))


def test_endless_line_without_lf_is_too_long_fed_in_pieces():
    parser = ReplyParser()
    with pytest.raises(ReplyTooLong):
        for _ in range(MAX_REPLY // 1000 + 2):
            parser.feed(b"250 " + b"x" * 996)


def test_endless_continuation_lines_are_too_long():
    parser = ReplyParser()
    with pytest.raises(ReplyTooLong):
        for _ in range(MAX_REPLY // 8 + 2):
            parser.feed(b"250-ab\r\n")


# --- several replies in one buffer (pipelining), leftover bytes ---

def test_pipelined_replies_in_one_buffer():
    data = b"250 sender ok\r\n250-rcpt\r\n250 ok\r\n550 no such user\r\n354 go ahead\r\n"
    replies, rest = parse_replies(data)
    assert [(r.code, r.text) for r in replies] == [
        (250, b"250 sender ok\n"), (250, b"250-rcpt\n250 ok\n"), (550, b"550 no such user\n"), (354, b"354 go ahead\n")]
    assert rest == b""


def test_feed_says_where_the_reply_ends():
    data = b"250 ok\r\n354 go\r\n"
    parser = ReplyParser()
    used = parser.feed(data)
    assert used == 8
    assert data[used:] == b"354 go\r\n"


def test_leftover_partial_reply_is_returned():
    replies, rest = parse_replies(b"250 a\r\n250 b\r\n25")
    assert [r.code for r in replies] == [250, 250]
    assert rest == b"25"


def test_leftover_after_unfinished_multi_line_reply():
    replies, rest = parse_replies(b"250 a\r\n250-b\r\n")
    assert [r.text for r in replies] == [b"250 a\n"]
    assert rest == b"250-b\r\n"


def test_no_reply_in_empty_buffer():
    assert parse_replies(b"") == ([], b"")
