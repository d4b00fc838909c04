"""tlsc-io's argv: what qmail-remote builds, tlsc-io parses back; and the texts tlsc-io
hands on (TLSC_FAILURE, SSL_PEER_CERT_SUBJECT). No sockets."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qremote import tlsc
from qremote.tls.context import TLSFailure, subject_text
from qremote.tlsc import Usage, build_tlsc, parse_tlsc

QMAILREMOTE = [b"/var/qmail/bin/qmail-remote", b"--qremote-resume=0;;;", b"example.org", b"a@b", b"c@d"]
IO = [b"/var/qmail/bin/qmail-remote-io", b"-t", b"1200", b"-h", b"me.example", b"--", b"192.0.2.1", b"a@b", b"c@d"]


def test_build_as_qmail_remote_uses_it():
    argv = build_tlsc("/var/qmail/bin/tlsc-io", "mx.example.org", "/etc/ssl/ca.pem", "/c.pem", "/k.pem", True,
                      60, 1200, QMAILREMOTE, IO)
    assert argv == [b"/var/qmail/bin/tlsc-io", b"-k", b"mx.example.org", b"-a", b"/etc/ssl/ca.pem",
                    b"-c", b"/c.pem", b"-y", b"/k.pem", b"-v", b"-t", b"60", b"-T", b"1200", b"-F", b"5", b"--"] \
        + QMAILREMOTE + IO
    options = parse_tlsc(argv)
    assert options.name == "mx.example.org"
    assert (options.anchors, options.cert, options.key) == (b"/etc/ssl/ca.pem", b"/c.pem", b"/k.pem")
    assert options.verify is True
    assert (options.handshake_timeout, options.timeout, options.fdr, options.fdw) == (60, 1200, 6, 7)
    assert options.continuation == QMAILREMOTE
    assert options.prog == IO


def test_build_leaves_out_what_is_not_given():
    argv = build_tlsc(b"tlsc-io", None, None, None, None, False, 5, 1, None, [b"cat"])
    assert argv == [b"tlsc-io", b"-t", b"5", b"-T", b"1", b"--", b"cat"]
    options = parse_tlsc(argv)
    assert options.name is None and options.anchors is None and options.continuation is None
    assert not options.verify and options.prog == [b"cat"]


def test_other_fds_round_trip():
    options = parse_tlsc(build_tlsc("t", "mx", None, None, None, False, 1, 2, None, ["p"], fdr=3, fdw=4))
    assert (options.fdr, options.fdw) == (3, 4)


def test_defaults_and_long_forms():
    options = parse_tlsc(["tlsc-io", "--name=mx.test", "--anchors", "/etc/ssl/certs/", "--verify",
                          "--handshake-timeout=7", "--timeout=9", "--fdr=0", "--fdw", "1", "prog", "-v"])
    assert options.name == "mx.test" and options.anchors == b"/etc/ssl/certs/" and options.verify
    assert (options.handshake_timeout, options.timeout, options.fdr, options.fdw) == (7, 9, 0, 1)
    assert options.prog == [b"prog", b"-v"]  # options end at the first word that is not one
    assert parse_tlsc(["tlsc-io", "-kmx.test", "prog"]).name == "mx.test"
    defaults = parse_tlsc(["tlsc-io", "prog"])
    assert (defaults.handshake_timeout, defaults.timeout) == (60, 1200)


def test_server_name_forms():
    assert parse_tlsc(["t", "-k", "mx.test.", "p"]).name == "mx.test"
    assert parse_tlsc(["t", "-k", "bücher.example", "p"]).name == "xn--bcher-kva.example"
    # IDNA 2008 (one encoder with the DNS lookup, qremote.hostname), not Python's IDNA 2003
    assert parse_tlsc(["t", "-k", "stra\u00dfe.de", "p"]).name == "xn--strae-oqa.de"
    assert parse_tlsc(["t", "-k", "\u03c3\u03c2.test.", "p"]).name == "xn--3xab.test"


def test_server_name_idna_2008_refusal_is_a_usage_error():
    with pytest.raises(Usage) as caught:
        parse_tlsc(["t", "-k", "a\u200db.test", "p"])  # ZWJ outside CONTEXTJ: 2003 dropped it silently
    assert "not a valid" in str(caught.value)


@pytest.mark.parametrize("argv,why", [
    (["t"], "tlsc-io [-k name]"),
    (["t", "--"], "tlsc-io [-k name]"),
    (["t", "-x", "p"], "unknown option -x"),
    (["t", "-k"], "option -k needs a value"),
    (["t", "-t", "1.5", "p"], "option -t needs a number"),
    (["t", "-T", "²", "p"], "option -T needs a number"),
    (["t", "-F", "2", "--", "a", "b"], "-F 2"),
    (["t", "-F", "0", "--", "a"], "-F 0"),
    (["t", "-v", "p"], "-v needs -k"),
    (["t", "-y", "key", "p"], "-y needs -c"),
    (["t", "-k", "", "p"], "-k needs a host name"),
    (["t", "-k", "a..b", "p"], "-k needs a host name"),
    (["t", "-a", "", "p"], "option -a needs a value"),
    # 0 is no bound on a network wait (a server could hold the delivery forever)
    (["t", "-t", "0", "p"], "at least 1 second"),
    (["t", "-T", "0", "p"], "at least 1 second"),
])
def test_usage_errors(argv, why):
    with pytest.raises(Usage) as caught:
        parse_tlsc(argv)
    assert why in str(caught.value)


words = st.lists(st.binary(min_size=1).filter(lambda w: b"\0" not in w), min_size=1, max_size=5)


@given(prog=words, continuation=st.one_of(st.none(), words),
       anchors=st.one_of(st.none(), st.binary(min_size=1).filter(lambda w: b"\0" not in w)),
       timeouts=st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)), verify=st.booleans())
def test_any_command_line_round_trips(prog, continuation, anchors, timeouts, verify):
    """Whatever the words (even ones that look like options), PROG and the continuation come back whole."""
    argv = build_tlsc("tlsc-io", "mx.test", anchors, None, None, verify, timeouts[0], timeouts[1], continuation, prog)
    options = parse_tlsc(argv)
    assert options.prog == prog
    assert options.continuation == (continuation or None)
    assert options.anchors == anchors
    assert (options.handshake_timeout, options.timeout, options.verify) == (timeouts[0], timeouts[1], verify)


def test_failure_line_is_one_bounded_printable_line():
    line = TLSFailure("handshake", "bad\nthing\x00" + "x" * 400).line()
    assert line.startswith(b"handshake: bad?thing?")
    assert len(line) == 300 and line.decode("ascii").isprintable()


def test_subject_text_as_s6_tlsc_writes_it():
    subject = ((("commonName", "mx.example"),), (("countryName", "FR"),), (("organizationName", " A, B+C "),),
               (("organizationalUnitName", "#1"),), (("emailAddress", "x@y"),), (("commonName", "second"),),)
    assert subject_text(subject) == b"C=FR, O=A\\, B\\+C, OU=\\#1, CN=mx.example"
    assert subject_text(()) is None


def test_module_is_cheap():
    """qmail-remote imports tlsc in every delivery: it must not drag the TLS stack in."""
    assert "ssl" not in tlsc.__dict__ and "_ssl" not in tlsc.__dict__


def test_addresses_are_told_from_names():
    from qremote.tls.context import is_address
    assert is_address("192.0.2.1") and is_address("2001:db8::1") and is_address("::ffff:192.0.2.1")
    assert not is_address("mx.example") and not is_address("1.example") and not is_address("xn--bcher-kva.example")


def test_report_flag_round_trips_and_is_found_in_a_broken_command_line():
    argv = build_tlsc("tlsc-io", "mx", None, None, None, False, 1, 2, ["qmail-remote"], ["p"], report=True)
    assert parse_tlsc(argv).report
    assert tlsc.wants_report([b"tlsc-io", b"-R", b"-x", b"--", b"p"])
    assert not tlsc.wants_report([b"tlsc-io", b"--", b"-R"])  # a word of PROG, not an option


@pytest.mark.parametrize("name,dropped", [(b"OPENSSL_CONF", True), (b"OPENSSL_MODULES", True),
                                          (b"SSL_CERT_FILE", True), (b"SSL_CERT_DIR", True),
                                          (b"SSLKEYLOGFILE", True), (b"PATH", False), (b"SSL_PROTOCOL", False)])
def test_openssl_variables(name, dropped):
    assert tlsc.openssl_variable(name) is dropped


def test_failure_line_and_its_parser_agree():
    for kind in tlsc.KINDS:
        line = tlsc.failure_line(kind, "why \x01" + "x" * 400)
        assert len(line) == tlsc.MAX_FAILURE and line.isascii()
        assert tlsc.parse_failure(line.decode())[0] == kind
    assert tlsc.parse_failure("injection: x") == ("handshake", "injection: x")


def test_every_kind_has_a_report_text():
    from qremote import failures
    assert set(failures.TLS_KINDS) == set(tlsc.KINDS)


# --- the options of per-destination TLS (issue 11): -C -d -m -N -s -f -D -n -p ---

def test_new_options_round_trip_through_build_and_parse():
    tlsa = [(3, 1, 1, bytes(range(32))), (2, 0, 2, bytes(64)), (3, 0, 0, b"\x30\x03\x02\x01\x01")]
    argv = build_tlsc("tlsc-io", "mx.test", "/a.pem", "/c.pem", "/k.pem", False, 60, 1200, None, ["p"],
                      tlsa=tlsa, names=["base.test", "mx2.test"], depth=3, ciphers="HIGH:!aNULL", system=True,
                      clientref="domaincerts:3:" + b"x.test:/c.pem|/k.pem|".hex())
    assert b"-D" in argv and b"3 1 1 " + bytes(range(32)).hex().encode() in argv
    options = parse_tlsc(argv)
    assert options.tlsa == tlsa and options.names == ["base.test", "mx2.test"]
    assert (options.depth, options.ciphers, options.system) == (3, "HIGH:!aNULL", True)
    assert options.clientref.startswith("domaincerts:3:") and not options.verify
    options = parse_tlsc(build_tlsc("t", "mx.test", None, None, None, False, 1, 2, None, ["p"],
                                    pins=["AB:" * 31 + "AB", "cd" * 20], anonymous=False))
    assert options.pins == ["ab" * 32, "cd" * 20]
    options = parse_tlsc(build_tlsc("t", "mx.test", "/a", None, None, False, 1, 2, None, ["p"], name_check="dn"))
    assert options.verify and options.name_check == "dn"  # -m implies -v
    assert parse_tlsc(build_tlsc("t", None, None, None, None, False, 1, 2, None, ["p"], anonymous=True)).anonymous
    # the long forms
    options = parse_tlsc(["t", "--name-check=dn*", "--also-name", "a.test", "--system-anchors", "--depth=2",
                          "--ciphers=HIGH", "-k", "mx.test", "p"])
    assert (options.name_check, options.names, options.system, options.depth) == ("dn*", ["a.test"], True, 2)
    # the old positional call still builds the same argv as before
    assert build_tlsc(b"tlsc-io", None, None, None, None, False, 5, 1, None, [b"cat"]) == \
        [b"tlsc-io", b"-t", b"5", b"-T", b"1", b"--", b"cat"]


@pytest.mark.parametrize("argv,why", [
    (["t", "-k", "mx", "-D", "1 1 1 " + "00" * 32, "p"], "TLSA usage 1 is not for SMTP"),
    (["t", "-k", "mx", "-D", "0 0 1 " + "00" * 32, "p"], "TLSA usage 0 is not for SMTP"),
    (["t", "-k", "mx", "-D", "3 2 1 " + "00" * 32, "p"], "selector 2"),
    (["t", "-k", "mx", "-D", "3 1 3 00", "p"], "matching type 3"),
    (["t", "-k", "mx", "-D", "3 1 1 " + "00" * 31, "p"], "needs 32 bytes"),
    (["t", "-k", "mx", "-D", "3 1 2 " + "00" * 32, "p"], "needs 64 bytes"),
    (["t", "-k", "mx", "-D", "3 1 0 0g", "p"], "hex digits"),
    (["t", "-k", "mx", "-D", "3 1 1", "p"], "USAGE SELECTOR MTYPE HEX"),
    (["t", "-D", "2 0 1 " + "00" * 32, "p"], "usage 2 needs -k"),
    (["t", "-k", "mx", "-f", "abcd", "p"], "-f needs a SHA-1"),
    (["t", "-k", "mx", "-f", "zz" * 32, "p"], "-f needs a SHA-1"),
    (["t", "-k", "mx", "-m", "dnx", "p"], "-m takes dn"),
    (["t", "-m", "dn", "p"], "-v needs -k"),
    (["t", "-k", "mx", "-v", "-f", "ab" * 32, "p"], "-v/-m and -f exclude each other"),
    (["t", "-k", "mx", "-m", "ca", "-D", "3 1 1 " + "00" * 32, "p"], "-v/-m and -D exclude each other"),
    (["t", "-k", "mx", "-n", "-f", "ab" * 32, "p"], "-f and -n exclude each other"),
    (["t", "-k", "mx", "-p", "domaincerts:1:00", "p"], "-p needs -c"),
    (["t", "-k", "mx", "-c", "c", "-p", "authsenders:1:00", "p"], "-p needs domaincerts:LINE:HEX"),
    (["t", "-k", "mx", "-c", "c", "-p", "domaincerts:x:00", "p"], "-p needs domaincerts:LINE:HEX"),
    (["t", "-k", "mx", "-d", "-1", "p"], "option -d needs a number"),
    (["t", "-k", "mx", "-N", "a..b", "p"], "-N needs a host name"),
    (["t", "-k", "mx", "-C", "", "p"], "option -C needs a value"),
])
def test_new_option_usage_errors(argv, why):
    with pytest.raises(Usage) as caught:
        parse_tlsc(argv)
    assert why in str(caught.value)


def test_k_words_for_each_verifier():
    from qremote import failures
    from qremote.failures import accepted
    ok = type("Reply", (), {"text": b"250 ok"})()
    assert accepted(b"192.0.2.1", ok, b"TLSv1.3", b"X", True, by=b"DANE-EE").startswith(
        b"192.0.2.1 accepted message. (TLSv1.3 TLSA validated DANE-EE, cipher X)\n")
    assert b"(TLSv1.3 CERT pinning, cipher X)" in accepted(b"192.0.2.1", ok, b"TLSv1.3", b"X", True, by=b"pin")
    for by, words in ((b"ca", b"verified CA,"), (b"ca+dn", b"verified CA+DN,"), (b"ca+dn*", b"verified CA+DN*,"),
                      (b"DANE-TA", b"TLSA validated DANE-TA,")):
        assert words in accepted(b"192.0.2.1", ok, b"TLSv1.2", b"X", True, by=by)
    # tlsstrictness 2 (-v alone) sets no SSL_PEER_VERIFIED_BY: its K is as it always was
    assert b"(TLSv1.3 verified, cipher X)" in accepted(b"192.0.2.1", ok, b"TLSv1.3", b"X", True)
    assert set(failures.VERIFIED_BY_WORDS) == {by.encode() for by in tlsc.VERIFIED_BY}
