"""An HTTPS server on loopback serving MTA-STS policies, for the mtasts tests.

    server = STSServer(certfile, keyfile)          # 127.0.0.1, a free port
    server.policy = b"version: STSv1\\n..."          # what GET /.well-known/mta-sts.txt returns
    server.status, server.headers = 200, {"Content-Type": "text/plain"}
    server.delay = 0.5          # seconds before answering (concurrency tests)
    server.trickle = 0.3        # send the body one byte per that many seconds (slow server)
    server.mode = "http"        # or "stall": accept and never answer the ClientHello
    server.requests             # [(method, path, Host header, SNI)], one per request

Built on ssl + raw sockets (not http.server) so that every misbehaviour is scriptable.
"""

import socket
import ssl
import threading
import time

from tests.support.net import Stoppable, accept_each, close_quietly, listening


class STSServer(Stoppable):
    def __init__(self, certfile, keyfile, host="127.0.0.1", port=0):
        self.policy = b""
        self.status = 200
        self.headers = {"Content-Type": "text/plain"}
        self.delay = 0.0
        self.trickle = 0.0
        self.mode = "http"
        self.requests = []
        self.lock = threading.Lock()
        self.held = []
        self.stopping = False
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
        self.context.sni_callback = self._sni
        self._names = threading.local()
        self.listener = listening(host, port)
        self.host, self.port = host, self.listener.getsockname()[1]
        self.thread = threading.Thread(target=accept_each, args=(self, self.listener, self._serve), daemon=True)
        self.thread.start()

    def _sni(self, sslobj, name, context):
        self._names.name = name

    def count(self):
        with self.lock:
            return len(self.requests)

    def stop(self):
        self.stopping = True
        close_quietly(self.listener, *self.held)

    def _serve(self, conn, peer):
        threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        if self.mode == "stall":
            self.held.append(conn)
            return
        try:
            conn.settimeout(10)
            tls = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            close_quietly(conn)
            return
        try:
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = tls.recv(4096)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n")[0].split(b"\r\n")
            method, path = head[0].split(b" ")[:2]
            host = next((line.split(b":", 1)[1].strip() for line in head[1:]
                         if line.lower().startswith(b"host:")), None)
            with self.lock:
                self.requests.append((method.decode(), path.decode(), host and host.decode(),
                                      getattr(self._names, "name", None)))
            if self.delay:
                time.sleep(self.delay)
            body = self.policy
            lines = ["HTTP/1.1 %d Whatever" % self.status]
            lines += ["%s: %s" % item for item in self.headers.items()]
            if not any(name.lower() == "content-length" for name in self.headers):
                lines.append("Content-Length: %d" % len(body))
            lines.append("Connection: close")
            tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            if self.trickle:
                for index in range(len(body)):
                    if self.stopping:
                        return
                    tls.sendall(body[index:index + 1])
                    time.sleep(self.trickle)
            else:
                tls.sendall(body)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            close_quietly(tls)
