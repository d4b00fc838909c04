"""Sans-IO SMTP AUTH (RFC 4954): replies in, commands out; each mechanism a small object.

qmail-remote-io runs it after EHLO (inside TLS when there is TLS) and before MAIL.

The choice (doc/auth.html): the strongest mechanism both sides offer, in this order:
  SCRAM-SHA-256  RFC 7677: the password never leaves this host, and the server proves
                 it knows it (its signature is checked: no 235 is believed without it)
  CRAM-MD5       the password never leaves this host (s/qmail's first choice)
  PLAIN          the password itself: only inside TLS
  LOGIN          the password itself, two round trips: only inside TLS
XOAUTH2 is used only when the route says the secret is a bearer token (`xoauth2`
option), and only inside TLS. A route's `cleartext` option lets PLAIN, LOGIN and
XOAUTH2 go without TLS.

Rules:
1. The secret is asked for (get_secret()) only once the mechanism is chosen, just
   before the AUTH command; it never appears in an outcome or an exception text.
2. Every rejection is a Z (a broken AUTH set-up must not bounce the queue), its text
   naming the mechanism; 432, 454, 534 and 538 have their own texts.
3. A 334 a mechanism does not expect is answered "*" (cancel, RFC 4954 section 4);
   the server's answer to that ends the exchange as a protocol failure.
4. A server that offers no mechanism we can use: outcome SKIPPED, the delivery goes on
   without AUTH and the K says so (s/qmail's "no supported AUTH method found").

SCRAM computes PBKDF2 with OpenSSL's _hashlib (loading libcrypto costs about 4.5 ms of
CPU), without hashlib and hmac above it, but only when its keys are not cached
(scramcache.py, doc/auth.html): the rest of SCRAM uses Python's built-in SHA-256, and
CRAM-MD5 the built-in _md5. A delivery without AUTH never imports this module at all.
"""

import binascii

from .. import failures

AUTHENTICATED, SKIPPED = "AUTHENTICATED", "SKIPPED"
ORDER = ("SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN")
NEEDS_TLS = frozenset(("PLAIN", "LOGIN", "XOAUTH2"))
MIN_ITERATIONS, MAX_ITERATIONS = 4096, 1000000  # RFC 7677's floor; the ceiling bounds our CPU
NO_MECHANISM_NOTE = b"no supported AUTH method found, continuing without authentication"
CANCEL = b"*\r\n"


class Malformed(ValueError):
    """The server's side of an exchange makes no sense (the text says why, no secret in it)."""


def b64(data):
    return binascii.b2a_base64(data, newline=False)


def unb64(text):
    try:
        return binascii.a2b_base64(text.strip())
    except binascii.Error:
        raise Malformed("a challenge that is not base64") from None


def choose(offered, tls, cleartext_ok, xoauth2):
    """(mechanism, None) to use; (None, why) when the only ones offered need TLS;
    (None, None) when none offered is one we can use."""
    if xoauth2:
        candidates = ("XOAUTH2",)
    else:
        candidates = ORDER
    usable = [m for m in candidates if m in offered]
    if not usable:
        return None, None
    for mechanism in usable:
        if tls or cleartext_ok or mechanism not in NEEDS_TLS:
            return mechanism, None
    return None, "/".join(usable)


# --- the mechanisms: initial response, then one response per 334 challenge ---

class Plain:
    name = "PLAIN"

    def __init__(self, user, secret):
        self.user, self.secret = user, secret

    def initial(self):
        return b64(b"\0" + self.user + b"\0" + self.secret)

    def step(self, challenge):
        raise Malformed("a challenge after PLAIN's initial response")

    def finished(self):
        return True


class Login:
    name = "LOGIN"

    def __init__(self, user, secret):
        self.answers = [user, secret]  # the prompts (Username:, Password:) vary: order counts

    def initial(self):
        return None

    def step(self, challenge):
        if not self.answers:
            raise Malformed("a third LOGIN challenge")
        return b64(self.answers.pop(0))

    def finished(self):
        return not self.answers


class CramMD5:
    name = "CRAM-MD5"

    def __init__(self, user, secret):
        self.user, self.secret, self.done = user, secret, False

    def initial(self):
        return None

    def step(self, challenge):
        if self.done:
            raise Malformed("a second CRAM-MD5 challenge")
        self.done = True
        return b64(self.user + b" " + hmac_md5(self.secret, unb64(challenge)))

    def finished(self):
        return self.done


