"""tlsrule.decide (the precedence table of doc/tlsdestinations.html, row by row), the
Rule codec, tlsc_options, and tlsdest's parser of tlsdestinations and domaincerts (sans-IO)."""

import pytest

from qremote import failures, tlsdest, tlsrule
from qremote.candidates import AF_INET, QMTPS, SMTPS, Target
from qremote.plan import Attempt, Plan, Policy
from qremote.tlsrule import Rule, decide

MX = b"mx.example.com"
HOST = b"example.com"
DIGEST = bytes(range(32))


class Dane:
    def __init__(self, state, records=(), base=MX, why=""):
        self.state, self.records, self.base, self.why = state, list(records), base, why


class Sts:
    def __init__(self, mode, mx=(MX,)):
        self.mode, self.mx = mode, mx

    def matches(self, name):
        return name in self.mx


def dests(*lines):
    """As control.read_lines gives them: comments out, numbers kept."""
    return tlsdest.parse([(n, line.encode()) for n, line in enumerate(lines, 1) if not line.startswith("#")])


def rule(lines=None, policy=None, **kw):
    kw.setdefault("host", HOST)
    kw.setdefault("mxname", MX)
    return decide(policy or Policy(), dests(*lines) if lines is not None else None, **kw)


SECURE = Dane("secure", [(3, 1, 1, DIGEST), (2, 0, 1, DIGEST)])


# --- level 5: tlsstrictness alone, as before ---

@pytest.mark.parametrize("strictness,mode,verify,fallback", [(0, "may", None, True), (1, "first", None, False),
                                                              (2, "must", "ca+dn*", False)])
def test_tlsstrictness_alone(strictness, mode, verify, fallback):
    r = rule(policy=Policy(strictness, b"/ca.pem", b"/c.pem", b"/k.pem"))
    assert (r.mode, r.verify, r.fallback, r.origin) == (mode, verify, fallback, "tlsstrictness")
    assert (r.clientcert, r.clientkey) == (b"/c.pem", b"/k.pem")
    options = tlsrule.tlsc_options(r, b"mx.test")
    assert {k: options[k] for k in ("name", "anchors", "cert", "key", "verify")} == {
        "name": b"mx.test", "anchors": b"/ca.pem" if strictness == 2 else None, "cert": b"/c.pem", "key": b"/k.pem",
        "verify": strictness == 2}
    assert "name_check" not in options  # tlsstrictness 2 is -v alone: the K still says "verified"
    assert r.required == ("control/tlsstrictness 2" if strictness == 2 else "")


def test_no_trustanchors_no_file_is_none():
    r = rule()
    assert (r.mode, r.origin) == ("none", "none")


def test_a_file_without_a_matching_line_or_global_rule_is_tlsstrictness():
    r = rule(["other.org:"], policy=Policy(1, b"/ca.pem"))
    assert (r.mode, r.origin) == ("first", "tlsstrictness")


# --- level 1: a destination line ---

@pytest.mark.parametrize("line,mode,verify,extra", [
    ("example.com:", "must", None, {}),
    ("example.com:/etc/ssl/cafile|!SSLv2:HIGH", "must", "ca",
     {"anchors": b"/etc/ssl/cafile", "ciphers": "!SSLv2:HIGH"}),
    ("example.com:/etc/ssl/certdir/||3;465", "must", "ca", {"depth": 3, "port": 465, "protocol": SMTPS}),
    ("=example.com:/etc/ssl/cacert||4", "must", "ca+dn", {"anchors": b"/etc/ssl/cacert", "depth": 4}),
    ("~example.com:", "must", "ca+dn*", {"system": True, "anchors": None}),
    ("-example.com:||aNULL:!kRSA", "must", None, {"anonymous": True, "ciphers": "aNULL:!kRSA"}),
    ("%example.com:=E4:41:94" + "ab" * 17, "must", "pin", {"pins": ["e44194" + "ab" * 17]}),
    ("!example.com:", "none", None, {}),
    ("example.com:;35", "must", None, {"port": 35, "protocol": None}),
    ("?example.com:", "may", None, {"fallback": True}),
    ("/example.com:", "must", None, {"dane_off": True}),
    ("example.com:;s", "must", None, {"port": 465, "protocol": SMTPS}),
    ("example.com:;s587", "must", None, {"port": 587, "protocol": SMTPS}),
    ("example.com:;6209", "must", None, {"port": 6209, "protocol": QMTPS}),
])
def test_destination_lines(line, mode, verify, extra):
    r = rule([line])
    assert (r.mode, r.verify, r.origin) == (mode, verify, "tlsdestinations"), r
    for name, value in extra.items():
        assert getattr(r, name) == value, (name, r)
    if mode == "must":
        assert r.required == "control/tlsdestinations line 1"


