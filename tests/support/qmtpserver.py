"""Two QMTP servers on loopback, for the QMTP tests; neither shares a line with the
client's lib/qremote/qmtp.py.

ScriptedQMTP: takes one package per connection (it only skips netstrings by their
lengths, keeping the raw bytes) and answers with a script: bytes sent as they are,
CLOSE (drop the connection), STALL (say nothing until the client goes), or a callable
(session) -> one of those. For the hostile-server cases.

SpecQMTP: a second implementation of the server side, written from qmtp.txt alone:
a strict netstring reader (digits, no leading zero, ':' and ','), encodings #1 and #2
decoded, several packages per connection, one reply per recipient in order, and only
after the package's final byte. The recipient's local part decides the reply:
"reject..." D, "defer..." Z, anything else K. Messages are kept decoded when small,
and always counted and hashed (a 50 MB message is not kept).

Both do QMTPS when given tls_cert=(certfile, keyfile): TLS from the first byte.
"""

import hashlib
import ssl
import threading
import time

from tests.support.net import Stoppable, accept_each, close_quietly, listening

CLOSE = "close"
STALL = "stall"
KEEP = 1 << 20  # messages up to this size are kept whole


class Session:
    def __init__(self, peer):
        self.peer = peer
        self.raw = bytearray()     # ScriptedQMTP: the package as it came (its first MiB)
        self.recipients_field = None  # ScriptedQMTP: the third netstring's content
        self.size = 0              # bytes received
        self.packages = []         # SpecQMTP: (message, sender, recipients, length, sha256) per package
        self.error = None          # SpecQMTP: why the client's bytes were not QMTP
        self.closed_by_client = False
        self.tls = False
        self.done = threading.Event()


class _Server(Stoppable):
    def __init__(self, host="127.0.0.1", port=0, tls_cert=None):
        self.context = None
        if tls_cert is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(*tls_cert)
        self.listener = listening(host, port)
        self.host, self.port = host, self.listener.getsockname()[1]
        self.sessions = []
        self.stopping = False
        threading.Thread(target=accept_each, args=(self, self.listener, self._start), daemon=True).start()

    def stop(self):
        self.stopping = True
        close_quietly(self.listener)

    def wait_sessions(self, count=1, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.sessions) >= count and all(s.done.is_set() for s in self.sessions[:count]):
                return self.sessions[:count]
            time.sleep(0.01)
        raise AssertionError("%d sessions finished, wanted %d" % (sum(s.done.is_set() for s in self.sessions),
                                                                  count))

    def _start(self, conn, peer):
        session = Session(peer)
        self.sessions.append(session)
        threading.Thread(target=self._run, args=(conn, session), daemon=True).start()

    def _run(self, conn, session):
        try:
            conn.settimeout(60)
            if self.context is not None:
                try:
                    conn = self.context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as error:
                    session.error = "handshake: %s" % error
                    return
                session.tls = True
            self.serve(conn, session)
        except OSError:
            pass
        finally:
            close_quietly(conn)
            session.done.set()


class ScriptedQMTP(_Server):
    def __init__(self, reply=b"2:Ko,", **kw):
        self.reply = reply
        super().__init__(**kw)

    def serve(self, conn, session):
        reader = _Raw(conn, session)
        if not reader.skip_netstring() or not reader.skip_netstring():
            session.closed_by_client = True
            return
        session.recipients_field = reader.skip_netstring(keep=True)
        if session.recipients_field is None:
            session.closed_by_client = True
            return
        spec = self.reply(session) if callable(self.reply) else self.reply
        if spec == CLOSE:
            return
        if spec == STALL:
            conn.settimeout(None)
            while conn.recv(65536):
                pass
            return
        conn.sendall(spec)
        conn.settimeout(10)
        try:  # until the client closes: what it says after the replies is kept too
            while reader.fill():
                pass
        except OSError:
            pass


