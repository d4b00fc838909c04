"""s/qmail's routing control files through the installed chain: smtproutes' bounce key
`!@`, authsenders' precedence, domainips' source address and HELO name, and the Z for a
line that cannot be parsed."""


def test_bounce_route(home, server):
    bounces, others = server(), server()
    home.route("!@:127.0.0.1;%d" % bounces.port, "example.org:127.0.0.1;%d" % others.port)
    reports, _ = home.remote("example.org", "", "b@example.org")
    assert reports[-1][0] == "K"
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org")
    assert reports[-1][0] == "K"
    assert len(bounces.wait_sessions()) == 1 and bounces.sessions[0].commands[1].startswith(b"MAIL FROM:<> ")
    assert len(others.wait_sessions()) == 1 and others.sessions[0].commands[1].startswith(b"MAIL FROM:<a@src.example> ")


def test_authsenders_precedes_smtproutes_most_specific_sender_first(home, server):
    by_route, by_domain, by_address = server(), server(), server()
    home.route("example.org:127.0.0.1:%d" % by_route.port)
    home.control("authsenders", "@src.example:127.0.0.1;%d\nboss@src.example:127.0.0.1;%d\n"
                 % (by_domain.port, by_address.port))
    for sender in ("joe@src.example", "Boss@SRC.example", "joe@elsewhere.example"):
        reports, _ = home.remote("example.org", sender, "b@example.org")
        assert reports[-1][0] == "K"
    assert [len(s.sessions) for s in (by_route, by_domain, by_address)] == [1, 1, 1]


def test_domainips_source_and_helo(home, server):
    s = server()
    home.route("example.org:127.0.0.1:%d" % s.port)
    home.control("domainips", "src.example:127.0.0.7|mail.src.example\n*:127.0.0.8|\n")
    home.remote("example.org", "joe@src.example", "b@example.org")
    home.remote("example.org", "joe@other.example", "b@example.org")
    first, second = s.wait_sessions(2)
    assert first.peer[0] == "127.0.0.7" and first.commands[0] == b"EHLO mail.src.example"
    assert second.peer[0] == "127.0.0.8" and second.commands[0] == b"EHLO me.example"


def test_unparsable_lines_are_a_z_naming_file_and_line(home, server):
    s = server()
    home.route("example.org:127.0.0.1;%d|user" % s.port)
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org")
    assert reports[-1] == ("Z", b"Invalid control file control/smtproutes: line 1: a user without a password or "
                                b"file:PATH. (#4.3.0)\n")
    home.route("example.org:127.0.0.1:%d" % s.port)
    home.control("authsenders", "# s/qmail\n@src.example 127.0.0.1\n")
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org")
    assert reports[-1] == ("Z", b"Invalid control file control/authsenders: line 2: no ':' between sender and "
                                b"relay. (#4.3.0)\n")
    home.control("authsenders", "")
    home.control("domainips", "src.example:999.1.1.1|x\n")
    reports, _ = home.remote("example.org", "a@src.example", "b@example.org")
    assert reports[-1][1].startswith(b"Invalid control file control/domainips: line 1: localip must be an IP")
    assert s.sessions == []


def test_a_source_address_that_cannot_be_bound_names_where_it_was_given(home, server):
    s = server()
    home.route("example.org:127.0.0.1;%d|||192.0.2.55" % s.port)  # not an address of this machine
    reports, raw = home.remote("example.org", "joe@src.example", "b@example.org")
    assert reports[-1] == ("Z", b"Unable to bind the source address 192.0.2.55 named by its route (localip) or "
                                b"control/domainips: Cannot assign requested address. (#4.3.0)\n"), raw
    home.route("example.org:127.0.0.1;%d" % s.port)
    home.control("outgoingip", "192.0.2.56\n")
    reports, raw = home.remote("example.org", "joe@src.example", "b@example.org")
    assert reports[-1][1].startswith(b"Unable to bind the source address 192.0.2.56 named by control/outgoingip: ")