def test_exact_name_line_uses_trustanchors_when_it_names_no_cafile():
    r = rule(["=example.com:"], policy=Policy(0, b"/anchors.pem"))
    assert (r.anchors, r.system) == (b"/anchors.pem", False)


def test_line_wins_over_tlsstrictness_and_global_rules():
    r = rule(["+*:", "!example.com:"], policy=Policy(2, b"/ca.pem"))
    assert (r.mode, r.origin) == ("none", "tlsdestinations")


@pytest.mark.parametrize("lines,expected", [
    (["example.com:", "mx.example.com:;26"], 26),        # the MX name before the delivery's domain
    (["example.com:;25", "mx.example.com:;26"], 26),
    (["com:;27"], 27),                                    # a parent domain at a dot boundary
    (["ample.com:;28"], None),                            # ... not a mere suffix
    (["example.com:;29|src.example", "example.com:;30"], 29),  # sender-bound first
    (["example.com:;29|other.example", "example.com:;30"], 30),
    (["example.com:;31", "example.com:;32"], 32),         # the last of two equal lines
])
def test_which_line_matches(lines, expected):
    r = rule(lines, sender_domain=b"src.example")
    assert (r.port if r.origin == "tlsdestinations" else None) == expected


def test_a_sender_bound_line_needs_that_sender():
    assert rule(["example.com:|||src.example"], sender_domain=b"other.example").origin == "none"
    assert rule(["example.com:|||src.example"], sender_domain=b"SRC.example").mode == "must"
    assert rule(["example.com:;26|src.example"], sender_domain=b"src.example").port == 26


def test_a_routed_delivery_matches_the_relay_only():
    assert rule(["example.com:"], mxname=b"relay.test", routed=True).origin == "none"
    assert rule(["relay.test:"], mxname=b"relay.test", routed=True).mode == "must"
    assert rule(["example.com:"], mxname=b"relay.test").mode == "must"  # by MX: the domain too


# --- level 2: DANE ---

def test_dane_secure_is_must_verified_by_tlsa():
    r = rule(dane=SECURE)
    assert (r.mode, r.verify, r.origin) == ("must", "dane", "dane")
    assert r.tlsa == SECURE.records and r.names == []
    assert r.required == "DANE (the TLSA records of mx.example.com)"


def test_dane_ta_base_differs_names_both():
    r = rule(dane=Dane("secure", [(2, 1, 1, DIGEST)], base=b"base.example.net"))
    assert r.names == [b"base.example.net"]


def test_dane_keeps_only_usable_records_within_bounds():
    records = [(0, 1, 1, DIGEST), (1, 1, 1, DIGEST), (3, 2, 1, DIGEST), (3, 1, 3, DIGEST), (3, 1, 1, b"short"),
               (3, 1, 2, DIGEST)] + [(3, 1, 1, DIGEST)] * 9
    r = rule(dane=Dane("secure", records))
    assert r.tlsa == [(3, 1, 1, DIGEST)] * tlsrule.MAX_TLSA


def test_dane_full_data_records_travel_as_their_sha256():
    import hashlib
    spki = b"x" * 2000
    r = rule(dane=Dane("secure", [(3, 1, 0, spki), (2, 0, 2, DIGEST * 2)]))
    assert r.tlsa == [(3, 1, 1, hashlib.sha256(spki).digest()), (2, 0, 2, DIGEST * 2)]


def test_dane_secure_without_a_usable_record_skips_the_host_never_unverified():
    r = rule(dane=Dane("secure", [(1, 1, 1, DIGEST)]))
    assert r.mode == "skip" and r.why == b"no usable TLSA record"


def test_dane_unusable_is_mandatory_unauthenticated_tls():
    r = rule(dane=Dane("unusable"))
    assert (r.mode, r.verify, r.origin) == ("must", None, "dane")