def hmac_md5(key, message):
    """RFC 2104 HMAC-MD5, hex (RFC 2195), with the built-in _md5: importing hashlib and hmac
    loads OpenSSL's libcrypto, about 6 ms of CPU in qmail-remote-io."""
    try:
        from _md5 import md5
    except ImportError:  # a Python built without it
        import hmac
        return hmac.new(key, message, "md5").hexdigest().encode()
    if len(key) > 64:
        key = md5(key).digest()
    key = key.ljust(64, b"\0")
    inner = md5(bytes(k ^ 0x36 for k in key) + message).digest()
    return md5(bytes(k ^ 0x5C for k in key) + inner).hexdigest().encode()


class XOAuth2:
    """A bearer token; a failing server sends a 334 with a JSON error, answered by an
    empty line, then its 5xx (Google's and Microsoft's documented exchange)."""
    name = "XOAUTH2"

    def __init__(self, user, token):
        self.user, self.token, self.error = user, token, False

    def initial(self):
        return b64(b"user=" + self.user + b"\x01auth=Bearer " + self.token + b"\x01\x01")

    def step(self, challenge):
        if self.error:
            raise Malformed("a second XOAUTH2 challenge")
        self.error = True
        return b""

    def finished(self):
        return True


def saslname(user):
    return user.replace(b"=", b"=3D").replace(b",", b"=2C")


