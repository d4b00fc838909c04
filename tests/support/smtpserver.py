"""A scriptable SMTP server on loopback, for tests and the demo.

Each stage's reply is scripted: bytes (sent as they are), CLOSE (drop the
connection), STALL (say nothing until the client goes), or a callable
(session, argument line) -> one of those. Everything the client sends is kept per
session, byte for byte, with the messages as they arrived on the wire.

STARTTLS (off unless tls_cert is given):
  tls_cert=(certfile, keyfile)  offer STARTTLS in the EHLO reply; a 2xx reply to
                                STARTTLS (default "220 ready") starts the handshake
  tls_client_ca=PATH            ask for a client certificate signed by this CA
  tls_require_client=True       ... and refuse the handshake without one
  tls_handshake=               "normal"; STALL (never answer the ClientHello);
                                CLOSE (close instead of the handshake)
  the "starttls" reply may carry extra bytes after the 220 line (injection tests);
  the "ehlo_tls" reply (default: the cleartext one without STARTTLS) answers EHLO
  inside TLS.
Per session: tls (True once the handshake is done), tls_version, sni (the name the
client sent, or None), client_cert (the verified peer certificate dict, or None),
tls_error (why a handshake failed), tls_at (len(commands) when TLS started).
"""

import ssl
import threading
import time

from tests.support.net import Stoppable, accept_each, close_quietly, listening

CLOSE = "close"
STALL = "stall"

DEFAULTS = {
    "greeting": b"220 sink.test ESMTP\r\n",
    "ehlo": b"250-sink.test\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
    "helo": b"250 sink.test\r\n",
    "mail": b"250 ok\r\n",
    "rcpt": b"250 ok\r\n",
    "data": b"354 go ahead\r\n",
    "final": b"250 ok queued\r\n",
    "quit": b"221 bye\r\n",
    "rset": b"250 ok\r\n",
    "noop": b"250 ok\r\n",
    "starttls": b"502 not here\r\n",
    "unknown": b"500 unrecognised\r\n",
    "stall": STALL,
}


class Session:
    def __init__(self, peer):
        self.peer = peer
        self.received = bytearray()  # every byte the client sent
        self.commands = []           # command lines, without CRLF
        self.messages = []           # DATA contents in wire form, up to and excluding ".\r\n"
        self.batched = 0             # commands that arrived while an earlier one was unanswered
        self.closed_by_client = False
        self.tls = False
        self.tls_version = None
        self.sni = None
        self.client_cert = None
        self.tls_error = None
        self.tls_at = None
        self.done = threading.Event()

    def after_tls(self):
        """The commands sent inside TLS."""
        return [] if self.tls_at is None else self.commands[self.tls_at:]


