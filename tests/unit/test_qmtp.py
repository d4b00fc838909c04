"""The sans-IO QMTP core (qmtp.py), qmtproutes' syntax (routes.py) and the QMTP texts."""

import pytest

from qremote import failures, qmtp, routes
from qremote.qmtp import ProtocolError, Replies

# --- the package: qmtp.txt section 8's first example, byte for byte ---

SPEC_MESSAGE = (b"Received: (qmail-queue invoked by uid 0); 29 Jul 1996 09:36:40 -0000\n"
                b"Date: 29 Jul 1996 11:35:35 -0000\n"
                b"Message-ID: <19960729113535.375.qmail@heaven.af.mil>\n"
                b"From: God@heaven.af.mil\n"
                b"To: djb@silverton.berkeley.edu (D. J. Bernstein)\n"
                b"\n"
                b"This is a test.\n")


def test_package_of_the_specification_example():
    package = (qmtp.head(len(SPEC_MESSAGE)) + SPEC_MESSAGE
               + qmtp.tail(b"God-DSN-37@heaven.af.mil", [b"djb@silverton.berkeley.edu"]))
    assert package == (b"246:\n" + SPEC_MESSAGE + b"," + b"24:God-DSN-37@heaven.af.mil,"
                       + b"30:26:djb@silverton.berkeley.edu,,")


def test_bounce_sender_and_several_recipients():
    assert qmtp.tail(b"", [b"a@x", b"b@y"]) == b",0:,12:3:a@x,3:b@y,,"
    assert qmtp.head(0) == b"1:\n"  # an empty message is encoding #2 of one empty line


# --- replies ---

def test_replies_in_pieces():
    r = Replies(3)
    stream = b"21:Kok 838640135 qp 1390,5:Zbusy,8:Dno such,"
    got = []
    for i in range(len(stream)):
        got += r.feed(stream[i:i + 1])
    assert [(x.letter, x.text) for x in got] == [(b"K", b"ok 838640135 qp 1390"), (b"Z", b"busy"), (b"D", b"no such")]
    assert r.complete and r.accepted() == 1


@pytest.mark.parametrize("stream, why", [
    (b"99999999999999999999:K", "longer than"),      # a huge length: refused from its digits
    (b"2049:", "longer than"),
    (b"12345", "longer than"),                      # no ':' yet, but already too long
    (b"1x:K,", "not a number"),
    (b":K,", "not a number"),
    (b"-1:K,", "not a number"),
    (b"02:Ko,", "leading zero"),
    (b"0:,", "empty reply"),
    (b"2:Ok,", "not K, Z or D"),
    (b"3:Kok;", "without its ','"),
    (b"3:Xo", "not K, Z or D"),                       # the first byte is judged at once
])
def test_hostile_replies(stream, why):
    r = Replies(1)
    with pytest.raises(ProtocolError, match=why):
        r.feed(stream)


def test_more_replies_than_recipients():
    r = Replies(1)
    assert [x.letter for x in r.feed(b"2:Ko,2:Ko,")] == [b"K"]  # the expected one is reported first
    with pytest.raises(ProtocolError, match="more replies"):
        r.finish()
    r = Replies(1)
    r.feed(b"2:Ko,")
    r.finish()
    with pytest.raises(ProtocolError, match="more replies"):
        r.finish(b"2")


def test_a_partial_reply_waits():
    r = Replies(1)
    assert r.feed(b"20") == [] and r.feed(b"48:K") == [] and r.partial


# --- texts ---

