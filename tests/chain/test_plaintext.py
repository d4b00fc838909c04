"""The installed chain over plain SMTP against the scripted loopback server: exact report
bytes (stock wording, stock-qmail-remote.md sections 12 and 17) and exact wire bytes."""

import os
import socket
import time

import pytest

from tests.support.smtpserver import CLOSE, STALL

MSG = b"Subject: test\n\nhello\n.leading dot\n"
NO_ESMTP = b"500 what is EHLO\r\n"


def routed(home, server, **replies):
    s = server(**replies)
    home.route("example.org:127.0.0.1:%d" % s.port)
    return s


def deliver(home, *recipients, sender="sender@src.example", host="example.org", **kw):
    return home.remote(host, sender, *(recipients or ("good@example.org",)), **kw)


def per_recipient(table, default=b"250 ok\r\n"):
    def reply(session, line):
        for needle, answer in table.items():
            if needle in line:
                return answer
        return default
    return reply


# --- success and the wire ---

def test_pipelined_delivery_wire_bytes(home, server):
    s = routed(home, server)
    _, raw = deliver(home, "good@example.org", "other@example.org", message=MSG)
    assert raw == b"r\0r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0"
    session, = s.wait_sessions()
    assert bytes(session.received) == (
        b"EHLO me.example\r\nMAIL FROM:<sender@src.example> SIZE=%d\r\n"
        b"RCPT TO:<good@example.org>\r\nRCPT TO:<other@example.org>\r\nDATA\r\n"
        b"Subject: test\r\n\r\nhello\r\n..leading dot\r\n.\r\nQUIT\r\n" % (len(MSG) + MSG.count(b"\n")))
    assert session.batched >= 3  # MAIL, both RCPTs and DATA arrived in one go


def test_without_pipelining_one_command_per_reply(home, server):
    s = routed(home, server, ehlo=b"250-sink.test\r\n250 8BITMIME\r\n")
    _, raw = deliver(home, "a@example.org", "b@example.org")
    assert raw.endswith(b"K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0")
    session, = s.wait_sessions()
    assert session.batched == 0
    assert session.commands[:5] == [b"EHLO me.example", b"MAIL FROM:<sender@src.example>",
                                    b"RCPT TO:<a@example.org>", b"RCPT TO:<b@example.org>", b"DATA"]


def test_ehlo_refused_falls_back_to_helo(home, server):
    s = routed(home, server, ehlo=NO_ESMTP)
    _, raw = deliver(home, message=b"x\xe9\n")
    assert raw.startswith(b"r\0K127.0.0.1 accepted message.")
    session, = s.wait_sessions()
    assert session.commands[:3] == [b"EHLO me.example", b"HELO me.example", b"MAIL FROM:<sender@src.example>"]


def test_multiline_final_reply_kept_whole(home, server):
    routed(home, server, final=b"250-first\r\n251-second\r\n252 third\r\n")
    _, raw = deliver(home)
    assert raw == b"r\0K127.0.0.1 accepted message.\nRemote host said: 250-first\n251-second\n252 third\n\0"


def test_null_sender_and_quoting(home, server):
    s = routed(home, server)
    deliver(home, "a b@example.org", '@example.org', sender="")
    session, = s.wait_sessions()
    assert session.commands[1].startswith(b"MAIL FROM:<> ")
    assert session.commands[2:4] == [b'RCPT TO:<"a b"@example.org>', b'RCPT TO:<""@example.org>']


def test_helohost_and_qmailhome_override(home, server):
    s = routed(home, server)
    home.control("helohost", "helo.example  \t\n")
    deliver(home)
    assert s.wait_sessions()[0].commands[0] == b"EHLO helo.example"


# --- ESMTP parameters ---

def wire_size(session):
    """What the message took on the wire between 354 and the final dot, dot-stuffing
    undone: what RFC 1870 means by the size."""
    message, = session.messages
    return len(message) - message.startswith(b".") - message.count(b"\r\n.")