class SMTPServer(Stoppable):
    def __init__(self, host="127.0.0.1", port=0, tls_cert=None, tls_client_ca=None, tls_require_client=False,
                 tls_handshake="normal", **replies):
        self.replies = dict(DEFAULTS)
        self.context = None
        self.tls_handshake = tls_handshake
        if tls_cert is not None:
            self.context = self._server_context(tls_cert, tls_client_ca, tls_require_client)
            self.replies["ehlo_tls"] = self.replies["ehlo"]
            self.replies["ehlo"] = self.replies["ehlo"].replace(b"250 SMTPUTF8", b"250-SMTPUTF8\r\n250 STARTTLS")
            self.replies["starttls"] = b"220 ready to start TLS\r\n"
        self.replies.update(replies)
        self.listener = listening(host, port)
        self.host = host
        self.port = self.listener.getsockname()[1]
        self.sessions = []
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _server_context(self, cert, client_ca, require_client):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*cert)
        if client_ca:
            context.load_verify_locations(client_ca)
            context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL

        def remember_sni(sslsock, name, _context):
            sslsock.smtp_session.sni = name
        context.sni_callback = remember_sni
        return context

    # --- control ---
    def stop(self):
        self.stopping = True
        close_quietly(self.listener)

    def wait_sessions(self, count=1, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.sessions) >= count and all(s.done.is_set() for s in self.sessions[:count]):
                return self.sessions[:count]
            time.sleep(0.01)
        raise AssertionError("the server saw %d finished sessions, wanted %d" % (
            sum(s.done.is_set() for s in self.sessions), count))

    # --- the server ---
    def _accept(self):
        accept_each(self, self.listener, self._start_session)

    def _start_session(self, conn, peer):
        session = Session(peer)
        self.sessions.append(session)
        threading.Thread(target=self._serve, args=(conn, session), daemon=True).start()

    def _reply(self, conn, session, stage, argument=b""):
        """Send the scripted reply for stage: the bytes sent, or None when the session must end."""
        spec = self.replies[stage]
        if callable(spec):
            spec = spec(session, argument)
        if spec == CLOSE:
            return None
        if spec == STALL:
            conn.settimeout(None)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            return None
        conn.sendall(spec)
        return spec

    def _start_tls(self, conn, session):
        """The server side of the handshake after a 2xx to STARTTLS: the TLS socket, or None."""
        if self.tls_handshake == CLOSE:
            return None
        if self.tls_handshake == STALL:
            self._reply(conn, session, "stall")
            return None
        tls = self.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        tls.smtp_session = session  # for remember_sni, which runs inside the handshake
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError) as error:
            session.tls_error = str(error)
            tls.close()
            return None
        session.tls, session.tls_version = True, tls.version()
        session.client_cert = tls.getpeercert() or None
        session.tls_at = len(session.commands)
        return tls

    def _serve(self, conn, session):
        try:
            self._converse(conn, session)
        finally:
            session.done.set()

    def _converse(self, conn, session):
        buffer = bytearray()
        try:
            with conn:
                conn.settimeout(30)
                if self._reply(conn, session, "greeting") is None:
                    return
                while True:
                    line = self._line(conn, buffer, session)
                    if line is None:
                        session.closed_by_client = True
                        return
                    if buffer:
                        session.batched += 1
                    session.commands.append(bytes(line))
                    verb = bytes(line[:4]).upper()
                    stage = {b"EHLO": "ehlo", b"HELO": "helo", b"MAIL": "mail", b"RCPT": "rcpt",
                             b"DATA": "data", b"QUIT": "quit", b"RSET": "rset", b"NOOP": "noop",
                             b"STAR": "starttls"}.get(verb, "unknown")
                    if stage == "ehlo" and session.tls:
                        stage = "ehlo_tls"
                    sent = self._reply(conn, session, stage, bytes(line))
                    if sent is None or stage == "quit":
                        return
                    if stage == "starttls" and sent.startswith(b"2") and self.context and not session.tls:
                        tls = self._start_tls(conn, session)
                        if tls is None:
                            return
                        buffer.clear()  # anything sent before the handshake is not trusted (RFC 3207)
                        conn = tls
                        continue
                    if stage == "data" and sent.startswith(b"3"):
                        message = self._message(conn, buffer, session)
                        if message is None:
                            session.closed_by_client = True
                            return
                        session.messages.append(message)
                        if self._reply(conn, session, "final", message) is None:
                            return
        except OSError:
            pass
        finally:
            conn.close()

    def _fill(self, conn, buffer, session):
        data = conn.recv(65536)
        if not data:
            return False
        session.received += data
        buffer += data
        return True

    def _line(self, conn, buffer, session):
        while b"\n" not in buffer:
            if not self._fill(conn, buffer, session):
                return None
        end = buffer.index(b"\n")
        line = buffer[:end].rstrip(b"\r")
        del buffer[:end + 1]
        return line

    def _message(self, conn, buffer, session):
        """The DATA bytes up to the terminator line, as sent (still dot-stuffed)."""
        start = 0
        while True:
            if buffer.startswith(b".\r\n"):
                del buffer[:3]
                return b""
            end = buffer.find(b"\r\n.\r\n", max(0, start - 4))
            if end >= 0:
                message = bytes(buffer[:end + 2])
                del buffer[:end + 5]
                return message
            start = len(buffer)
            if not self._fill(conn, buffer, session):
                return None
