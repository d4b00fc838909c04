"""Examples for the sans-IO mail transaction (lib/qremote/smtp/transaction.py): which
commands go out when, with and without PIPELINING, what each reply leads to, the
per-recipient reports, and K only after a 2xx to the final dot."""

import pytest

from qremote import failures
from qremote.smtp.ehlo import Capabilities
from qremote.smtp.reply import parse_replies
from qremote.smtp.transaction import AFTER_DOT, BODY, DATA, DONE, MAIL, RCPT, Transaction

IP = b"192.0.2.7"
PLAIN = Capabilities()  # HELO, or EHLO without PIPELINING
PIPELINING = Capabilities({"PIPELINING"})


def reply(raw):
    """A Reply from wire bytes, through the real parser."""
    (parsed,), rest = parse_replies(raw)
    assert rest == b""
    return parsed


def ok(code=250):
    return reply(b"%d ok\r\n" % code)


def transaction(caps=PLAIN, recipients=(b"a@y.example", b"b@y.example"), **kw):
    return Transaction(IP, b"s@x.example", list(recipients), caps, **kw)


# --- without PIPELINING: one command per reply ---

def test_plain_transaction_step_by_step():
    t = transaction()
    assert t.phase == MAIL
    assert t.opening() == b"MAIL FROM:<s@x.example>\r\n"
    assert t.receive(ok()) == b"RCPT TO:<a@y.example>\r\n"
    assert t.phase == RCPT
    assert t.take_reports() == []
    assert t.receive(ok()) == b"RCPT TO:<b@y.example>\r\n"
    assert t.take_reports() == [(failures.RCPT_OK, b"")]
    assert t.receive(ok()) == b"DATA\r\n"
    assert t.take_reports() == [(failures.RCPT_OK, b"")]
    assert t.phase == DATA
    assert t.receive(reply(b"354 go ahead\r\n")) == b""
    assert t.phase == BODY
    t.final_write(100, 100)
    assert t.phase == AFTER_DOT
    assert t.receive(reply(b"250 2.0.0 queued as 1234\r\n")) == b""
    assert t.phase == DONE
    assert t.success.code == 250
    assert failures.accepted(t.ip, t.success) == b"192.0.2.7 accepted message.\nRemote host said: 250 2.0.0 queued as 1234\n"


def test_plain_transaction_sends_data_only_after_an_accepted_recipient():
    t = transaction(recipients=[b"a@y", b"b@y", b"c@y"])
    t.opening()
    assert t.receive(ok()) == b"RCPT TO:<a@y>\r\n"
    assert t.receive(reply(b"550 no\r\n")) == b"RCPT TO:<b@y>\r\n"
    assert t.receive(reply(b"451 later\r\n")) == b"RCPT TO:<c@y>\r\n"
    assert t.receive(ok()) == b"DATA\r\n"
    assert [letter for letter, _ in t.take_reports()] == [failures.RCPT_PERM, failures.RCPT_TEMP, failures.RCPT_OK]
    assert t.accepted == 1


# --- with PIPELINING: one batch ---

def test_pipelining_sends_mail_rcpts_and_data_in_one_batch():
    t = transaction(PIPELINING)
    assert t.opening() == (b"MAIL FROM:<s@x.example>\r\n"
                           b"RCPT TO:<a@y.example>\r\n"
                           b"RCPT TO:<b@y.example>\r\n"
                           b"DATA\r\n")


def test_pipelining_replies_are_read_in_order_and_send_nothing_more():
    t = transaction(PIPELINING, recipients=[b"a@y", b"b@y", b"c@y"])
    t.opening()
    replies, rest = parse_replies(b"250 sender ok\r\n250 ok\r\n550 5.1.1 unknown\r\n450 greylisted\r\n354 go\r\n")
    assert rest == b""
    assert [t.receive(r) for r in replies] == [b""] * 5
    assert t.phase == BODY
    assert [letter for letter, _ in t.take_reports()] == [failures.RCPT_OK, failures.RCPT_PERM, failures.RCPT_TEMP]
    t.final_write(100, 100)
    assert t.receive(ok()) == b""
    assert t.phase == DONE


def test_pipelining_is_used_only_when_offered():
    t = transaction(Capabilities({"SIZE", "8BITMIME"}))
    assert t.opening() == b"MAIL FROM:<s@x.example>\r\n"
    assert not t.pipelining


# --- per-recipient reports ---

