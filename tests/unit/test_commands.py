"""Examples for the command builder (lib/qremote/smtp/commands.py) and envelope addresses
(lib/qremote/addresses.py): the exact bytes of each command, stock qmail-remote's quoting
of addresses, and the refusal of anything that could end a command early."""

import pytest

from qremote import addresses, failures
from qremote.smtp import commands


# --- MAIL FROM and its ESMTP parameters ---

def test_mail_plain():
    assert commands.mail(b"joe@example.org") == b"MAIL FROM:<joe@example.org>\r\n"


def test_mail_null_sender():
    assert commands.mail(b"") == b"MAIL FROM:<>\r\n"


def test_mail_with_size():
    assert commands.mail(b"a@b", size=12345) == b"MAIL FROM:<a@b> SIZE=12345\r\n"


def test_mail_with_size_zero():
    assert commands.mail(b"a@b", size=0) == b"MAIL FROM:<a@b> SIZE=0\r\n"


def test_mail_with_8bitmime():
    assert commands.mail(b"a@b", eightbit=True) == b"MAIL FROM:<a@b> BODY=8BITMIME\r\n"


def test_mail_with_smtputf8():
    assert commands.mail(b"\xce\xb4@b", smtputf8=True) == b"MAIL FROM:<\xce\xb4@b> SMTPUTF8\r\n"


def test_mail_with_every_parameter():
    assert (commands.mail(b"", size=7, eightbit=True, smtputf8=True)
            == b"MAIL FROM:<> SIZE=7 BODY=8BITMIME SMTPUTF8\r\n")


def test_rcpt():
    assert commands.rcpt(b"someone@example.net") == b"RCPT TO:<someone@example.net>\r\n"


def test_helo_and_ehlo():
    assert commands.ehlo(b"mail.example.org") == b"EHLO mail.example.org\r\n"
    assert commands.helo(b"mail.example.org") == b"HELO mail.example.org\r\n"


def test_fixed_commands():
    assert commands.DATA == b"DATA\r\n"
    assert commands.QUIT == b"QUIT\r\n"
    assert commands.STARTTLS == b"STARTTLS\r\n"
    assert commands.END_OF_DATA == b".\r\n"


# --- no CR, LF or NUL in any command argument (commands.py rule) ---

@pytest.mark.parametrize("bad", [b"a@b\r\nRSET", b"a@b\nRCPT TO:<x@y>", b"a@b\r", b"a\0@b", b"\n"])
@pytest.mark.parametrize("build", [commands.mail, commands.rcpt, commands.ehlo, commands.helo])
def test_control_bytes_refused_in_every_command(build, bad):
    with pytest.raises(commands.UnsafeArgument):
        build(bad)


def test_unsafe_argument_is_a_value_error():
    assert issubclass(commands.UnsafeArgument, ValueError)


# --- stock's address mangling (stock-qmail-remote.md section 4) ---

@pytest.mark.parametrize("address, sent", [
    # section 4 [observed] examples
    (b"a b@src.example", b'"a b"@src.example'),
    (b"x..y@", b'"x..y"@'),
    (b".lead@", b'".lead"@'),
    (b'q"t@', b'"q\\"t"@'),
    (b"a@b@example.org", b'"a@b"@example.org'),
    (b"@example.org", b'""@example.org'),
    (b"ok.name+tag@", b"ok.name+tag@"),
    (b"#@[]", b"#@[]"),  # the double-bounce sender
    (b"", b""),  # the null sender: MAIL FROM:<>
    (b"norcpt-at", b"norcpt-at"),  # no '@': verbatim
    # the rest of section 4's rule
    (b"trail.@example.org", b'"trail."@example.org'),
    (b"back\\slash@example.org", b'"back\\\\slash"@example.org'),
    (b"\xe9@example.org", b'"\xe9"@example.org'),  # a byte >= 128 that is not UTF-8 forces quoting
    (b"tab\there@example.org", b'"tab\there"@example.org'),
    (b"(c)@example.org", b'"(c)"@example.org'),
    (b"a,b:c;d@example.org", b'"a,b:c;d"@example.org'),
    (b"a<b>@example.org", b'"a<b>"@example.org'),  # angle brackets in the local part are quoted
    (b"!#$%&'*+-/=?^_`{|}~@example.org", b"!#$%&'*+-/=?^_`{|}~@example.org"),
    (b"User.Name@EXAMPLE.org", b"User.Name@EXAMPLE.org"),  # no case change
    (b"a@\xce\xb4.example", b"a@\xce\xb4.example"),  # the domain is sent as it is
    (b"a@b c", b"a@b c"),
    (b'"already"@example.org', b'"\\"already\\""@example.org'),
])
def test_mangle_as_stock(address, sent):
    assert addresses.mangle(address) == sent


