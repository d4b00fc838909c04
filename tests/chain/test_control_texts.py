"""Error texts of control files that hold numbers: each says what the file should hold."""

import pytest


@pytest.mark.parametrize("content", ["x\n", "-1\n", "1.5\n"])
def test_tlsstrictness_that_is_no_number_says_what_it_should_be(home, server, pki, content):
    s = server()
    home.route("example.org:127.0.0.1:%d" % s.port)
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", content)
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org")
    text = "Invalid control file control/tlsstrictness: %r is not 0, 1 or 2. (#4.3.0)\n" % content.strip()
    assert reports == [("Z", text.encode())]
    assert not s.sessions  # refused before any connection


def test_tlsstrictness_out_of_range_says_the_same(home, server, pki):
    s = server()
    home.route("example.org:127.0.0.1:%d" % s.port)
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "3\n")
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org")
    assert reports == [("Z", b"Invalid control file control/tlsstrictness: 3 is not 0, 1 or 2. (#4.3.0)\n")]


def test_timeouts_still_speak_of_seconds(home, server):
    s = server()
    home.route("example.org:127.0.0.1:%d" % s.port)
    home.control("timeoutdns", "soon\n")
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org")
    assert reports == [("Z", b"Invalid control file control/timeoutdns: 'soon' is not a number of seconds. (#4.3.0)\n")]