@pytest.mark.parametrize("raw, letter", [
    (b"250 ok\r\n", failures.RCPT_OK),
    (b"251 will forward\r\n", failures.RCPT_OK),
    (b"354 odd but below 400\r\n", failures.RCPT_OK),  # elsewhere any reply below 400 goes on (rule 2)
    (b"450 mailbox busy\r\n", failures.RCPT_TEMP),
    (b"452 too many recipients\r\n", failures.RCPT_TEMP),
    (b"550 no such user\r\n", failures.RCPT_PERM),
    (b"553 not allowed\r\n", failures.RCPT_PERM),
    (b"2 0 malformed\r\n", failures.RCPT_TEMP),  # never a guess of success (stock says r here)
    (b"junk\r\n", failures.RCPT_TEMP),
])
def test_recipient_letter(raw, letter):
    t = transaction(recipients=[b"a@y", b"b@y"])
    t.opening()
    t.receive(ok())
    t.receive(reply(raw))
    [(got, text)] = t.take_reports()
    assert got == letter
    if letter == failures.RCPT_OK:
        assert text == b""
    else:
        assert text == b"192.0.2.7 does not like recipient.\nRemote host said: " + reply(raw).text


def test_recipient_report_text_keeps_a_multi_line_reply():
    t = transaction(recipients=[b"a@y", b"b@y"])
    t.opening()
    t.receive(ok())
    t.receive(reply(b"550-5.1.1 no such user\r\n550 5.1.1 see https://example/\r\n"))
    assert t.take_reports() == [(failures.RCPT_PERM, b"192.0.2.7 does not like recipient.\nRemote host said: "
                                 b"550-5.1.1 no such user\n550 5.1.1 see https://example/\n")]


def test_take_reports_empties_the_queue():
    t = transaction(recipients=[b"a@y", b"b@y"])
    t.opening()
    t.receive(ok())
    t.receive(ok())
    assert len(t.take_reports()) == 1
    assert t.take_reports() == []


# --- all recipients refused: no DATA, no body ---

def test_all_recipients_refused_without_pipelining_gives_up_before_data():
    t = transaction(recipients=[b"a@y", b"b@y"])
    t.opening()
    t.receive(ok())
    assert t.receive(reply(b"550 no\r\n")) == b"RCPT TO:<b@y>\r\n"
    with pytest.raises(failures.NoRecipients) as raised:
        t.receive(reply(b"451 later\r\n"))
    assert raised.value.letter == failures.D
    assert raised.value.text() == b"Giving up on 192.0.2.7.\n"
    assert [letter for letter, _ in t.take_reports()] == [failures.RCPT_PERM, failures.RCPT_TEMP]
    assert t.phase == RCPT  # never DATA, never BODY: no message is sent


def test_all_recipients_refused_with_pipelining_sends_no_body():
    t = transaction(PIPELINING, recipients=[b"a@y", b"b@y"])
    t.opening()
    t.receive(ok())
    t.receive(reply(b"550 no\r\n"))
    with pytest.raises(failures.NoRecipients):
        t.receive(reply(b"550 no\r\n"))
    assert len(t.take_reports()) == 2
    assert t.phase not in (BODY, AFTER_DOT, DONE)  # the reply to the pipelined DATA is not acted on


# --- MAIL ---

@pytest.mark.parametrize("raw, letter", [
    (b"550 sender refused\r\n", failures.D),
    (b"553 bad sender\r\n", failures.D),
    (b"421 closing\r\n", failures.Z),
    (b"451 try later\r\n", failures.Z),
    (b"2 0 malformed\r\n", failures.Z),
])
def test_sender_rejected(raw, letter):
    for caps in (PLAIN, PIPELINING):
        t = transaction(caps)
        t.opening()
        with pytest.raises(failures.SenderRejected) as raised:
            t.receive(reply(raw))
        assert raised.value.letter == letter
        assert raised.value.text() == b"Connected to 192.0.2.7 but sender was rejected.\nRemote host said: " + \
            reply(raw).text
        assert t.take_reports() == []


def test_null_sender():
    t = Transaction(IP, b"", [b"a@y"], PLAIN)
    assert t.opening() == b"MAIL FROM:<>\r\n"


# --- DATA ---

def test_354_after_data_starts_the_body():
    t = transaction(recipients=[b"a@y"])
    t.opening()
    t.receive(ok())
    assert t.receive(ok()) == b"DATA\r\n"
    assert t.receive(reply(b"354 End data with <CR><LF>.<CR><LF>\r\n")) == b""
    assert t.phase == BODY