def test_dane_failed_skips_the_host():
    r = rule(dane=Dane("failed", why="TLSA lookup failed (SERVFAIL or no answer)"))
    # the resolver's text as it is (it was once prefixed again: "TLSA lookup failed: TLSA lookup failed")
    assert (r.mode, r.origin) == ("skip", "dane") and r.why == b"TLSA lookup failed (SERVFAIL or no answer)"
    r = rule(dane=Dane("failed", why="address lookup failed for a DNSSEC-signed host"))
    assert r.why == b"address lookup failed for a DNSSEC-signed host"
    assert rule(dane=Dane("failed")).why == b"TLSA lookup failed"


@pytest.mark.parametrize("state", ["none", "insecure"])
def test_dane_none_or_insecure_goes_on(state):
    r = rule(dane=Dane(state), policy=Policy(1, b"/ca.pem"))
    assert (r.mode, r.origin) == ("first", "tlsstrictness")


def test_usable_dane_wins_over_a_plain_destination_line():
    r = rule(["example.com:/ca.pem"], dane=SECURE)
    assert (r.verify, r.origin) == ("dane", "dane")


def test_usable_dane_keeps_the_lines_port():
    r = rule(["example.com:;s"], dane=SECURE)
    assert (r.verify, r.port, r.protocol) == ("dane", 465, SMTPS)


@pytest.mark.parametrize("line,verify", [("/example.com:", None), ("%example.com:=" + "a" * 64, "pin"),
                                         ("!example.com:", None)])
def test_slash_percent_bang_lines_win_over_dane(line, verify):
    r = rule([line], dane=SECURE)
    assert (r.origin, r.verify) == ("tlsdestinations", verify)


def test_a_line_wins_over_dane_unusable_and_failed():
    assert rule(["?example.com:"], dane=Dane("failed")).mode == "may"
    assert rule(["example.com:/ca.pem"], dane=Dane("unusable")).verify == "ca"


@pytest.mark.parametrize("off", ["/:", "/*:"])
def test_global_slash_turns_dane_off(off):
    r = rule([off], dane=SECURE, policy=Policy(0, b"/ca.pem"))
    assert r.origin != "dane"


# --- level 3: MTA-STS ---

def test_sts_enforce_listed_mx_is_must_verified_with_the_system_store():
    r = rule(sts=Sts("enforce"))
    assert (r.mode, r.verify, r.system, r.anchors, r.origin) == ("must", "ca+dn*", True, None, "mta-sts")
    assert r.names == []  # the MX name is tlsc-io's -k already
    assert r.required == "the MTA-STS policy of example.com"


def test_sts_enforce_uses_trustanchors_when_set():
    r = rule(sts=Sts("enforce"), policy=Policy(0, b"/ca.pem"))
    assert (r.anchors, r.system) == (b"/ca.pem", False)


def test_sts_enforce_unlisted_mx_is_skipped():
    r = rule(sts=Sts("enforce", mx=()))
    assert r.mode == "skip" and r.origin == "mta-sts"


@pytest.mark.parametrize("mode", ["testing", "none"])
def test_sts_testing_is_ignored(mode):
    assert rule(sts=Sts(mode, mx=())).origin == "none"


def test_dane_before_sts_and_sts_before_global_rules():
    assert rule(dane=SECURE, sts=Sts("enforce")).origin == "dane"
    assert rule(["*:"], sts=Sts("enforce")).origin == "mta-sts"


# --- level 4: global rules ---

@pytest.mark.parametrize("line,mode,verify,anonymous,fallback", [
    ("*:", "may", None, False, True),
    ("?:", "may", None, False, True),
    ("-*:", "must", None, True, False),
    ("+*:", "must", "ca", False, False),
    ("~*:", "must", "ca+dn*", False, False),
    ("=*:", "must", "ca+dn", False, False),
    ("/*:", "must", None, False, False),
])
def test_global_rules_win_over_tlsstrictness(line, mode, verify, anonymous, fallback):
    r = rule([line], policy=Policy(2, b"/ca.pem"))
    assert (r.mode, r.verify, r.anonymous, r.fallback, r.origin) == (mode, verify, anonymous, fallback,
                                                                     "tlsdestinations")
    if verify:
        assert r.anchors == b"/ca.pem" and not r.system


def test_verifying_global_rule_without_trustanchors_uses_the_system_store():
    r = rule(["+*:"])
    assert r.system and r.anchors is None


def test_mandatory_global_rule_before_optional():
    assert rule(["*:", "+*:"]).mode == "must"


