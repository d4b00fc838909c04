"""Examples for Capabilities (lib/qremote/smtp/ehlo.py): an EHLO reply in, the keywords
and SIZE limit out, and the compact argv form qmail-remote hands to qmail-remote-io."""

import pytest

from qremote.smtp.ehlo import Capabilities
from qremote.smtp.reply import parse_replies


def caps_of(raw):
    (reply,), rest = parse_replies(raw)
    assert rest == b""
    return Capabilities.from_ehlo(reply)


EHLO = (b"250-mx.example.org greets you\r\n"
        b"250-PIPELINING\r\n"
        b"250-SIZE 10240000\r\n"
        b"250-8BITMIME\r\n"
        b"250-STARTTLS\r\n"
        b"250 SMTPUTF8\r\n")


def test_typical_ehlo_reply():
    caps = caps_of(EHLO)
    assert caps.keywords == {"PIPELINING", "SIZE", "8BITMIME", "STARTTLS", "SMTPUTF8"}
    assert caps.size_limit == 10240000


def test_first_line_is_the_greeting_not_a_keyword():
    caps = caps_of(b"250-PIPELINING\r\n250 8BITMIME\r\n")
    assert caps.keywords == {"8BITMIME"}


def test_keywords_are_case_insensitive_and_kept_upper_case():
    caps = caps_of(b"250-mx\r\n250-pipelining\r\n250-StartTLS\r\n250-size 500\r\n250 8bitmime\r\n")
    assert caps.keywords == {"PIPELINING", "STARTTLS", "SIZE", "8BITMIME"}
    assert "PIPELINING" in caps and "STARTTLS" in caps
    assert caps.size_limit == 500


def test_keyword_parameters_are_not_part_of_the_keyword():
    caps = caps_of(b"250-mx\r\n250-AUTH PLAIN LOGIN\r\n250 DSN\r\n")
    assert caps.keywords == {"AUTH", "DSN"}


def test_blank_and_invalid_keyword_lines_are_skipped():
    # RFC 5321 ehlo-keyword: letters, digits and '-'; old "AUTH=LOGIN" lines are not keywords
    caps = caps_of(b"250-mx\r\n250-\r\n250-   \r\n250-AUTH=LOGIN\r\n250-X_FOO\r\n250-\xc3\xa9T\xc3\xa9\r\n"
                   b"250-X-EXPS\r\n250 ENHANCEDSTATUSCODES\r\n")
    assert caps.keywords == {"X-EXPS", "ENHANCEDSTATUSCODES"}


def test_tab_separates_keyword_and_value():
    caps = caps_of(b"250-mx\r\n250 SIZE\t2048\r\n")
    assert caps.size_limit == 2048


# --- SIZE ---

def test_size_without_value_is_offered_but_sets_no_limit():
    caps = caps_of(b"250-mx\r\n250 SIZE\r\n")
    assert "SIZE" in caps
    assert caps.size_limit == 0


def test_size_zero_means_no_limit():
    # RFC 1870: SIZE 0 says no fixed maximum
    caps = caps_of(b"250-mx\r\n250 SIZE 0\r\n")
    assert "SIZE" in caps and caps.size_limit == 0


@pytest.mark.parametrize("value", [b"abc", b"-1", b"10M", b"1e6", b"\xd9\xa1"])
def test_bad_size_value_sets_no_limit(value):
    caps = caps_of(b"250-mx\r\n250 SIZE " + value + b"\r\n")
    assert "SIZE" in caps
    assert caps.size_limit == 0


def test_huge_size_value():
    caps = caps_of(b"250-mx\r\n250 SIZE 99999999999999999999\r\n")
    assert caps.size_limit == 99999999999999999999


# --- STARTTLS ---

def test_starttls_detection():
    assert "STARTTLS" in caps_of(EHLO)
    assert "STARTTLS" not in caps_of(b"250-mx\r\n250 PIPELINING\r\n")
    assert "STARTTLS" in caps_of(b"250-mx\r\n250 starttls\r\n")


def test_starttls_in_the_greeting_line_is_not_an_offer():
    assert "STARTTLS" not in caps_of(b"250 STARTTLS\r\n")


# --- HELO: no capabilities ---

def test_single_line_ehlo_reply_offers_nothing():
    caps = caps_of(b"250 mx.example.org\r\n")
    assert caps.keywords == frozenset() and caps.size_limit == 0


def test_helo_capabilities_are_empty_and_their_arg_is_empty():
    caps = Capabilities()
    assert caps.keywords == frozenset() and caps.size_limit == 0
    assert "PIPELINING" not in caps
    assert caps.to_arg() == ""
    helo = Capabilities.from_arg("")
    assert helo.keywords == frozenset() and helo.size_limit == 0


# --- the argv form ---

def test_to_arg_is_sorted_with_the_size_value():
    assert caps_of(EHLO).to_arg() == "8BITMIME,PIPELINING,SIZE=10240000,SMTPUTF8,STARTTLS"


def test_to_arg_size_without_limit():
    assert Capabilities({"SIZE", "PIPELINING"}).to_arg() == "PIPELINING,SIZE"


def test_from_arg():
    caps = Capabilities.from_arg("PIPELINING,SIZE=10240000,8BITMIME")
    assert caps.keywords == {"PIPELINING", "SIZE", "8BITMIME"}
    assert caps.size_limit == 10240000


def test_from_arg_upper_cases_and_skips_empty_words():
    caps = Capabilities.from_arg(",pipelining,,size=7,")
    assert caps.keywords == {"PIPELINING", "SIZE"}
    assert caps.size_limit == 7


def test_from_arg_size_without_value():
    caps = Capabilities.from_arg("SIZE")
    assert "SIZE" in caps and caps.size_limit == 0
    assert Capabilities.from_arg("SIZE=").size_limit == 0


@pytest.mark.parametrize("arg", ["SIZE=abc", "SIZE=-1", "SIZE=1k", "SIZE=\u0661\u0662", "SIZE=\u00b2"])
def test_from_arg_refuses_a_bad_size(arg):
    with pytest.raises(ValueError):
        Capabilities.from_arg(arg)


@pytest.mark.parametrize("raw", [
    EHLO,
    b"250 mx\r\n",
    b"250-mx\r\n250 SIZE\r\n",
    b"250-mx\r\n250-SIZE 0\r\n250 X-EXPS\r\n",
    b"250-mx\r\n250-size 123\r\n250 pipelining\r\n",
])
def test_to_arg_from_arg_round_trip(raw):
    caps = caps_of(raw)
    back = Capabilities.from_arg(caps.to_arg())
    assert back.keywords == caps.keywords
    assert back.size_limit == caps.size_limit
    assert back.to_arg() == caps.to_arg()


def test_a_size_of_thousands_of_digits_is_no_limit_not_an_error():
    # int() refuses strings of more than 4300 digits; past 100 digits it is no limit
    caps = caps_of(b"250-mx.test\r\n250 SIZE " + b"9" * 4400 + b"\r\n")
    assert caps.size_limit == 0 and "SIZE" in caps.keywords


def test_auth_mechanisms_are_kept_and_travel_in_argv():
    caps = caps_of(b"250-mx\r\n250-AUTH=LOGIN\r\n250-AUTH PLAIN login CRAM-MD5 SCRAM-SHA-256\r\n250 8BITMIME\r\n")
    assert caps.auth == {"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"} and "AUTH" in caps
    back = Capabilities.from_arg(caps.to_arg())
    assert back.auth == caps.auth and "AUTH=CRAM-MD5/LOGIN/PLAIN/SCRAM-SHA-256" in caps.to_arg()