@pytest.mark.parametrize("ehlo", [
    b"250-sink.test\r\n250-SIZE 100000000\r\n250 8BITMIME\r\n",  # the 8-bit pass counts the lines too
    b"250-sink.test\r\n250 SIZE 100000000\r\n",  # no 8BITMIME: a pass of its own
])
@pytest.mark.parametrize("lines", [1, 7, 1000])
def test_size_parameter_is_the_size_on_the_wire(home, server, ehlo, lines):
    """RFC 1870: the size with CRLF line ends (the file has LF ones): +1 per line."""
    s = routed(home, server, ehlo=ehlo)
    message = b"Subject: size\n" + b"a" * 998 + b"\n" + b".x\n" * (lines - 2) if lines > 1 else b"a" * 999 + b"\n"
    assert message.count(b"\n") == lines
    deliver(home, message=message)
    session, = s.wait_sessions()
    assert session.commands[1] == b"MAIL FROM:<sender@src.example> SIZE=%d" % (len(message) + lines)
    assert wire_size(session) == len(message) + lines


def test_size_parameter_counts_every_line_end_as_the_encoder_sends_it(home, server):
    message = b"crlf\r\nbare\rcr\nlf\n"  # CRLF stays two bytes, a bare CR becomes two
    s = routed(home, server)
    deliver(home, message=message)
    session, = s.wait_sessions()
    assert session.commands[1] == b"MAIL FROM:<sender@src.example> SIZE=20"
    assert wire_size(session) == 20


def test_message_over_the_size_limit_is_bounced_unsent(home, server):
    s = routed(home, server, ehlo=b"250-sink.test\r\n250 SIZE 100\r\n")
    reports, raw = deliver(home, message=b"a" * 200 + b"\n")
    assert reports == [("D", b"Connected to 127.0.0.1 but the message (202 bytes) is bigger than its "
                             b"SIZE limit of 100 bytes. (#5.3.4)\n")]
    assert s.wait_sessions()[0].commands == [b"EHLO me.example", b"QUIT"]


def test_size_limit_is_checked_against_the_size_on_the_wire(home, server):
    """100 bytes in the file, 150 with CRLF line ends: over a limit of 100."""
    s = routed(home, server, ehlo=b"250-sink.test\r\n250 SIZE 100\r\n")
    reports, raw = deliver(home, message=b"x\n" * 50)
    assert reports == [("D", b"Connected to 127.0.0.1 but the message (150 bytes) is bigger than its "
                             b"SIZE limit of 100 bytes. (#5.3.4)\n")]
    assert s.wait_sessions()[0].commands == [b"EHLO me.example", b"QUIT"]


def test_size_limit_met_exactly_on_the_wire_goes(home, server):
    s = routed(home, server, ehlo=b"250-sink.test\r\n250 SIZE 150\r\n")
    _, raw = deliver(home, message=b"x\n" * 50)
    assert raw.endswith(b"K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0")
    assert s.wait_sessions()[0].commands[1] == b"MAIL FROM:<sender@src.example> SIZE=150"


@pytest.mark.parametrize("message, offered, expected", [
    (b"plain ascii\n", True, b""),
    (b"caf\xc3\xa9\n", True, b" BODY=8BITMIME"),
    (b"caf\xc3\xa9\n", False, b""),
])
def test_body_8bitmime(home, server, message, offered, expected):
    ehlo = b"250-sink.test\r\n250 8BITMIME\r\n" if offered else b"250 sink.test\r\n"
    s = routed(home, server, ehlo=ehlo)
    deliver(home, message=message)
    assert s.wait_sessions()[0].commands[1] == b"MAIL FROM:<sender@src.example>" + expected