# RFC 6531: atext takes UTF-8 non-ASCII characters too, so a UTF-8 local part goes unquoted
# unless it needs quoting for another reason; bytes that are not UTF-8 are quoted as stock did.
@pytest.mark.parametrize("address, sent", [
    ("jürgen@exim.test".encode(), "jürgen@exim.test".encode()),
    ("δοκιμή.user+tag@example.org".encode(), "δοκιμή.user+tag@example.org".encode()),
    ("用户@例子.广告".encode(), "用户@例子.广告".encode()),
    ("😀@example.org".encode(), "😀@example.org".encode()),  # 4-byte UTF-8
    ("jürgen müller@exim.test".encode(), '"jürgen müller"@exim.test'.encode()),  # the space
    (".jürgen@exim.test".encode(), '".jürgen"@exim.test'.encode()),
    ("jür..gen@exim.test".encode(), '"jür..gen"@exim.test'.encode()),
    ('jü"rgen@exim.test'.encode(), '"jü\\"rgen"@exim.test'.encode()),
    (b"j\xfcrgen@exim.test", b'"j\xfcrgen"@exim.test'),  # Latin-1: not UTF-8
    (b"j\xc3@exim.test", b'"j\xc3"@exim.test'),  # a UTF-8 sequence cut short
    (b"\xc0\xae@exim.test", b'"\xc0\xae"@exim.test'),  # overlong form of '.'
    (b"\xed\xa0\x80@exim.test", b'"\xed\xa0\x80"@exim.test'),  # a UTF-16 surrogate
    (b"\x80x@exim.test", b'"\x80x"@exim.test'),  # a lone continuation byte
])
def test_mangle_utf8_local_part(address, sent):
    assert addresses.mangle(address) == sent


def test_envelope_checks_and_mangles_sender_and_recipients():
    sender, recipients = addresses.envelope(b"", [b"a b@x.example", b"ok@y.example"])
    assert sender == b""
    assert recipients == [b'"a b"@x.example', b"ok@y.example"]
    assert commands.mail(sender) == b"MAIL FROM:<>\r\n"
    assert commands.rcpt(recipients[0]) == b'RCPT TO:<"a b"@x.example>\r\n'


# --- refused addresses: CR, LF, NUL anywhere; angle brackets where they cannot be quoted ---

@pytest.mark.parametrize("address", [
    b"a@b\r\nDATA",
    b"a\r@example.org",  # stock would escape it inside quotes; refused here
    b"a\n@example.org",
    b"a@example.org\n",
    b"a\0b@example.org",
    b"a@b\0",
    b"a@b> NOTIFY=NEVER",  # would end the path early and add a parameter
    b"a@<b>",
    b"<a>",  # no '@': sent verbatim, so no bracket may pass
    b"x>",
    b"a<b@c@d>",  # split at the LAST '@': "d>" is the domain
])
def test_unsendable_addresses_are_refused(address):
    with pytest.raises(failures.BadAddress) as raised:
        addresses.check("recipient", address)
    assert raised.value.letter == failures.D
    assert raised.value.role == "recipient"


def test_envelope_refuses_a_bad_sender_before_any_recipient():
    with pytest.raises(failures.BadAddress) as raised:
        addresses.envelope(b"s@x\r\nRSET", [b"ok@y"])
    assert raised.value.role == "sender"
    text = raised.value.text()
    assert text.endswith(b"(#5.1.3)\n")
    assert b"\r" not in text and text.count(b"\n") == 1  # the address is shown with '?' for control bytes


def test_envelope_refuses_a_bad_recipient_among_good_ones():
    with pytest.raises(failures.BadAddress) as raised:
        addresses.envelope(b"s@x", [b"ok@y", b"bad@y>"])
    assert raised.value.role == "recipient"


@pytest.mark.parametrize("address", [b'a"<>"@example.org', b"<@example.org", b"a>b@example.org"])
def test_angle_brackets_in_the_local_part_are_accepted_and_quoted(address):
    assert addresses.check("sender", address) == address
    sent = addresses.mangle(address)
    assert sent.startswith(b'"') and sent.endswith(b'"@example.org')
