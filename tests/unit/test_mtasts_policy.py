"""mtasts/policy.py: RFC 8461's TXT record (3.1), policy text (3.2) and MX patterns (4.1),
every corner, and the cache entry codec (cache.encode/decode) around a policy."""

import os

import pytest

from qremote.mtasts import cache
from qremote.mtasts.policy import MAX_AGE_LIMIT, Invalid, matches_pattern, parse_policy, record_id

GOOD = b"version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\n"


# --- the TXT record -------------------------------------------------------------------------

@pytest.mark.parametrize("values, expected", [
    ([b"v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
    ([b"v=STSv1; id=20160831085700Z"], "20160831085700Z"),           # final delimiter optional
    ([b"v=STSv1;id=abc"], "abc"),
    ([b"v=STSv1 ;\tid=abc ; "], "abc"),                              # *WSP ";" *WSP
    ([b"v=STSv1; id=abc; ext_1.x=anything!"], "abc"),                # an extension ignored
    ([b"v=STSv1; ext=1; id=abc"], "abc"),                            # id need not come first
    ([b"some other TXT", b"v=STSv1; id=abc"], "abc"),                # other records discarded
    ([b"v=STSv10; id=zzz", b"v=STSv1; id=abc"], "abc"),              # another version, discarded
    ([b"v=STSv1; id=" + b"a" * 32], "a" * 32),                       # 32 characters at most
])
def test_a_valid_record_gives_its_id(values, expected):
    assert record_id(values) == expected


@pytest.mark.parametrize("values, why", [
    ([], "no record"),
    ([b"v=spf1 -all"], "no record"),
    ([b"V=STSv1; id=abc"], "no record"),                           # %s: case-sensitive
    ([b"v=STSv1; id=abc", b"v=STSv1; id=def"], "2 STSv1 records"),  # several: no valid record
    ([b"v=STSv1; id=abc", b"v=STSv1; id=abc"], "2 STSv1 records"),
    ([b"v=STSv1"], "no id"),
    ([b"v=STSv1;"], "no id"),
    ([b"v=STSv1; ext=1"], "no id"),
    ([b"v=STSv1; id="], "bad field"),
    ([b"v=STSv1; id=" + b"a" * 33], "bad id"),
    ([b"v=STSv1; id=abc-def"], "bad id"),                           # ALPHA / DIGIT only
    ([b"v=STSv1; id=abc def"], "bad id"),
    ([b"v=STSv1; id=abc; id=def"], "two ids"),
    ([b"v=STSv1; id=abc;; "], "bad field"),                         # an empty field
    ([b"v=STSv1 id=abc"], "bad version"),                           # no delimiter
    ([b"v=STSv1; id=abc; _x=1"], "bad field"),                      # ext-name starts ALPHA/DIGIT
    ([b"v=STSv1; id=abc; x=a=b"], "bad field"),                     # "=" not in ext-value
    ([b"v=STSv1; id=abc; x=\x01"], "bad field"),
    ([b"v=STSv1; id=abc; " + b"x" * 33 + b"=1"], "bad field"),      # ext-name up to 32
])
def test_no_usable_record(values, why):
    with pytest.raises(Invalid) as raised:
        record_id(values)
    assert raised.value.args[0] == why


# --- the policy -----------------------------------------------------------------------------

def test_a_good_policy():
    policy = parse_policy(GOOD, "abc", 1000)
    assert (policy.mode, policy.mx, policy.max_age, policy.id, policy.fetched_at) == (
        "enforce", ["mail.example.com", "*.example.net"], 604800, "abc", 1000)
    assert policy.text == GOOD.decode()
    assert policy.lines() == GOOD.decode().split("\n")[:-1]
    assert policy.expires() == 605800
    assert not policy.expired(605799) and policy.expired(605800)


@pytest.mark.parametrize("body", [
    GOOD.replace(b"\n", b"\r\n"),                                    # CRLF
    GOOD.rstrip(b"\n"),                                              # no final terminator
    GOOD.replace(b": ", b":"),                                       # ":" *WSP: none
    GOOD.replace(b": ", b":\t  "),
    GOOD.replace(b"\n", b"  \n"),                                    # trailing WSP
    GOOD + b"extension_1: some value, with spaces\n",                # unknown keys ignored
    GOOD + b"x: caf\xc3\xa9\n",                                      # UTF-8 in an extension value
    GOOD.replace(b"\n", b"\n\n"),                                    # empty lines skipped
    b"mx: mail.example.com\nmax_age: 604800\nmx: *.example.net\nmode: enforce\nversion: STSv1\n",  # any order
    GOOD.replace(b"mail.example.com", b"MAIL.Example.COM"),
])
def test_policy_variants_that_parse(body):
    policy = parse_policy(body)
    assert policy.mode == "enforce" and policy.max_age == 604800
    assert policy.mx == ["mail.example.com", "*.example.net"]


@pytest.mark.parametrize("body, why", [
    (GOOD.replace(b"version: STSv1\n", b""), "version missing"),
    (GOOD.replace(b"STSv1", b"STSv2"), "bad version"),
    (GOOD.replace(b"version", b"Version"), "version missing"),       # names are case-sensitive
    (GOOD + b"version: STSv1\n", "two version fields"),
    (GOOD.replace(b"mode: enforce\n", b""), "mode missing"),
    (GOOD.replace(b"enforce", b"Enforce"), "bad mode"),
    (GOOD.replace(b"enforce", b"reject"), "bad mode"),
    (GOOD + b"mode: testing\n", "two mode fields"),
    (GOOD.replace(b"max_age: 604800\n", b""), "max_age missing"),
    (GOOD.replace(b"604800", b"-1"), "bad max_age"),
    (GOOD.replace(b"604800", b"1e6"), "bad max_age"),
    (GOOD.replace(b"604800", b"12345678901"), "bad max_age"),       # 1*10 DIGIT
    (GOOD.replace(b"604800", b"60 48"), "bad max_age"),
    (GOOD + b"max_age: 1\n", "two max_age fields"),
    (b"version: STSv1\nmode: enforce\nmax_age: 604800\n", "mx missing"),
    (b"version: STSv1\nmode: testing\nmax_age: 604800\n", "mx missing"),
    (GOOD.replace(b"mail.example.com", b"*.*.example.com"), "bad mx pattern"),
    (GOOD.replace(b"mail.example.com", b"mail.*.com"), "bad mx pattern"),
    (GOOD.replace(b"mail.example.com", b"*example.com"), "bad mx pattern"),
    (GOOD.replace(b"mail.example.com", b"mail.example.com."), "bad mx pattern"),
    (GOOD.replace(b"mail.example.com", b"-mail.example.com"), "bad mx pattern"),
    (GOOD.replace(b"mail.example.com", b"m\xc3\xa4il.example.com"), "bad mx pattern"),
    (GOOD.replace(b"mail.example.com", b"mail..example.com"), "bad mx pattern"),
    (GOOD + b"just a line\n", "bad line"),
    (GOOD + b" mx: indented.example.com\n", "bad line"),               # no leading WSP
    (GOOD + b"x:\n", "bad value for x"),
    (GOOD + b"x: a\x01b\n", "bad value for x"),
    (GOOD.replace(b"\n", b"\r"), "bad value for version"),           # bare CR: no terminator, a CTL
    (GOOD + b"x: \xff\n", "not UTF-8"),
])
def test_policies_refused(body, why):
    with pytest.raises(Invalid) as raised:
        parse_policy(body)
    assert raised.value.args[0] == why


def test_mode_none_needs_no_mx():
    policy = parse_policy(b"version: STSv1\nmode: none\nmax_age: 86400\n")
    assert policy.mode == "none" and policy.mx == [] and not policy.matches(b"anything.example")


def test_max_age_above_the_rfc_limit_is_capped():
    assert parse_policy(GOOD.replace(b"604800", b"9999999999")).max_age == MAX_AGE_LIMIT == 31557600
    assert parse_policy(GOOD.replace(b"604800", b"31557600")).max_age == 31557600
    assert parse_policy(GOOD.replace(b"604800", b"0")).max_age == 0


# --- MX patterns ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    (b"mail.example.com", True),
    (b"MAIL.EXAMPLE.COM", True),
    (b"mail.example.com.", True),                                    # DNS's final dot
    ("mail.example.com", True),
    (b"mail2.example.com", False),
    (b"example.com", False),
    (b"mx1.example.net", True),                                      # *.example.net
    (b"MX1.Example.NET.", True),
    (b"example.net", False),                                         # the wildcard needs a label
    (b".example.net", False),
    (b"a.b.example.net", False),                                     # ... one label only
    (b"mx1.example.net.evil", False),
    (b"mx1example.net", False),
    (b"x\xff.example.net", False),
])
def test_mx_matching(name, expected):
    assert parse_policy(GOOD).matches(name) is expected