def test_anonymous_global_is_a_modifier():
    assert rule(["-:", "*:"]).anonymous
    r = rule(["-:"], policy=Policy(0, b"/ca.pem"))
    assert (r.origin, r.anonymous) == ("tlsstrictness", True)
    assert not rule(["-:"], policy=Policy(2, b"/ca.pem")).anonymous  # verified: no anonymous suites


# --- level 6: the memory ---

@pytest.mark.parametrize("policy,lines", [(Policy(), None), (Policy(0, b"/ca.pem", b"/c.pem"), None),
                                          (Policy(1, b"/ca.pem", b"/c.pem"), None), (Policy(), ["*:"])])
def test_memory_raises_to_must(policy, lines):
    r = rule(lines, policy=policy, memory="encrypted")
    assert (r.mode, r.origin, r.required, r.fallback) == ("must", "memory", "the TLS memory of mx.example.com", False)
    assert r.clientcert == policy.clientcert


def test_memory_never_overrides_a_destination_line_or_a_stronger_rule():
    assert rule(["!example.com:"], memory="verified").mode == "none"
    assert rule(["?example.com:"], memory="verified").mode == "may"
    assert rule(dane=SECURE, memory="verified").origin == "dane"
    assert rule(policy=Policy(2, b"/ca.pem"), memory="verified").origin == "tlsstrictness"


# --- domaincerts on any rule that does TLS ---

def test_domaincerts_client_goes_with_tls_rules_only():
    client = (b"/d.pem", None, "domaincerts:1:6162")
    r = rule(["example.com:"], client=client)
    assert (r.clientcert, r.clientkey, r.clientref) == client
    assert rule(["!example.com:"], client=client).clientcert is None


# --- the codec ---

def test_rule_codec_round_trip():
    r = Rule("must", "dane", fallback=True, verify="dane", anchors=b"/a;b,c/d.e", system=True, ciphers="A:B.C;D",
             depth=3, anonymous=True, pins=["ab" * 20], tlsa=[(3, 1, 1, DIGEST), (2, 0, 0, b"")],
             names=[b"a.b", b"c"], clientref="domaincerts:2:6162", clientcert=b"/c", clientkey=b"/k",
             required="DANE (the TLSA records of x)", why=b"why")
    paths = {}
    word = r.encode(paths)
    assert paths == {b"/a;b,c/d.e": 0, b"domaincerts:2:6162": 1, b"/c": 2, b"/k": 3}
    p = Plan(Policy(0, b"/a;b,c/d.e", b"/c"), [Target("127.0.0.2", AF_INET, name=b"mx")], rules=[r])
    state = p.dump()
    assert state.split(";")[16] == "%s,%s" % (b"domaincerts:2:6162".hex(), b"/k".hex())  # the policy's: once
    assert Plan.load(state).rule_of(Plan.load(state).todo[0]) == r
    assert not set(word) & set(",;/") and tlsrule.Rule.decode(word, list(paths)) == r


@pytest.mark.parametrize("word", ["", "must", "bogus" + "." * 16, "must.2" + "." * 15,
                                  "must..pin" + "." * 5 + "zz" + "." * 9,
                                  "must" + "." * 11 + "6162" + "....",  # a clientref that is no reference
                                  "must" + "." * 14 + "elsewhere..", ])
def test_rule_codec_refuses_garbage(word):
    with pytest.raises(ValueError):
        tlsrule.Rule.decode(word, [])


def test_plan_state_carries_rules_and_shares_them():
    targets = [Target("127.0.0.%d" % i, AF_INET, 25, 10, b"mx%d.test" % (i % 2)) for i in range(2, 8)]
    dane_rule = rule(dane=SECURE)
    rules = [dane_rule if i % 2 else rule(["mx0.test:"], mxname=b"mx0.test") for i in range(2, 8)]
    p = Plan(Policy(0, b"/ca.pem"), targets, rules=rules)
    first = p.next_group()[0]
    state = p.dump(first)
    assert state.startswith("5;") and state.split(";")[14].count(",") == 1  # two distinct rules, each once
    back = Plan.load(state)
    assert [back.rule_of(a) for a in back.todo] == [p.rule_of(first)] + [p.rule_of(a) for a in p.todo]
    assert back.rule_of(back.todo[1]).verify == "dane"


def test_plan_state_of_tlsstrictness_alone_stays_version_4():
    targets = [Target("127.0.0.2", AF_INET, 25, 10, b"mx.test")]
    p = Plan(Policy(1, b"/ca.pem"), targets, rules=[rule(policy=Policy(1, b"/ca.pem"), mxname=b"mx.test")])
    assert p.dump(p.next_group()[0]).startswith("4;")


