"""The HTTPS GET of https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 3.3).

Imported only on a cache miss: it is the one module of the package that loads ssl,
http.client and socket (about 25 ms of CPU together: doc/mta-sts.html).

- The host's addresses come from qremote's own resolver (A and AAAA, $DNSCACHEIP or
  /etc/resolv.conf, as a delivery's), never from getaddrinfo; they are tried in its order,
  the first that accepts the connection is used.
- TLS: certificate verified against the system trust store (OpenSSL's default paths),
  or, when control/mtastsanchors exists, against that PEM bundle alone (private CAs,
  tests); the name checked is mta-sts.<domain>, also sent as SNI.
- HTTP/1.1, no proxy, no cache, no redirect: only 200 is a policy (a 3xx is "redirect
  refused"); the media type must be text/plain (parameters ignored); the body is at
  most MAX_BODY (64 KiB) bytes, a longer one is refused, not cut.
- One deadline for everything (DNS, connect, handshake, request, headers, body): each
  socket operation gets the time left, and CPython's _ssl bounds a handshake or a read
  by its timeout as a whole, so a server sending a byte now and then cannot stretch it.
Every failure is raised as Failed with a short text for the trace.
"""

import http.client
import os
import socket
import ssl
import time

ANCHORS = "control/mtastsanchors"
PATH = "/.well-known/mta-sts.txt"
MAX_BODY = 65536
CONNECT_SHARE = 10.0  # at most this many seconds for one address, when several are left


class Failed(Exception):
    pass


class _Bounded(ssl.SSLSocket):
    """An SSLSocket whose every read ends by `deadline` (time.monotonic)."""

    deadline = None

    def _left(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.settimeout(left)

    def recv_into(self, buffer, nbytes=0, flags=0):
        self._left()
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, buflen=1024, flags=0):
        self._left()
        return super().recv(buflen, flags)

    def sendall(self, data, flags=0):
        self._left()
        return super().sendall(data, flags)


def context():
    """The TLS client context: verification and hostname check on."""
    try:
        if os.path.exists(ANCHORS):
            ctx = ssl.create_default_context(cafile=ANCHORS)
        else:
            ctx = ssl.create_default_context()
    except (OSError, ssl.SSLError) as error:
        raise Failed("trust anchors: %s" % (getattr(error, "strerror", None) or error)) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.sslsocket_class = _Bounded
    return ctx


def addresses(host, deadline):
    """[(family, ip)] of host, by qremote's resolver."""
    from .. import failures
    from ..resolver import relay_targets

    left = deadline - time.monotonic()
    try:
        targets = relay_targets(host.encode("ascii"), 443, max(1, int(left)))
    except failures.NullMX:
        raise Failed("DNS: no address") from None
    except Exception as error:  # noqa: BLE001 - every resolver failure is "no policy", never a crash
        kind = type(error).__name__
        raise Failed("DNS: %s" % ("no such host" if kind == "DnsHard" else "temporary failure"
                                  if kind == "DnsSoft" else kind)) from None
    return [(t.family, t.ip) for t in targets]


def connect(targets, deadline, port):
    """A connected socket to the first address that answers."""
    last = "no address"
    for index, (family, ip) in enumerate(targets):
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failed("timed out")
        if index < len(targets) - 1:
            left = min(left, CONNECT_SHARE)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(left)
            sock.connect((ip, port))
            return sock
        except OSError as error:
            sock.close()
            last = "connect to %s: %s" % (ip, "timed out" if isinstance(error, TimeoutError)
                                           else error.strerror or error)
    raise Failed(last)


def fetch(domain, timeout, port=443):
    """The policy body (bytes) of domain (str, ASCII, lowercase), within timeout seconds."""
    deadline = time.monotonic() + timeout
    host = "mta-sts." + domain
    ctx = context()
    sock = connect(addresses(host, deadline), deadline, port)
    try:
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            tls = ctx.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
            tls.deadline = deadline
            tls.do_handshake()
        except ssl.SSLCertVerificationError as error:
            raise Failed("certificate: %s" % (error.verify_message or error.reason)) from None
        except (ssl.SSLError, OSError) as error:
            raise Failed("TLS: %s" % _why(error)) from None
        sock = tls
        connection = http.client.HTTPSConnection(host, port, context=ctx)
        connection.sock = tls
        try:
            connection.request("GET", PATH, headers={"Connection": "close"})
            response = connection.getresponse()
            if 300 <= response.status < 400:
                raise Failed("HTTP %d: redirect refused" % response.status)
            if response.status != 200:
                raise Failed("HTTP %d" % response.status)
            media = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if media != "text/plain":
                raise Failed("Content-Type %s refused" % (media[:40] or "missing"))
            length = response.getheader("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) > MAX_BODY:
                raise Failed("policy larger than 64 KiB")
            body = b""
            while len(body) <= MAX_BODY:
                chunk = response.read(MAX_BODY + 1 - len(body))
                if not chunk:
                    break
                body += chunk
            if len(body) > MAX_BODY:
                raise Failed("policy larger than 64 KiB")
            return body
        except (http.client.HTTPException, OSError, ssl.SSLError) as error:
            raise Failed("HTTP: %s" % _why(error)) from None
    finally:
        sock.close()


def _why(error):
    if isinstance(error, TimeoutError) or "timed out" in str(error):
        return "timed out"
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__ if not str(error) else str(error)[:80]