@pytest.mark.parametrize("code", [250, 334, 220])
def test_only_354_after_data_starts_the_message(code):
    # rule 2: stock goes on after any reply below 400 to DATA; a server that did not say
    # 354 would read the message as commands, so it is a temporary failure here
    t = transaction(recipients=[b"a@y"])
    t.opening()
    t.receive(ok())
    t.receive(ok())
    with pytest.raises(failures.DataRejected) as raised:
        t.receive(ok(code))
    assert raised.value.letter == failures.Z
    assert t.phase != BODY


@pytest.mark.parametrize("raw, letter", [
    (b"554 no valid recipients\r\n", failures.D),
    (b"503 bad sequence\r\n", failures.D),
    (b"451 local error\r\n", failures.Z),
    (b"hello\r\n", failures.Z),
])
def test_data_rejected(raw, letter):
    t = transaction(recipients=[b"a@y"])
    t.opening()
    t.receive(ok())
    t.receive(ok())
    with pytest.raises(failures.DataRejected) as raised:
        t.receive(reply(raw))
    assert raised.value.letter == letter
    assert raised.value.text() == b"192.0.2.7 failed on DATA command.\nRemote host said: " + reply(raw).text
    assert t.phase == DATA


# --- the reply to the final dot: K only after 2xx (rule 2) ---

def at_dot(caps=PLAIN):
    t = transaction(caps, recipients=[b"a@y"])
    t.opening()
    t.receive(ok())
    t.receive(ok())
    t.receive(reply(b"354 go\r\n"))
    t.final_write(100, 100)
    return t


@pytest.mark.parametrize("code", [250, 200, 251, 299])
def test_2xx_after_the_dot_is_success(code):
    t = at_dot()
    assert t.receive(ok(code)) == b""
    assert t.phase == DONE
    assert t.success.code == code


@pytest.mark.parametrize("raw, letter", [
    (b"354 again?\r\n", failures.Z),  # 3xx is no valid answer here: Z where stock says K
    (b"399 x\r\n", failures.Z),
    (b"2 0 malformed\r\n", failures.Z),  # stock parses 40 and says K
    (b"250x\r\n", failures.Z),
    (b"\r\n", failures.Z),
    (b"421 shutting down\r\n", failures.Z),
    (b"452 no space\r\n", failures.Z),
    (b"554 rejected as spam\r\n", failures.D),
    (b"552 too big\r\n", failures.D),
])
def test_anything_else_after_the_dot_is_failure(raw, letter):
    t = at_dot()
    with pytest.raises(failures.MessageRejected) as raised:
        t.receive(reply(raw))
    assert raised.value.letter == letter
    assert raised.value.text() == b"192.0.2.7 failed after I sent the message.\nRemote host said: " + reply(raw).text
    assert t.phase == AFTER_DOT
    assert t.success is None


# --- a lost connection: a possible duplicate only after the dot (rule 1) ---

TOTAL = 100 * 1024 + 3  # a 100 KiB body and ".\r\n" in one write


@pytest.mark.parametrize("sent, duplicate", [
    (0, False),
    (1024, False),  # the server reset after 1 KiB (issue 8, item 8)
    (TOTAL - 3, False),  # the whole body, not a byte of the dot
    (TOTAL - 2, True),  # the dot's first byte went to the kernel
    (TOTAL - 1, True),
    (TOTAL, True),  # the whole write went: waiting for the reply
])
def test_died_during_the_last_write_is_a_possible_duplicate_only_once_the_dot_started(sent, duplicate):
    t = transaction(recipients=[b"a@y"])
    t.opening()
    t.receive(ok())
    t.receive(ok())
    t.receive(reply(b"354 go\r\n"))
    t.final_write(sent, TOTAL)
    assert t.phase == (AFTER_DOT if duplicate else BODY)
    died = t.died(b"write failed: Connection reset by peer")
    assert died.duplicate == duplicate
    assert (b"Possible duplicate!" in died.text()) == duplicate


def test_final_write_outside_the_body_changes_nothing():
    t = transaction(recipients=[b"a@y"])
    t.opening()
    t.final_write(10, 10)
    assert t.phase == MAIL and not t.died().duplicate