def test_plan_state_with_the_largest_rules_fits_one_argv_word():
    targets = []
    rules = []
    policy = Policy(1, b"/" + b"a" * 4000, b"/" + b"c" * 4000, b"/" + b"k" * 4000)
    long_path = b"/" + b"p" * (tlsdest.MAX_PATH - 1)
    cafile = long_path.decode()[:tlsdest.MAX_CAFILE - 2]
    lines = ["m%02d%s:%s%02d||9|src.example" % (n, ".x" * 125, cafile, n) for n in range(16)]
    client = (long_path[:-1] + b"c", long_path[:-1] + b"k", "domaincerts:1:" + "ab" * 2048)
    for n in range(32):
        name = (b"m%02d" % n) + b".x" * 125
        big = Dane("secure", [(3, 1, 2, bytes([n]) * 64)] * tlsrule.MAX_TLSA, base=b"b" + name[1:])
        for i in range(16):
            targets.append(Target("10.%d.%d.1" % (n, i), AF_INET, 25, n, name))
            rules.append(decide(policy, dests(*lines), HOST, name, b"src.example", dane=big if n >= 16 else None,
                                client=client))
    assert {r.verify for r in rules} == {"ca", "dane"}
    p = Plan(policy, targets, rules=rules)
    first, *others = p.next_group()
    p.put_back(others)
    state = p.dump(first)
    assert len(state) < 128 * 1024 - 4096, len(state)  # argv's limit for one word, with room for the option
    back = Plan.load(state)
    assert len(back.todo) == 512
    assert back.rule_of(back.todo[0]) == rules[0] and back.rule_of(back.todo[-1]) == rules[-1]


def test_skipped_targets_are_never_tried_and_named_in_the_report():
    targets = [Target("127.0.0.2", AF_INET, 25, 10, MX), Target("127.0.0.3", AF_INET, 25, 20, b"mx2.example.com")]
    rules = [rule(dane=Dane("failed", why="TLSA lookup failed (SERVFAIL)")), rule(sts=Sts("enforce", mx=()), mxname=b"mx2.example.com")]
    p = Plan(Policy(), targets, rules=rules)
    assert p.next_group() == []
    failure = p.exhausted(0)
    assert isinstance(failure, failures.TLSRequiredBy) and failure.letter == b"Z"
    assert failure.text() == (b"Sorry, no server would take the message over TLS, as DANE (the TLSA records of "
                              b"mx.example.com) requires (127.0.0.2: TLSA lookup failed (SERVFAIL); 127.0.0.3: not an "
                              b"MX of the MTA-STS policy of example.com). (#4.7.5)\n")


def test_a_mandatory_line_names_itself_in_the_report():
    targets = [Target("127.0.0.2", AF_INET, 25, 10, MX)]
    p = Plan(Policy(), targets, rules=[rule(["example.com:"])])
    attempt, = p.next_group()
    assert p.tls_wanted(attempt) and p.without_tls(attempt, failures.TLS_NOT_OFFERED) == "skip"
    assert p.exhausted(0).text().startswith(b"Sorry, no server would take the message over TLS, as "
                                            b"control/tlsdestinations line 1 requires (127.0.0.2: no STARTTLS")
    back = Plan.load(Plan(Policy(), targets, rules=[rule(["example.com:"])]).dump(attempt))
    back.handshake_failed(b"TLS handshake error: x")
    assert b"control/tlsdestinations line 1" in back.exhausted(0).text()


def test_bang_line_never_starttls_even_with_auth_and_question_falls_back():
    target = Target("127.0.0.2", AF_INET, 25, 10, MX)
    p = Plan(Policy(2, b"/ca.pem"), [target], auth="smtproutes:1:61", rules=[rule(["!example.com:"])])
    assert not p.tls_wanted(p.next_group()[0])
    p = Plan(Policy(2, b"/ca.pem"), [target], rules=[rule(["?example.com:"], policy=Policy(2, b"/ca.pem"))])
    attempt, = p.next_group()
    assert p.tls_wanted(attempt) and p.without_tls(attempt, b"x") == "clear"
    p.put_back([attempt])
    p.handshake_failed(b"TLS handshake error: x")
    retry, = p.next_group()
    assert retry.cleartext and retry.retry


