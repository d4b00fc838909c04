"""An implicit-TLS (SMTPS-style) loopback server for the tlsc-io tests.

TLSServer(certfile, keyfile, mode=..., **replies):
  mode "smtp"       handshake, then the scripted SMTP dialogue of SMTPServer (replies as there)
  mode "echo"       handshake, then echo every byte back until the client's EOF, then
                    send `trailer` and close (half-close tests); `handler` replaces echo
  mode "stall"      accept and never answer the ClientHello
  mode "close"      read the ClientHello, then close
  mode "garbage"    read the ClientHello, answer with bytes that are not TLS
Options: client_ca (a CA file: require a client certificate signed by it),
max_version ("TLSv1.2" to cap the protocol). Per session it records the SNI name
the client sent, the client certificate's subject (or None), the TLS version, every
byte received after the handshake, and the handshake error if there was one.
"""

import socket
import ssl
import threading

from tests.support.smtpserver import SMTPServer


class TLSServer(SMTPServer):
    def __init__(self, certfile, keyfile, mode="smtp", client_ca=None, max_version=None,
                 trailer=b"", handler=None, host="127.0.0.1", **replies):
        self.implicit_mode = mode
        self.trailer = trailer
        self.handler = handler
        self.implicit_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.implicit_context.load_cert_chain(certfile, keyfile)
        if client_ca:
            self.implicit_context.load_verify_locations(client_ca)
            self.implicit_context.verify_mode = ssl.CERT_REQUIRED
        if max_version:
            self.implicit_context.maximum_version = getattr(ssl.TLSVersion, max_version.replace(".", "_"))
        self.implicit_context.sni_callback = self._sni
        self._implicit_names = threading.local()
        self.implicit_held = []  # connections kept open by "stall"
        super().__init__(host=host, **replies)

    def _sni(self, sslobj, name, context):
        self._implicit_names.name = name

    def _serve(self, conn, session):
        session.sni = session.client_subject = session.version = session.error = None
        session.tls_received = bytearray()
        try:
            if self.implicit_mode == "stall":
                self.implicit_held.append(conn)
                session.done.set()
                return
            if self.implicit_mode in ("close", "garbage"):
                conn.settimeout(30)
                conn.recv(65536)
                if self.implicit_mode == "garbage":
                    conn.sendall(b"220 this is not TLS at all\r\n" * 20)
                conn.close()
                session.done.set()
                return
            conn.settimeout(30)
            try:
                tls = self.implicit_context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as error:
                session.error = error
                conn.close()
                session.done.set()
                return
            self._implicit_names.name, session.sni = None, getattr(self._implicit_names, "name", None)
            session.version = tls.version()
            peer = tls.getpeercert()
            if peer:
                session.client_subject = dict(item for rdn in peer["subject"] for item in rdn)
            if self.implicit_mode == "smtp":
                super()._serve(tls, session)
            else:
                self._echo(tls, session)
        except Exception as error:  # noqa: BLE001 - recorded for the test to see
            session.error = error
            session.done.set()

    def _echo(self, tls, session):
        try:
            with tls:
                if self.handler:
                    self.handler(tls, session)
                    return
                while True:
                    data = tls.recv(65536)
                    if not data:
                        break
                    session.tls_received += data
                    tls.sendall(data)
                if self.trailer:
                    tls.sendall(self.trailer)
                try:
                    tls.unwrap()
                except (ssl.SSLError, OSError):
                    pass
        except (ssl.SSLError, OSError) as error:
            session.error = error
        finally:
            session.done.set()

    def stop(self):
        super().stop()
        for conn in self.implicit_held:
            try:
                conn.close()
            except OSError:
                pass


def connect(port, host="127.0.0.1"):
    """A plain TCP connection to the server, for tlsc-io's fds 6 and 7."""
    return socket.create_connection((host, port), timeout=30)