def test_smtputf8_used_when_needed_and_offered(home, server):
    s = routed(home, server)
    _, raw = deliver(home, "δοκιμή@example.org", "jürgen müller@example.org")
    assert raw.endswith(b"accepted message.\nRemote host said: 250 ok queued\n\0")
    commands = s.wait_sessions()[0].commands
    assert commands[1].endswith(b" SMTPUTF8")
    # RFC 6531 atext: a UTF-8 local part unquoted, unless it needs quotes anyway (the space)
    assert commands[2:4] == ["RCPT TO:<δοκιμή@example.org>".encode(), 'RCPT TO:<"jürgen müller"@example.org>'.encode()]


def test_smtputf8_needed_but_not_offered_bounces(home, server):
    s = routed(home, server, ehlo=b"250-sink.test\r\n250 PIPELINING\r\n")
    reports, _ = deliver(home, "δοκιμή@example.org")
    assert reports == [("D", b"Connected to 127.0.0.1 but an address is not ASCII and the server does "
                             b"not offer SMTPUTF8. (#5.6.7)\n")]
    assert s.wait_sessions()[0].commands == [b"EHLO me.example", b"QUIT"]


# --- transparency ---

def test_line_ends_and_dot_stuffing(home, server):
    s = routed(home, server)
    deliver(home, message=b".a\n..b\nc\r\nd\re\n\rf\n.\n\n.\r\ng\r\r\n")
    assert s.wait_sessions()[0].messages == [
        b"..a\r\n...b\r\nc\r\nd\r\ne\r\n\r\nf\r\n..\r\n\r\n..\r\ng\r\n\r\n"]


def test_cr_dot_cannot_end_data_early(home, server):
    """Stock notqmail sends "h\\r.\\n" as "h\\r\\n.\\r\\n": end of data, then the rest runs as commands."""
    s = routed(home, server)
    evil = b"Subject: x\n\nh\r.\nMAIL FROM:<evil@example.com>\nRCPT TO:<victim@example.org>\nDATA\nspam\n"
    _, raw = deliver(home, message=evil)
    assert raw.endswith(b"K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0")
    session, = s.wait_sessions()
    assert len(session.messages) == 1
    assert session.messages[0].startswith(b"Subject: x\r\n\r\nh\r\n..\r\nMAIL FROM:<evil@example.com>\r\n")
    assert [c for c in session.commands if c.startswith(b"MAIL")] == [
        b"MAIL FROM:<sender@src.example> SIZE=%d" % (len(evil) + evil.count(b"\n") + 1)]  # "h\r." a bare CR


def test_partial_final_line(home, server):
    s = routed(home, server)
    _, raw = deliver(home, "good@example.org", "bad@example.org", message=b"Subject: x\n\nno final newline")
    assert raw == b"r\0r\0DSMTP cannot transfer messages with partial final lines. (#5.6.2)\n\0"
    session, = s.wait_sessions()
    assert session.messages == [] and session.closed_by_client
    assert b"no final newline" not in session.received


def test_empty_message(home, server):
    s = routed(home, server)
    deliver(home, message=b"")
    assert s.wait_sessions()[0].messages == [b""]


# --- failures, stock texts ---

