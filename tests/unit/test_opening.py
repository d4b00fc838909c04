"""The opening machine (smtp/opening.py): greeting, EHLO/HELO, STARTTLS, with no sockets."""

import pytest

from qremote import failures
from qremote.smtp.opening import BROKEN, EHLO, GREETING, HELO, NO_TLS, READY, STARTTLS, TLS, Opening
from qremote.smtp.reply import Reply

IP = b"192.0.2.9"
GREET = Reply(220, b"220 mx.test ESMTP\n")
EHLO_TLS = Reply(250, b"250-mx.test\n250-SIZE 1000\n250 STARTTLS\n")
EHLO_PLAIN = Reply(250, b"250-mx.test\n250 PIPELINING\n")


def test_greeting_ehlo_ready():
    o = Opening(IP, b"me.test")
    assert o.state == GREETING and o.start() == b""
    assert o.receive(GREET) == b"EHLO me.test\r\n" and o.state == EHLO
    assert o.receive(EHLO_PLAIN) == b"" and o.outcome == READY
    assert "PIPELINING" in o.capabilities


def test_ehlo_refused_falls_back_to_helo_and_no_capabilities():
    o = Opening(IP, b"me.test")
    o.start()
    o.receive(GREET)
    assert o.receive(Reply(502, b"502 no\n")) == b"HELO me.test\r\n" and o.state == HELO
    assert o.receive(Reply(250, b"250 hi\n")) == b"" and o.outcome == READY
    assert not o.capabilities.keywords


def test_helo_refused_is_polite():
    o = Opening(IP, b"me.test", greeting=False)
    o.start()
    o.receive(Reply(500, b"500 no\n"))
    with pytest.raises(failures.HeloRejected) as caught:
        o.receive(Reply(550, b"550 go away\n"))
    assert caught.value.polite and caught.value.letter == failures.Z  # stock: a temporary failure
    assert caught.value.text() == b"Connected to 192.0.2.9 but my name was rejected.\nRemote host said: 550 go away\n"


@pytest.mark.parametrize("reply", [Reply(421, b"421 busy\n"), Reply(None, b"hello\n"), Reply(250, b"250 hi\n")])
def test_a_greeting_other_than_220_fails(reply):
    o = Opening(IP, b"me.test")
    o.start()
    with pytest.raises(failures.GreetingFailed) as caught:
        o.receive(reply)
    assert caught.value.polite


def test_starttls_when_wanted_and_offered():
    o = Opening(IP, b"me.test", starttls=True)
    o.start()
    o.receive(GREET)
    assert o.receive(EHLO_TLS) == b"STARTTLS\r\n" and o.state == STARTTLS and o.checks_surplus
    assert o.receive(Reply(220, b"220 go ahead\n"), surplus=False) == b"" and o.outcome == TLS


def test_starttls_not_offered():
    o = Opening(IP, b"me.test", starttls=True)
    o.start()
    o.receive(GREET)
    o.receive(EHLO_PLAIN)
    assert (o.outcome, o.why) == (NO_TLS, failures.TLS_NOT_OFFERED)
    assert "PIPELINING" in o.capabilities  # still usable in cleartext


def test_starttls_refused_names_the_last_line():
    o = Opening(IP, b"me.test", greeting=False, starttls=True)
    o.start()
    o.receive(EHLO_TLS)
    o.receive(Reply(454, b"454-one\n454 4.7.0 not now \x01\n"))
    assert (o.outcome, o.why) == (NO_TLS, b"STARTTLS refused: 454 4.7.0 not now ?")


def test_bytes_after_the_220_to_starttls_break_the_connection():
    o = Opening(IP, b"me.test", greeting=False, starttls=True)
    o.start()
    o.receive(EHLO_TLS)
    o.receive(Reply(220, b"220 go ahead\n"), surplus=True)
    assert (o.outcome, o.why) == (BROKEN, failures.TLS_INJECTION)


def test_not_wanted_means_no_starttls_even_when_offered():
    o = Opening(IP, b"me.test", greeting=False)
    assert o.start() == b"EHLO me.test\r\n"
    o.receive(EHLO_TLS)
    assert o.outcome == READY and not o.checks_surplus


def test_greeting_only_for_capabilities_from_argv():
    """qmail-remote-io -g without -h: read the greeting, say nothing."""
    o = Opening(IP, None)
    assert o.start() == b""
    assert o.receive(GREET) == b"" and o.outcome == READY and o.capabilities is None


def test_no_reply_is_expected_after_the_outcome():
    o = Opening(IP, b"me.test", greeting=False)
    o.start()
    o.receive(EHLO_PLAIN)
    with pytest.raises(RuntimeError):
        o.receive(GREET)
