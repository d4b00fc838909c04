"""A scriptable SMTP server on loopback, for tests and the demo.

Each stage's reply is scripted: bytes (sent as they are), CLOSE (drop the
connection), STALL (say nothing until the client goes), or a callable
(session, argument line) -> one of those. Everything the client sends is kept per
session, byte for byte, with the messages as they arrived on the wire.
"""

import socket
import threading
import time

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
}


class Session:
    def __init__(self, peer):
        self.peer = peer
        self.received = bytearray()  # every byte the client sent
        self.commands = []           # command lines, without CRLF
        self.messages = []           # DATA contents in wire form, up to and excluding ".\r\n"
        self.batched = 0             # commands that arrived while an earlier one was unanswered
        self.closed_by_client = False
        self.done = threading.Event()


class SMTPServer:
    def __init__(self, host="127.0.0.1", port=0, **replies):
        self.replies = dict(DEFAULTS)
        self.replies.update(replies)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(64)
        self.host = host
        self.port = self.listener.getsockname()[1]
        self.sessions = []
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    # --- control ---
    def stop(self):
        self.stopping = True
        try:
            self.listener.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

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
        while not self.stopping:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
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

    def _serve(self, conn, session):
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
                    sent = self._reply(conn, session, stage, bytes(line))
                    if sent is None or stage == "quit":
                        return
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
            session.done.set()

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