# --- tlsc_options: every field of the rule reaches tlsc-io ---

def options(r, name=b"mx.test"):
    return {k: v for k, v in tlsrule.tlsc_options(r, name).items() if v not in (None, False, [], ())}


def test_tlsc_options_pass_every_check():
    assert options(Rule("must", verify="pin", pins=["a" * 64])) == {"name": b"mx.test", "pins": ["a" * 64]}
    assert options(Rule("must", verify="dane", tlsa=[(3, 1, 1, DIGEST)])) == {
        "name": b"mx.test", "tlsa": [(3, 1, 1, DIGEST)]}
    # DANE with a TLSA base other than the MX name: the base is the SNI, the MX name the other name
    assert options(Rule("must", verify="dane", tlsa=[(2, 0, 1, DIGEST)], names=[b"base.test"])) == {
        "name": b"base.test", "names": [b"mx.test"], "tlsa": [(2, 0, 1, DIGEST)]}
    assert options(Rule("must", ciphers="HIGH")) == {"name": b"mx.test", "ciphers": "HIGH"}
    assert options(Rule("must", verify="ca", anchors=b"/ca", depth=2)) == {
        "name": b"mx.test", "anchors": b"/ca", "depth": 2, "name_check": "ca"}
    assert options(Rule("must", "mta-sts", verify="ca+dn*", system=True)) == {
        "name": b"mx.test", "system": True, "name_check": "dn*"}
    assert options(Rule("must", verify="ca+dn", anchors=b"/ca")) == {"name": b"mx.test", "anchors": b"/ca",
                                                                     "name_check": "dn"}
    assert options(Rule("must", clientcert=b"/c", clientref="domaincerts:1:61")) == {
        "name": b"mx.test", "cert": b"/c", "clientref": "domaincerts:1:61"}


def test_tlsc_options_anonymous_only_without_verification():
    assert options(Rule("must", anonymous=True, anchors=b"/ca")) == {"name": b"mx.test", "anonymous": True}
    assert "anonymous" not in options(Rule("must", verify="ca", anonymous=True, anchors=b"/ca"))


def test_tlsc_options_build_a_command_line_tlsc_io_takes():
    """Every mapping above parses back in tlsc-io (one of -v/-m, -f, -D, -n at most)."""
    from qremote import tlsc

    for r in (Rule("must", verify="pin", pins=["a" * 64]), Rule("must", verify="dane", tlsa=[(3, 1, 1, DIGEST)]),
              Rule("must", verify="dane", tlsa=[(2, 0, 1, DIGEST)], names=[b"base.test"]),
              Rule("must", verify="ca", anchors=b"/ca", depth=2, ciphers="HIGH"),
              Rule("must", "mta-sts", verify="ca+dn*", system=True), Rule("must", anonymous=True),
              Rule("must", clientcert=b"/c", clientref="domaincerts:1:61"),
              tlsrule.from_policy(Policy(2, b"/ca.pem"))):
        o = tlsrule.tlsc_options(r, b"mx.test")
        argv = tlsc.build_tlsc("tlsc-io", o.pop("name"), o.pop("anchors"), o.pop("cert"), o.pop("key"),
                               o.pop("verify"), 5, 5, [], ["prog"], **o)
        tlsc.parse_tlsc(argv)  # raises tlsc.Usage on a command line it refuses


# --- the parser ---

@pytest.mark.parametrize("line,why", [
    ("example.com", "no ':'"),
    (":", "no destination"),
    ("=:", "no destination"),
    ("*:/ca", "takes nothing"),
    ("ex ample.com:", "no destination"),
    ("%example.com:", "needs =fingerprint"),
    ("%example.com:=abc", "hex digits"),
    ("example.com:=" + "g" * 64, "hex digits"),
    ("example.com:|HIGH|x", "verification depth"),
    ("example.com:||101", "verification depth"),
    ("example.com:;", "no port"),
    ("example.com:;0", "port"),
    ("example.com:;65536", "port"),
    ("example.com:;sx", "port"),
    ("example.com:a|b|c|d|e", "more than"),
    ("example.com:a|b|c|d;25", "more than"),
    ("example.com:;25|a|b", "more than"),
    ("example.com:|a b", "cipher"),
    ("example.com:;25|a@b", "sender domain"),
    ("!example.com:/ca", "takes no cafile"),
    ("?example.com:||3", "takes no cafile"),
    ("!example.com:;465", "cannot ask for SMTPS"),
])
def test_unparsable_lines_are_a_z_naming_the_line(line, why):
    with pytest.raises(failures.ControlInvalid) as caught:
        dests("# comment", line)
    text = caught.value.text()
    assert text.startswith(b"Invalid control file control/tlsdestinations: line 2: "), text
    assert why.encode() in text, text