class ScramSHA256:
    """RFC 5802 with SHA-256 (RFC 7677), no channel binding ("n,,").

    keys(user, secret, salt, count) -> (ClientKey, ServerKey): the costly part (PBKDF2);
    by default derived here (salted_keys), qmail-remote-io passes a cached one (scramcache.py)."""
    name = "SCRAM-SHA-256"

    def __init__(self, user, secret, nonce=None, keys=None):
        self.user, self.secret, self.keys = user, secret, keys or derived_keys
        if nonce is None:
            from posix import urandom  # not os.py: about 2 ms of CPU

            nonce = b64(urandom(18))
        self.nonce = nonce
        self.first_bare = b"n=" + saslname(user) + b",r=" + nonce
        self.server_signature = None
        self.verified = False

    def initial(self):
        return b64(b"n,," + self.first_bare)

    def step(self, challenge):
        message = unb64(challenge)
        if self.server_signature is None:
            return b64(self._client_final(message))
        if self.verified:
            raise Malformed("a challenge after SCRAM's server-final message")
        self._verify(message)
        return b""

    def finished(self):
        return self.verified

    def _client_final(self, server_first):
        fields = dict(item.split(b"=", 1) for item in server_first.split(b",") if b"=" in item)
        nonce, salt, iterations = fields.get(b"r", b""), fields.get(b"s"), fields.get(b"i", b"")
        if b"m" in fields:
            raise Malformed("a SCRAM extension we do not know (m=)")
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise Malformed("the server's nonce does not extend ours")
        if salt is None or not iterations.isdigit():
            raise Malformed("no salt or iteration count")
        count = int(iterations[:9])
        if not MIN_ITERATIONS <= count <= MAX_ITERATIONS:
            raise Malformed("iteration count %d outside %d..%d" % (count, MIN_ITERATIONS, MAX_ITERATIONS))
        client_key, server_key = self.keys(self.user, self.secret, unb64(salt), count)
        self.secret = None
        sha256 = sha256_constructor()
        without_proof = b"c=biws,r=" + nonce
        auth_message = self.first_bare + b"," + server_first + b"," + without_proof
        signature = hmac_sha256(sha256(client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.server_signature = hmac_sha256(server_key, auth_message)
        return without_proof + b",p=" + b64(proof)

    def _verify(self, server_final):
        from _operator import _compare_digest

        if server_final.startswith(b"e="):
            raise Malformed("the server said %s" % server_final[2:80].decode("ascii", "replace"))
        if not server_final.startswith(b"v=") or not _compare_digest(unb64(server_final[2:].split(b",")[0]),
                                                                         self.server_signature):
            raise Malformed("the server's signature is wrong: it does not know the password")
        self.verified = True


def derived_keys(user, secret, salt, count):
    """(ClientKey, ServerKey) of RFC 5802, from SaltedPassword = PBKDF2(secret, salt, count):
    OpenSSL's _hashlib directly (hashlib on top of it costs another 1.5 ms of CPU). The
    only place SCRAM loads _hashlib: scramcache.py keeps the result."""
    try:
        from _hashlib import pbkdf2_hmac
    except ImportError:  # a Python built without OpenSSL
        from hashlib import pbkdf2_hmac
    salted = pbkdf2_hmac("sha256", secret, salt, count)
    return hmac_sha256(salted, b"Client Key"), hmac_sha256(salted, b"Server Key")


def sha256_constructor():
    """SHA-256 from Python's own C module (_sha256 in 3.11, _sha2 from 3.12): loading it costs
    about 0.5 ms of CPU, OpenSSL's _hashlib about 4.5 ms."""
    try:
        from _sha2 import sha256
    except ImportError:
        try:
            from _sha256 import sha256
        except ImportError:  # a Python built without them
            from _hashlib import openssl_sha256 as sha256
    return sha256


def hmac_sha256(key, message):
    """RFC 2104 HMAC-SHA-256 over sha256_constructor() (hmac.py would load _hashlib)."""
    sha256 = sha256_constructor()
    if len(key) > 64:
        key = sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = sha256(bytes(k ^ 0x36 for k in key) + message).digest()
    return sha256(bytes(k ^ 0x5C for k in key) + inner).digest()


MECHANISMS = {m.name: m for m in (Plain, Login, CramMD5, XOAuth2, ScramSHA256)}


class Auth:
    """The exchange, driven by wire.converse() like the opening.

    offered: the mechanisms the EHLO named; get_secret(): the password or token (bytes),
    read when called; tls: this connection is inside TLS."""

    checks_surplus = False

    def __init__(self, ip, offered, user, get_secret, tls, cleartext_ok=False, xoauth2=False, scram_keys=None):
        self.ip, self.offered, self.user, self.get_secret = ip, offered, user, get_secret
        self.scram_keys = scram_keys  # ScramSHA256's keys(): where its costly part may be cached
        self.tls, self.cleartext_ok, self.xoauth2 = tls, cleartext_ok, xoauth2
        self.outcome = None
        self.mechanism = None
        self.note = b""
        self._cancelled = False

    def start(self):
        name, needs_tls = choose(self.offered, self.tls, self.cleartext_ok, self.xoauth2)
        if needs_tls is not None:
            raise failures.AuthNeedsTLS(self.ip, needs_tls)
        if name is None:
            if self.xoauth2:  # a token route to a server without XOAUTH2: no silent downgrade
                raise failures.AuthNoMechanism(self.ip, "XOAUTH2", "/".join(sorted(self.offered)) or "none")
            self.outcome, self.note = SKIPPED, NO_MECHANISM_NOTE
            return b""
        if name == ScramSHA256.name:
            self.mechanism = ScramSHA256(self.user, self.get_secret(), keys=self.scram_keys)
        else:
            self.mechanism = MECHANISMS[name](self.user, self.get_secret())
        initial = self.mechanism.initial()
        command = b"AUTH " + name.encode()
        if initial is not None:
            command += b" " + (initial or b"=")
        return command + b"\r\n"

    def receive(self, reply, surplus=False):
        name = self.mechanism.name
        code = reply.code
        if self._cancelled:
            raise failures.AuthProtocol(self.ip, name, self._cancelled, reply)
        if code == 334:
            # a challenge is one line (RFC 4954); a multi-line one is taken as its lines joined
            challenge = b"".join(line[4:].strip() for line in reply.lines())
            try:
                return self.mechanism.step(challenge) + b"\r\n"
            except Malformed as error:
                self._cancelled = str(error)
                return CANCEL
        if code == 235:
            if not self.mechanism.finished():
                raise failures.AuthProtocol(self.ip, name, "235 before the exchange was complete", reply)
            self.outcome = AUTHENTICATED
            return b""
        raise failure_for(self.ip, name, reply)


def failure_for(ip, mechanism, reply):
    row = {432: failures.AuthTransition, 454: failures.AuthTemporary, 534: failures.AuthTooWeak,
           538: failures.AuthNeedsEncryption}.get(reply.code, failures.AuthRejected)
    return row(ip, mechanism, reply)
