"""smtproutes' s/qmail forms, authsenders and domainips: the syntax (routes.py)."""

import pytest

from qremote import credentials, failures, routes
from qremote.routes import MX, Route


def table(*lines, name="smtproutes"):
    numbered = list(enumerate(lines, 1))
    if name == "authsenders":
        return routes.parse_authsenders(numbered)
    return routes.parse(numbered)


def test_sqmail_manual_examples():
    t = table(b"inside.af.mil:firewall.af.mil;26", b":submission.myrelay.com;s587|myuserid|mypasswd",
              b".af.mil:", b"!@:bouncehost.af.mil;27")
    assert t[b"inside.af.mil"] == Route(b"firewall.af.mil", 26)
    sub = t[b""]
    assert (sub.relay, sub.port, sub.protocol, sub.user) == (b"submission.myrelay.com", 587, "smtps", b"myuserid")
    assert sub.where == "smtproutes:2:" + b":submission.myrelay.com;s587|myuserid|".hex()
    assert b"mypasswd" not in sub.encode() and Route.decode(sub.encode()) == sub  # the cdb never holds it
    assert t[b".af.mil"] is MX and t[b"!@"] == Route(b"bouncehost.af.mil", 27)


def test_sqmail_localip_examples():
    t = table(b":bouncehost.org||10.1.1.0", b"partnermx.net:partnermx.net;42||2001::fefe")
    assert t[b""] == Route(b"bouncehost.org", 25, localip="10.1.1.0")
    assert t[b"partnermx.net"] == Route(b"partnermx.net", 42, localip="2001::fefe")


def test_port_465_and_s_are_smtps():
    t = table(b"a.org:relay.test;465", b"b.org:relay.test;s", b"c.org:relay.test:465", b"d.org:relay.test;s2465")
    assert [(t[k].port, t[k].protocol) for k in (b"a.org", b"b.org", b"c.org", b"d.org")] == [
        (465, "smtps"), (465, "smtps"), (465, "smtps"), (2465, "smtps")]


def test_stock_forms_unchanged():
    t = table(b"a.org:relay.test", b"b.org:[192.0.2.1]:2525", b"c.org:[IPv6:2001:db8::1]:26", b"d.org:")
    assert t[b"a.org"].encode() == b"relay.test\x0025"
    assert t[b"b.org"] == Route(b"[192.0.2.1]", 2525) and t[b"c.org"].port == 26 and t[b"d.org"] is MX


def test_options_and_credentials_file():
    t = table(b"a.org:relay.test;587|bob|file:/etc/qremote/bob|192.0.2.9|cleartext,xoauth2")
    r = t[b"a.org"]
    assert (r.user, r.localip, r.options) == (b"bob", "192.0.2.9", b"cleartext,xoauth2")
    assert "/etc/qremote/bob" not in r.where.split(":")[0]


@pytest.mark.parametrize("value, why", [
    (b"relay.test;587|user|", "a user without a password"),
    (b"relay.test;587||secret|x", "localip"),
    (b"relay.test;587|u|p||bogus", "unknown option"),
    (b"relay.test;587|||192.0.2.1|cleartext", "options without a user"),
    (b"relay.test;587|a|b|192.0.2.1|cleartext|x", "more than"),
    (b";587|u|p", "no relay host"),
])
def test_smtproutes_refusals_name_file_and_line(value, why):
    with pytest.raises(failures.ControlInvalid) as raised:
        table(b"ok.org:relay.test", b"example.org:" + value)
    assert b"control/smtproutes: line 2: " in raised.value.text() and why.encode() in raised.value.text()


def test_authsenders_forms_and_precedence():
    t = table(b"@example.com:relay.example.com|user|passwd", b"info@example.com:relay.example.com;26|infouser|infopasswd",
              b":mailrelay.example.com|e=mc2|testpass", b"free@example.com:", name="authsenders")
    assert routes.sender_keys(b"Info@Example.COM") == [b"info@example.com", b"@example.com", b""]
    assert t[b"@example.com"].user == b"user" and t[b"@example.com"].port == 25
    assert t[b"info@example.com"].port == 26 and t[b"info@example.com"].where.startswith("authsenders:2:")
    assert t[b""].user == b"e=mc2" and t[b"free@example.com"] is MX


def test_authsenders_bad_line_is_a_z_naming_it():
    with pytest.raises(failures.ControlInvalid) as raised:
        table(b"@example.com relay", name="authsenders")
    assert raised.value.text().startswith(b"Invalid control file control/authsenders: line 1: ")


def test_domainips():
    t = routes.parse_domainips([(1, b"example.com:192.0.2.5|mx.example.com"), (2, b"*:fe80::1%eth0|"),
                                (3, b"other.org:|helo.other.org")])
    assert t[b"example.com"] == ("192.0.2.5", b"mx.example.com")
    assert t[b"*"] == ("fe80::1%eth0", None) and t[b"other.org"] == (None, b"helo.other.org")
    with pytest.raises(failures.ControlInvalid) as raised:
        routes.parse_domainips([(4, b"x.org:not-an-ip|h")])
    assert b"control/domainips: line 4" in raised.value.text()


def test_secretless_keeps_everything_but_the_password():
    assert credentials.secretless(b"a:r;s587|u|pw|192.0.2.1|cleartext") == b"a:r;s587|u||192.0.2.1|cleartext"
    assert credentials.secretless(b"a:relay:25") == b"a:relay:25"
