def test_two_recipients_one_rejected(home, server):
    s = server(rcpt=lambda session, line: b"550 5.1.1 <bad@example.org>: no such user\r\n"
               if b"bad@" in line else b"250 ok\r\n", final=b"250 2.0.0 ok queued as 42\r\n")
    home.route("example.org:127.0.0.1:%d" % s.port)
    reports, raw = home.remote("example.org", "sender@src.example", "good@example.org", "bad@example.org",
                               message=b"Subject: test\n\nhello\n.leading dot\n")
    assert raw == (b"r\0h127.0.0.1 does not like recipient.\nRemote host said: 550 5.1.1 <bad@example.org>: "
                   b"no such user\n\0K127.0.0.1 accepted message.\nRemote host said: 250 2.0.0 ok queued as 42\n\0")
    session, = s.wait_sessions(1)
    assert session.messages == [b"Subject: test\r\n\r\nhello\r\n..leading dot\r\n"]