@pytest.mark.parametrize("replies, expected", [
    ({"greeting": b"554-sink.example go away\r\n554 really\r\n"},
     b"ZConnected to 127.0.0.1 but greeting failed.\nRemote host said: 554-sink.example go away\n554 really\n\0"),
    ({"greeting": b"hello there\r\n"},
     b"ZConnected to 127.0.0.1 but greeting failed.\nRemote host said: hello there\n\0"),
    ({"ehlo": NO_ESMTP, "helo": b"501 bad name\r\n"},
     b"ZConnected to 127.0.0.1 but my name was rejected.\nRemote host said: 501 bad name\n\0"),
    ({"mail": b"553 sender denied\r\n"},
     b"DConnected to 127.0.0.1 but sender was rejected.\nRemote host said: 553 sender denied\n\0"),
    ({"mail": b"451 4.3.0 try again later\r\n"},
     b"ZConnected to 127.0.0.1 but sender was rejected.\nRemote host said: 451 4.3.0 try again later\n\0"),
    ({"data": b"554 no data for you\r\n"},
     b"r\0D127.0.0.1 failed on DATA command.\nRemote host said: 554 no data for you\n\0"),
    ({"data": b"451 later\r\n"},
     b"r\0Z127.0.0.1 failed on DATA command.\nRemote host said: 451 later\n\0"),
    ({"final": b"552 too big\r\n"},
     b"r\0D127.0.0.1 failed after I sent the message.\nRemote host said: 552 too big\n\0"),
    ({"final": b"451 queue full\r\n"},
     b"r\0Z127.0.0.1 failed after I sent the message.\nRemote host said: 451 queue full\n\0"),
    ({"final": b"2 0 odd\r\n"},  # stock says K to this; a malformed reply is never success
     b"r\0Z127.0.0.1 failed after I sent the message.\nRemote host said: 2 0 odd\n\0"),
])
def test_stock_failure_reports(home, server, replies, expected):
    routed(home, server, **replies)
    _, raw = deliver(home)
    assert raw == expected


def test_recipient_reports_in_argv_order(home, server):
    routed(home, server, rcpt=per_recipient({b"good@": b"450 greylisted\r\n", b"bad@": b"550 nope\r\n"}))
    _, raw = deliver(home, "good@example.org", "bad@example.org")
    assert raw == (b"s127.0.0.1 does not like recipient.\nRemote host said: 450 greylisted\n\0"
                   b"h127.0.0.1 does not like recipient.\nRemote host said: 550 nope\n\0"
                   b"DGiving up on 127.0.0.1.\n\0")


def test_remote_text_sanitised(home, server):
    routed(home, server, rcpt=b"550 bad\x00nul\ttab\x1besc\xe9\r\n")
    _, raw = deliver(home)
    assert raw == (b"h127.0.0.1 does not like recipient.\nRemote host said: 550 bad?nul\ttab\x1besc\xe9\n\0"
                   b"DGiving up on 127.0.0.1.\n\0")


def test_no_recipient_accepted_with_pipelining_does_not_send_the_message(home, server):
    s = routed(home, server, rcpt=b"550 nope\r\n", data=b"354 oops go ahead\r\n")
    _, raw = deliver(home)
    assert raw.endswith(b"DGiving up on 127.0.0.1.\n\0")
    session, = s.wait_sessions()
    assert b"hello" not in session.received


# --- drops and timeouts ---

DIED = b"ZConnected to 127.0.0.1 but connection died. (#4.4.2)\n\0"
DUPLICATE = b"ZConnected to 127.0.0.1 but connection died. Possible duplicate! (#4.4.2)\n\0"


@pytest.mark.parametrize("replies, expected", [
    ({"greeting": CLOSE}, DIED),
    ({"ehlo": CLOSE}, DIED),
    ({"mail": CLOSE}, DIED),
    ({"rcpt": CLOSE}, DIED),
    ({"data": CLOSE}, b"r\0" + DIED),
    ({"final": CLOSE}, b"r\0" + DUPLICATE),
    ({"mail": STALL}, DIED),
    ({"final": STALL}, b"r\0" + DUPLICATE),
])
def test_drops_and_stalls(home, server, replies, expected):
    routed(home, server, **replies)
    home.control("timeoutremote", "1\n")
    started = time.monotonic()
    _, raw = deliver(home)
    assert time.monotonic() - started < 10
    assert raw == expected


def test_greeting_stall_is_bounded(home, server):
    routed(home, server, greeting=STALL)
    home.control("timeoutremote", "1\n")
    started = time.monotonic()
    _, raw = deliver(home)
    assert raw == DIED
    assert time.monotonic() - started < 10