def test_two_different_mandatory_rules_are_refused():
    with pytest.raises(failures.ControlInvalid) as caught:
        dests("+*:", "=*:")
    assert b"line 2: a second mandatory rule (line 1 has +*:)" in caught.value.text()
    assert dests("+*:", "+*:").mandatory.number == 2


def test_fingerprints_of_each_length_colons_and_case():
    for digits in (40, 56, 64, 128):
        fp = ("AB" * (digits // 2))
        line = dests("%h.test:=" + ":".join(fp[i:i + 2] for i in range(0, digits, 2))).find([b"h.test"])
        assert line.pin == "ab" * (digits // 2)


def test_domaincerts_keeps_paths_and_a_password_free_reference():
    table = tlsdest.parse_domaincerts([(1, b"*:/d.pem")])
    assert table[b"*"] == (b"/d.pem", None, None, 1)
    with pytest.raises(failures.ControlInvalid) as caught:
        tlsdest.parse_domaincerts([(3, b"src.example:/c.pem|/k.pem|sec|ret")])
    assert b"control/domaincerts: line 3: more than certificate|keyfile|password" in caught.value.text()
    cert, key, reference, number = tlsdest.parse_domaincerts([(4, b"src.example:/c.pem|/k.pem|secret")])[
        b"src.example"]
    assert (cert, key, number) == (b"/c.pem", b"/k.pem", 4)
    assert reference == "domaincerts:4:" + b"src.example:/c.pem|/k.pem|".hex()
    assert b"secret" not in bytes.fromhex(reference.split(":")[2]) and tlsrule.is_reference(reference)


@pytest.mark.parametrize("line", [b"src.example", b":/c.pem", b"src.example:", b"src.example:|/k.pem"])
def test_domaincerts_bad_lines(line):
    with pytest.raises(failures.ControlInvalid) as caught:
        tlsdest.parse_domaincerts([(7, line)])
    assert caught.value.text().startswith(b"Invalid control file control/domaincerts: line 7: ")


def test_attempt_without_rule_follows_the_plan():
    p = Plan(Policy(1, b"/ca.pem"), [])
    assert p.rule_of(Attempt(Target("127.0.0.2", AF_INET))).mode == "first"


def test_a_damaged_version_5_state_is_refused_cleanly():
    """resumed_plan turns ValueError and IndexError into a Z: nothing else may escape."""
    import random
    targets = [Target("127.0.0.2", AF_INET, 25, 10, MX), Target("127.0.0.3", AF_INET, 25, 20, b"mx2.test")]
    p = Plan(Policy(1, b"/ca.pem", b"/c.pem"), targets,
             rules=[rule(dane=SECURE, client=(b"/d.pem", b"/k.pem", "domaincerts:1:6162")), rule(["mx2.test:"])])
    good = p.dump(p.next_group()[0])
    assert Plan.load(good).rule_of(Plan.load(good).todo[0]).verify == "dane"
    rng = random.Random(11)
    alphabet = "0123456789abcdef.;,/-+x"
    for _ in range(3000):
        state = list(good)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(state))
            state[i:i + rng.randint(0, 2)] = rng.choice(alphabet) * rng.randint(0, 2)
        try:
            Plan.load("".join(state))
        except (ValueError, IndexError):
            pass


@pytest.mark.parametrize("line", ["?example.com:=" + "ab" * 32, "?example.com:|HIGH", "?example.com:/ca.pem",
                                  "?example.com:||2"])
def test_a_question_line_has_nothing_to_verify(line):
    """`?` falls back to cleartext after a failed handshake, so it cannot hold a check whose
    failure would then send in cleartext (pin, depth, cafile, ciphers): refused by grammar."""
    with pytest.raises(failures.ControlInvalid) as caught:
        dests(line)
    assert b"line 1: a '?' line takes no cafile, fingerprint, ciphers or depth" in caught.value.text()


def test_dane_wins_over_a_question_line_without_fallback():
    r = rule(["?example.com:"], dane=SECURE)
    assert (r.mode, r.verify, r.origin, r.fallback) == ("must", "dane", "dane", False)
