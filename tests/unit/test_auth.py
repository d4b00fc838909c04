"""smtp/auth.py: each mechanism against its RFC's example, the choice, the Z texts."""

import binascii

import pytest

from qremote import failures
from qremote.smtp import auth, commands
from qremote.smtp.reply import Reply

IP = b"192.0.2.7"


def b64(text):
    return binascii.b2a_base64(text, newline=False)


def challenge(data):
    return Reply(334, b"334 " + b64(data) + b"\n")


def test_scram_sha_256_rfc7677_example():
    m = auth.ScramSHA256(b"user", b"pencil", nonce=b"rOprNGfwEbeRWgbNEkqO")
    assert binascii.a2b_base64(m.initial()) == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    final = binascii.a2b_base64(m.step(b64(first)))
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert not m.finished()
    assert m.step(b64(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")) == b""
    assert m.finished()


@pytest.mark.parametrize("key", [b"", b"k", b"x" * 64, b"y" * 65, bytes(range(256))])
@pytest.mark.parametrize("message", [b"", b"Client Key", b"m" * 1000])
def test_hmac_sha256_is_openssls(key, message):
    import _hashlib
    assert auth.hmac_sha256(key, message) == _hashlib.hmac_digest(key, message, "sha256")


def test_scram_derived_keys_are_rfc5802s():
    """RFC 7677's example: SaltedPassword by PBKDF2, then ClientKey and ServerKey."""
    import hashlib
    import hmac
    salt = binascii.a2b_base64(b"W22ZaJ0SNY7soEsUEjb6gQ==")
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    assert auth.derived_keys(b"user", b"pencil", salt, 4096) == (
        hmac.digest(salted, b"Client Key", "sha256"), hmac.digest(salted, b"Server Key", "sha256"))


def test_scram_uses_the_keys_it_is_given():
    """The keys() passed in (qmail-remote-io's cache) replace the derivation: given the right
    keys, RFC 7677's exchange comes out the same, and the secret is handed to keys() once."""
    salt = binascii.a2b_base64(b"W22ZaJ0SNY7soEsUEjb6gQ==")
    right = auth.derived_keys(b"user", b"pencil", salt, 4096)
    asked = []
    m = auth.ScramSHA256(b"user", b"pencil", nonce=b"rOprNGfwEbeRWgbNEkqO",
                         keys=lambda *args: asked.append(args) or right)
    final = binascii.a2b_base64(m.step(b64(FIRST)))
    assert final.endswith(b",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert asked == [(b"user", b"pencil", salt, 4096)]
    assert m.secret is None
    m.step(b64(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="))
    assert m.finished()


def scram_machine(secret=b"pencil"):
    machine = auth.Auth(IP, {"SCRAM-SHA-256"}, b"user", lambda: secret, tls=True)
    machine.start()
    machine.mechanism.nonce = b"rOprNGfwEbeRWgbNEkqO"
    machine.mechanism.first_bare = b"n=user,r=rOprNGfwEbeRWgbNEkqO"
    return machine


FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"


def test_scram_wrong_server_signature_is_cancelled_and_a_z():
    m = scram_machine()
    m.receive(challenge(FIRST))
    assert m.receive(challenge(b"v=" + b64(b"x" * 32))) == b"*\r\n"
    with pytest.raises(failures.AuthProtocol) as caught:
        m.receive(Reply(501, b"501 cancelled\n"))
    assert caught.value.letter == b"Z"
    assert b"AUTH SCRAM-SHA-256 exchange failed: the server's signature is wrong" in caught.value.text()


def test_scram_235_without_server_final_is_not_believed():
    m = scram_machine()
    m.receive(challenge(FIRST))
    with pytest.raises(failures.AuthProtocol):
        m.receive(Reply(235, b"235 ok\n"))


@pytest.mark.parametrize("first, why", [
    (b"r=someoneelse,s=AAAA,i=4096", b"nonce"),
    (FIRST.replace(b"i=4096", b"i=100"), b"iteration count 100"),
    (FIRST.replace(b"i=4096", b"i=99999999"), b"iteration count"),
    (b"r=rOprNGfwEbeRWgbNEkqOxx,i=4096", b"no salt"),
])
def test_scram_odd_server_first_cancels(first, why):
    m = scram_machine()
    assert m.receive(challenge(first)) == b"*\r\n"
    with pytest.raises(failures.AuthProtocol) as caught:
        m.receive(Reply(501, b"501 5.7.0 cancelled\n"))
    assert why in caught.value.text()


def test_cram_md5_rfc2195_example():
    m = auth.CramMD5(b"tim", b"tanstaaftanstaaf")
    out = m.step(b64(b"<1896.697170952@postoffice.reston.mci.net>"))
    assert binascii.a2b_base64(out) == b"tim b913a602c7eda7a495b4e6e7334d3890"


def test_plain_and_login_exchanges():
    m = auth.Auth(IP, {"PLAIN"}, b"alice", lambda: b"s3cret", tls=True)
    assert m.start() == b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n"
    m.receive(Reply(235, b"235 2.7.0 ok\n"))
    assert m.outcome == auth.AUTHENTICATED
    m = auth.Auth(IP, {"LOGIN"}, b"alice", lambda: b"s3cret", tls=True)
    assert m.start() == b"AUTH LOGIN\r\n"
    assert m.receive(challenge(b"Username:")) == b64(b"alice") + b"\r\n"
    assert m.receive(challenge(b"Password:")) == b64(b"s3cret") + b"\r\n"
    m.receive(Reply(235, b"235 ok\n"))
    assert m.outcome == auth.AUTHENTICATED


def test_multiline_334_is_joined():
    m = auth.Auth(IP, {"CRAM-MD5"}, b"tim", lambda: b"tanstaaftanstaaf", tls=False)
    m.start()
    data = b64(b"<1896.697170952@postoffice.reston.mci.net>")
    out = m.receive(Reply(334, b"334-" + data[:10] + b"\n334 " + data[10:] + b"\n"))
    assert binascii.a2b_base64(out) == b"tim b913a602c7eda7a495b4e6e7334d3890"


def test_xoauth2_error_challenge_gets_an_empty_line_then_z():
    m = auth.Auth(IP, {"XOAUTH2", "PLAIN"}, b"u@example.org", lambda: b"tok", tls=True, xoauth2=True)
    assert m.start() == b"AUTH XOAUTH2 " + b64(b"user=u@example.org\x01auth=Bearer tok\x01\x01") + b"\r\n"
    assert m.receive(challenge(b'{"status":"401"}')) == b"\r\n"
    with pytest.raises(failures.AuthRejected) as caught:
        m.receive(Reply(535, b"535 5.7.8 bad token\n"))
    assert caught.value.text() == (b"Connected to 192.0.2.7 but authentication was rejected (AUTH XOAUTH2).\n"
                                   b"Remote host said: 535 5.7.8 bad token\n")
    assert caught.value.letter == b"Z"  # a 5xx too: AUTH never bounces


def test_choice_strongest_first_and_tls_rule():
    every = {"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"}
    assert auth.choose(every, True, False, False) == ("SCRAM-SHA-256", None)
    assert auth.choose({"PLAIN", "LOGIN", "CRAM-MD5"}, True, False, False) == ("CRAM-MD5", None)
    assert auth.choose({"PLAIN", "LOGIN"}, True, False, False) == ("PLAIN", None)
    assert auth.choose({"PLAIN", "LOGIN"}, False, False, False) == (None, "PLAIN/LOGIN")
    assert auth.choose({"PLAIN", "LOGIN"}, False, True, False) == ("PLAIN", None)
    assert auth.choose({"PLAIN", "CRAM-MD5"}, False, False, False) == ("CRAM-MD5", None)
    assert auth.choose({"GSSAPI"}, True, False, False) == (None, None)
    assert auth.choose({"PLAIN"}, False, False, True) == (None, None)


def test_no_password_asked_without_tls():
    asked = []
    m = auth.Auth(IP, {"PLAIN"}, b"alice", lambda: asked.append(1) or b"x", tls=False)
    with pytest.raises(failures.AuthNeedsTLS) as caught:
        m.start()
    assert not asked
    assert b"will not send a password in cleartext" in caught.value.text()


def test_no_mechanism_goes_on_with_a_note():
    m = auth.Auth(IP, set(), b"alice", lambda: b"x", tls=True)
    assert m.start() == b"" and m.outcome == auth.SKIPPED and m.note == auth.NO_MECHANISM_NOTE


@pytest.mark.parametrize("code, row, words", [
    (432, "AuthTransition", b"password transition"), (454, "AuthTemporary", b"failed temporarily"),
    (534, "AuthTooWeak", b"too weak"), (538, "AuthNeedsEncryption", b"requires encryption"),
    (535, "AuthRejected", b"was rejected")])
def test_reply_codes_have_their_texts(code, row, words):
    m = auth.Auth(IP, {"PLAIN"}, b"alice", lambda: b"s3cret", tls=True)
    m.start()
    with pytest.raises(getattr(failures, row)) as caught:
        m.receive(Reply(code, b"%d no\n" % code))
    assert words in caught.value.text() and b"(AUTH PLAIN)" in caught.value.text()
    assert b"s3cret" not in caught.value.text() and caught.value.letter == b"Z"


def test_xtext():
    assert commands.xtext(b"a+b=c@example.org") == b"a+2Bb+3Dc@example.org"
    assert commands.xtext(b"") == b""


def test_mail_carries_auth_when_authenticated():
    assert commands.mail(b"a+b@x.org", auth=b"a+b@x.org") == b"MAIL FROM:<a+b@x.org> AUTH=<a+2Bb@x.org>\r\n"
    assert commands.mail(b"", auth=b"") == b"MAIL FROM:<> AUTH=<>\r\n"