def test_endless_reply_line_is_bounded(home, server):
    routed(home, server, mail=b"250" + b"x" * (10 << 20) + b"\r\n")
    started = time.monotonic()
    _, raw = deliver(home)
    assert raw == b"ZConnected to 127.0.0.1 but its reply was too long; connection dropped. (#4.4.2)\n\0"
    assert time.monotonic() - started < 20


def test_connection_refused(home):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    home.route("example.org:127.0.0.1:%d" % port)
    _, raw = deliver(home)
    assert raw == b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n\0"


# --- arguments, addresses, control files ---

def test_usage(home):
    out, status = home.run("qmail-remote", ["example.org", "sender@x"])
    assert (out, status) == (b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0", 0)


@pytest.mark.parametrize("bad", ["evil\r\nRSET@example.org", "evil\n@example.org", "x\r@example.org"])
def test_control_bytes_in_an_address_bounce_before_connecting(home, server, bad):
    s = routed(home, server)
    reports, _ = deliver(home, bad)
    assert reports[0][0] == "D" and b"CR, LF or NUL" in reports[0][1] and len(reports) == 1
    time.sleep(0.2)
    assert s.sessions == []


def test_no_me_no_helohost(home):
    os.unlink(os.path.join(home.path, "control", "me"))
    reports, _ = deliver(home)
    assert reports == [("Z", b"Unable to read control files: neither control/helohost nor control/me "
                             b"gives a name. (#4.3.0)\n")]


def test_no_home(home):
    out, _ = home.run("qmail-remote", ["example.org", "a@b", "c@d"], QMAILHOME="/nonexistent/qmail")
    assert out == b"ZUnable to switch to home directory. (#4.3.0)\n\0"


@pytest.mark.parametrize("name, content, text", [
    ("timeoutremote", "abc\n", b"Invalid control file control/timeoutremote: 'abc' is not a number of seconds."),
    ("smtproutes", "example.org 127.0.0.1\n", b"Invalid control file control/smtproutes: line 1: no ':'"),
    ("smtproutes", "example.org:127.0.0.1:99999\n", b"control/smtproutes: line 1: the port must be"),
    ("helohost", "bad\x01name\n", b"Invalid control file control/helohost: it holds a control character."),
])
def test_malformed_control_files(home, name, content, text):
    home.control(name, content)
    reports, _ = deliver(home)
    assert len(reports) == 1 and reports[0][0] == "Z" and text in reports[0][1], reports


def test_control_file_that_is_a_directory(home):
    os.mkdir(os.path.join(home.path, "control", "timeoutconnect"))
    reports, _ = deliver(home)
    assert reports == [("Z", b"Unable to read control files: control/timeoutconnect: Is a directory. (#4.3.0)\n")]


def test_crlf_control_files_work(home, server):
    s = server()
    home.control("me", "me.example\r\n")
    home.route("example.org:127.0.0.1:%d\r" % s.port)
    _, raw = deliver(home)
    assert raw.endswith(b"accepted message.\nRemote host said: 250 ok queued\n\0")
    assert s.wait_sessions()[0].commands[0] == b"EHLO me.example"


def test_literal_of_my_own_address_is_refused(home):
    _, raw = deliver(home, host="[127.0.0.1]")
    assert raw == (b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n"
                   b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n\0")


@pytest.mark.skipif(os.geteuid() != 0, reason="binding port 25 needs root")
@pytest.mark.parametrize("literal, bind", [("[127.0.0.2]", "127.0.0.2"), ("127.0.0.3", "127.0.0.3"),
                                           ("[IPv6:::1]", "::1")])
def test_ip_literal_goes_to_port_25(home, server, literal, bind):
    s = server(host=bind, port=25)
    home.control("ipme", "192.0.2.254\n")  # so that ::1 is not "me"
    _, raw = deliver(home, host=literal)
    ip = bind.encode()
    assert raw == b"r\0K%s accepted message.\nRemote host said: 250 ok queued\n\0" % ip
    assert s.wait_sessions()[0].messages