class _Raw:
    """Netstrings skipped by their lengths, nothing checked: the scripted server's reader."""

    def __init__(self, conn, session):
        self.conn, self.session, self.buffer = conn, session, b""

    def fill(self):
        data = self.conn.recv(1 << 18)
        self.session.size += len(data)
        if len(self.session.raw) < KEEP:
            self.session.raw += data
        self.buffer += data
        return bool(data)

    def skip_netstring(self, keep=False):
        """True (or its content, keep=True) once a netstring went by; None at the end."""
        while b":" not in self.buffer:
            if not self.fill():
                return None
        digits, _, self.buffer = self.buffer.partition(b":")
        left = int(digits) + 1  # and the ','
        kept = []
        while left:
            if not self.buffer and not self.fill():
                return None
            taken = min(left, len(self.buffer))
            if keep:
                kept.append(self.buffer[:taken])
            self.buffer, left = self.buffer[taken:], left - taken
        return b"".join(kept)[:-1] if keep else True


class SpecQMTP(_Server):
    def serve(self, conn, session):
        stream = conn.makefile("rb", buffering=1 << 16)
        while True:
            first = stream.read(1)
            if not first:  # the client closed between packages: allowed (section 8)
                session.closed_by_client = True
                return
            try:
                message, length, digest = self._message(stream, first)
                sender = self._netstring(stream, stream.read(1))
                recipients_field = self._netstring(stream, stream.read(1))
                recipients = self._split(recipients_field)
            except ValueError as error:
                session.error = str(error)
                return
            session.packages.append((message, sender, recipients, length, digest))
            answers = []
            for recipient in recipients:
                local = recipient.rpartition(b"@")[0]
                if local.startswith(b"reject"):
                    text = b"Dsorry, no mailbox here by that name. (#5.1.1)"
                elif local.startswith(b"defer"):
                    text = b"Zmailbox busy, try later. (#4.2.1)"
                else:
                    text = b"Kok %d qp %d" % (length, len(session.packages))
                answers.append(b"%d:%s," % (len(text), text))
            conn.sendall(b"".join(answers))

    @staticmethod
    def _length(stream, first):
        """[len] of a netstring whose first byte is first: ASCII digits, no extra zeros, then ':'."""
        digits = first
        while True:
            if not digits[-1:].isdigit():
                raise ValueError("netstring length: %r is not a digit" % digits[-1:])
            byte = stream.read(1)
            if byte == b":":
                break
            if not byte:
                raise ValueError("netstring length: the client closed")
            digits += byte
            if len(digits) > 12:
                raise ValueError("netstring length: too many digits")
        if len(digits) > 1 and digits.startswith(b"0"):
            raise ValueError("netstring length: leading zero")
        return int(digits)

    def _netstring(self, stream, first):
        length = self._length(stream, first)
        data = stream.read(length)
        if len(data) != length:
            raise ValueError("netstring: the client closed inside it")
        if stream.read(1) != b",":
            raise ValueError("netstring: no ','")
        return data

    def _message(self, stream, first):
        """(decoded message or None when large, its decoded length, sha256 hex), read in pieces."""
        length = self._length(stream, first)
        if length < 1:
            raise ValueError("message: empty encoding (no <0d> or <0a>)")
        mark = stream.read(1)
        if mark not in (b"\r", b"\n"):
            raise ValueError("message: the encoding starts with %r" % mark)
        digest, kept, left, size = hashlib.sha256(), [], length - 1, 0
        carry = b""
        while left:
            piece = stream.read(min(left, 1 << 18))
            if not piece:
                raise ValueError("message: the client closed inside it")
            left -= len(piece)
            if mark == b"\r":  # encoding #1: CRLF between lines -> LF
                piece = carry + piece
                carry = b"\r" if piece.endswith(b"\r") and left else b""
                piece = (piece[:-1] if carry else piece).replace(b"\r\n", b"\n")
            digest.update(piece)
            size += len(piece)
            if size <= KEEP:
                kept.append(piece)
        if stream.read(1) != b",":
            raise ValueError("message: no ','")
        return (b"".join(kept) if size <= KEEP else None), size, digest.hexdigest()

    def _split(self, field):
        """The recipient netstrings inside the third netstring; at least one (section 4)."""
        import io
        stream = io.BytesIO(field)
        out = []
        while True:
            first = stream.read(1)
            if not first:
                break
            out.append(self._netstring(stream, first))
        if not out:
            raise ValueError("no recipient")
        return out