def test_recipient_reports_and_k_text():
    ip = b"127.0.0.2"
    assert failures.qmtp_recipient_report(ip, qmtp.Reply(b"K", b"ok")) == (b"r", b"")
    assert failures.qmtp_recipient_report(ip, qmtp.Reply(b"D", b"no\rsuch\0")) == (
        b"h", b"127.0.0.2 does not like recipient.\nRemote host said: no?such?\n")
    assert failures.qmtp_recipient_report(ip, qmtp.Reply(b"Z", b"")) == (
        b"s", b"127.0.0.2 does not like recipient.\n")
    assert failures.qmtp_accepted(ip, qmtp.Reply(b"K", b"ok 1 qp 2")) == (
        b"127.0.0.2 accepted message over QMTP.\nRemote host said: ok 1 qp 2\n")
    assert failures.qmtp_accepted(ip, qmtp.Reply(b"K", b"ok"), b"TLSv1.3", b"X", True).startswith(
        b"127.0.0.2 accepted message over QMTPS. (TLSv1.3 verified, cipher X)\n")
    assert failures.QMTPProtocol(ip, "an empty reply").text() == (
        b"Connected to 127.0.0.2 but it did not talk proper QMTP (an empty reply). Possible duplicate! (#4.4.2)\n")


# --- qmtproutes ---

def qmtp_table(*lines):
    return routes.parse(list(enumerate(lines, 1)), routes.QMTPROUTES)


@pytest.mark.parametrize("value, relay, port, protocol, localip", [
    (b"relay.test", b"relay.test", 209, "qmtp", None),
    (b"relay.test:2209", b"relay.test", 2209, "qmtp", None),          # stock form
    (b"relay.test;2209", b"relay.test", 2209, "qmtp", None),          # s/qmail form
    (b"relay.test;6209", b"relay.test", 6209, "qmtps", None),         # 6209 is QMTPS
    (b"relay.test:6209", b"relay.test", 6209, "qmtps", None),
    (b"relay.test;s", b"relay.test", 6209, "qmtps", None),            # s: implicit TLS
    (b"relay.test;s7000", b"relay.test", 7000, "qmtps", None),
    (b"[127.0.0.2];209|||127.0.0.9", b"[127.0.0.2]", 209, "qmtp", "127.0.0.9"),
    (b"[IPv6:::1];s6209|||::1", b"[IPv6:::1]", 6209, "qmtps", "::1"),
    (b"relay.test;|||", b"relay.test", 209, "qmtp", None),
])
def test_qmtproutes_forms(value, relay, port, protocol, localip):
    route = qmtp_table(b"example.org:" + value)[b"example.org"]
    assert (route.relay, route.port, route.protocol, route.localip) == (relay, port, protocol, localip)
    assert routes.Route.decode(route.encode()) == route


@pytest.mark.parametrize("value, why", [
    (b"relay.test;2209|user|secret", "no AUTH"),
    (b"relay.test;|user", "no AUTH"),
    (b"relay.test;209|||not-an-ip", "localip"),
    (b"relay.test;70000", "port"),
    (b"relay.test;sx", "port"),
    (b"relay.test:209;209", "after ':' and after ';'"),
    (b"relay.test;1|2|3|4|5|6", "more than"),
    (b";209", "no relay host"),
])
def test_qmtproutes_refusals(value, why):
    with pytest.raises(failures.ControlInvalid) as raised:
        qmtp_table(b"other.org:relay.test", b"example.org:" + value)
    assert b"control/qmtproutes: line 2: " in raised.value.text() and why.encode() in raised.value.text()


def test_empty_qmtp_relay_leaves_the_host_to_smtproutes():
    assert qmtp_table(b".example.org:relay.test", b"sub.example.org:") == {
        b".example.org": routes.Route(b"relay.test", 209, "qmtp"), b"sub.example.org": routes.MX}


def test_smtproutes_keeps_stock_syntax_and_encoding():
    route = routes.parse([(1, b"example.org:relay.test:2525")])[b"example.org"]
    assert route == routes.Route(b"relay.test", 2525) and route.encode() == b"relay.test\x002525"
    with pytest.raises(failures.ControlInvalid):  # SMTPS on a port given twice
        routes.parse([(1, b"example.org:relay.test:25;s")])