def test_a_pattern_is_matched_whole():
    assert not matches_pattern("example.com", "xexample.com")
    assert not matches_pattern("*.example.com", "example.com")


# --- the cache entry codec ------------------------------------------------------------------

def test_an_entry_survives_encoding():
    entry = cache.Entry(parse_policy(GOOD, "abc", 1234), 2000, "def", "HTTP 404")
    again = cache.decode(cache.encode(entry))
    assert (again.policy.mode, again.policy.mx, again.policy.id, again.policy.fetched_at, again.policy.text) == (
        "enforce", ["mail.example.com", "*.example.net"], "abc", 1234, GOOD.decode())
    assert (again.failed_at, again.failed_id, again.failure) == (2000, "def", "HTTP 404")
    failure_only = cache.decode(cache.encode(cache.Entry(None, 5, "x", "DNS: no such host")))
    assert failure_only.policy is None and failure_only.failure == "DNS: no such host"


@pytest.mark.parametrize("data", [
    b"", b"garbage", b"qremote-mta-sts 1\nfetched 1\nid abc\n",      # no blank line
    b"qremote-mta-sts 2\nfetched 1\nid abc\n\n" + GOOD,
    b"qremote-mta-sts 1\nfetched x\nid abc\n\n" + GOOD,
    b"qremote-mta-sts 1\nfetched 1\nid abc\n\n" + GOOD.replace(b"enforce", b"bogus"),  # policy re-parsed
])
def test_a_damaged_entry_is_none(data):
    assert cache.decode(data) is None


@pytest.mark.parametrize("domain, expected", [
    ("Example.COM.", "example.com"), (b"example.com", "example.com"), ("mx", "mx"),
    ("ex/ample.com", None), ("..", None), ("", None), ("exa mple.com", None), ("b\xfccher.de", None),
    ("a=lock", None), ("-x.com", None),
])
def test_cache_names(domain, expected):
    assert cache.normal_domain(domain) == expected


# --- control/mtasts -------------------------------------------------------------------------

@pytest.mark.parametrize("content, expected", [(None, True), (b"", True), (b"1\n", True), (b"0\n", False),
                                               (b"0\r\n", False), (b"2\n", True)])
def test_control_mtasts(tmp_path, monkeypatch, content, expected):
    from qremote import control

    os.makedirs(tmp_path / "control")
    if content is not None:
        (tmp_path / "control" / "mtasts").write_bytes(content)
    monkeypatch.chdir(tmp_path)
    assert control.switch("mtasts") is expected


def test_control_mtasts_garbage_is_a_z(tmp_path, monkeypatch):
    from qremote import control, failures

    os.makedirs(tmp_path / "control")
    (tmp_path / "control" / "mtasts").write_bytes(b"off\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(failures.ControlInvalid):
        control.switch("mtasts")