def test_died_is_a_possible_duplicate_only_after_the_dot():
    t = transaction(recipients=[b"a@y"])
    seen = {}
    seen[t.phase] = t.died()
    t.opening()
    t.receive(ok())
    seen[t.phase] = t.died()
    t.receive(ok())
    seen[t.phase] = t.died()
    t.receive(reply(b"354 go\r\n"))
    seen[t.phase] = t.died(b"EPIPE")
    t.final_write(100, 100)
    seen[t.phase] = t.died()
    t.receive(ok())
    seen[t.phase] = t.died()
    assert list(seen) == [MAIL, RCPT, DATA, BODY, AFTER_DOT, DONE]
    for phase, died in seen.items():
        assert isinstance(died, failures.ConnectionDied)
        assert died.letter == failures.Z
        assert died.duplicate == (phase == AFTER_DOT), phase
    assert seen[BODY].why == b"EPIPE"
    assert seen[BODY].text() == b"Connected to 192.0.2.7 but connection died. (#4.4.2)\n"
    assert seen[AFTER_DOT].text() == b"Connected to 192.0.2.7 but connection died. Possible duplicate! (#4.4.2)\n"


# --- no reply is expected while the body is sent, nor after the end ---

def test_reply_during_the_body_is_an_error():
    t = transaction(recipients=[b"a@y"])
    t.opening()
    t.receive(ok())
    t.receive(ok())
    t.receive(reply(b"354 go\r\n"))
    with pytest.raises(RuntimeError):
        t.receive(ok())


def test_reply_after_done_is_an_error():
    t = at_dot()
    t.receive(ok())
    with pytest.raises(RuntimeError):
        t.receive(ok())


# --- the opening: ESMTP parameters, SIZE limit, SMTPUTF8 ---

def test_size_parameter_only_when_offered_and_known():
    assert transaction(Capabilities({"SIZE"}), size=1234).opening() == b"MAIL FROM:<s@x.example> SIZE=1234\r\n"
    assert transaction(Capabilities({"SIZE"})).opening() == b"MAIL FROM:<s@x.example>\r\n"
    assert transaction(PLAIN, size=1234).opening() == b"MAIL FROM:<s@x.example>\r\n"


def test_message_bigger_than_the_size_limit_is_refused_before_anything_is_sent():
    t = transaction(Capabilities({"SIZE"}, size_limit=1000), size=1001)
    with pytest.raises(failures.TooBig) as raised:
        t.opening()
    assert raised.value.letter == failures.D
    assert raised.value.text() == (b"Connected to 192.0.2.7 but the message (1001 bytes) is bigger than its SIZE "
                                   b"limit of 1000 bytes. (#5.3.4)\n")


def test_message_of_exactly_the_size_limit_goes():
    t = transaction(Capabilities({"SIZE"}, size_limit=1000), size=1000)
    assert t.opening() == b"MAIL FROM:<s@x.example> SIZE=1000\r\n"


def test_size_limit_zero_means_no_limit():
    t = transaction(Capabilities({"SIZE"}, size_limit=0), size=10 ** 9)
    assert t.opening() == b"MAIL FROM:<s@x.example> SIZE=1000000000\r\n"


def test_body_8bitmime_only_for_8_bit_messages_and_when_offered():
    offered = Capabilities({"8BITMIME"})
    assert transaction(offered, eightbit=True).opening() == b"MAIL FROM:<s@x.example> BODY=8BITMIME\r\n"
    assert transaction(offered, eightbit=False).opening() == b"MAIL FROM:<s@x.example>\r\n"
    assert transaction(PLAIN, eightbit=True).opening() == b"MAIL FROM:<s@x.example>\r\n"  # sent anyway, as stock


def test_non_ascii_address_needs_smtputf8():
    t = Transaction(IP, b"s@x", [b'"\xce\xb4"@y'], PLAIN)
    with pytest.raises(failures.NeedsSmtpUtf8) as raised:
        t.opening()
    assert raised.value.letter == failures.D
    assert raised.value.text().endswith(b"(#5.6.7)\n")


def test_non_ascii_sender_with_smtputf8_offered():
    t = Transaction(IP, b"s@\xce\xb4.example", [b"a@y"], Capabilities({"SMTPUTF8", "PIPELINING"}))
    assert t.opening() == b"MAIL FROM:<s@\xce\xb4.example> SMTPUTF8\r\nRCPT TO:<a@y>\r\nDATA\r\n"


def test_ascii_addresses_do_not_ask_for_smtputf8():
    t = Transaction(IP, b"s@x", [b"a@y"], Capabilities({"SMTPUTF8"}))
    assert t.opening() == b"MAIL FROM:<s@x>\r\n"


def test_every_parameter_and_pipelining_together():
    caps = Capabilities.from_arg("PIPELINING,SIZE=5000,8BITMIME,SMTPUTF8")
    t = Transaction(IP, b"", [b"\xce\xb4@y"], caps, size=4000, eightbit=True)
    assert t.opening() == b"MAIL FROM:<> SIZE=4000 BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<\xce\xb4@y>\r\nDATA\r\n"
