"""Loopback networking shared by the test servers and the chain tests: listening
sockets, stopping them, the accept loop, black holes, refusing ports, and the marks
for tests that need root or ::1."""

import contextlib
import os
import socket

try:
    import pytest
except ImportError:  # package/demo runs the servers without pytest; the test pieces need it
    pytest = None


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def ipv6_loopback():
    """Whether ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


if pytest is not None:
    needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="MX targets are reached on port 25: needs root")
    needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no ::1 here")


def listening(host, port=0, backlog=64):
    """A TCP listener on host:port (0: a free port), SO_REUSEADDR set."""
    sock = socket.socket(family_of(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def close_quietly(*socks):
    """Close each socket (None skipped), shutting it down first: a close alone leaves a
    listener listening while another thread blocks in its accept()."""
    for sock in socks:
        if sock is None:
            continue
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass


def accept_each(server, listener, handle):
    """Accept connections until server.stopping or the listener is closed: handle(conn, peer)
    for each. The body of a server's accept thread."""
    while not server.stopping:
        try:
            conn, peer = listener.accept()
        except OSError:
            return
        handle(conn, peer)


class Stoppable:
    """`with server:` stops it at the end."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def refusing_port(host="127.0.0.1"):
    """The port of a socket bound but never listening, while it stays bound: connecting is refused."""
    sock = socket.socket(family_of(host), socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


class BlackHole:
    """host:port where connect() never completes: a listen(0) listener with one connection it
    never accepts has a full accept queue, so Linux drops further SYNs and connect() waits
    until its deadline (skips the test when the port cannot be bound or the kernel disagrees)."""

    def __init__(self, host="127.0.0.1", port=0):
        try:
            self.listener = listening(host, port, backlog=0)
        except OSError as error:
            pytest.skip("cannot bind %s:%d: %s" % (host, port, error))
        self.host, self.port = host, self.listener.getsockname()[1]
        self.filler = socket.create_connection((host, self.port), timeout=10)  # fills the queue
        probe = socket.socket(family_of(host), socket.SOCK_STREAM)
        probe.settimeout(1.5)
        try:
            probe.connect((host, self.port))
        except socket.timeout:
            return
        except OSError as error:
            self.close()
            pytest.skip("no black hole on a full accept queue here: %s" % error)
        finally:
            probe.close()
        self.close()
        pytest.skip("this kernel accepts beyond a full listen(0) queue")

    def close(self):
        self.filler.close()
        self.listener.close()


@contextlib.contextmanager
def closed_after(build):
    """make(*args) -> build(*args), each one closed on leaving: the body of a factory fixture."""
    made = []

    def make(*args, **kwargs):
        made.append(build(*args, **kwargs))
        return made[-1]
    try:
        yield make
    finally:
        for one in made:
            one.close()


if pytest is not None:
    @pytest.fixture
    def blackhole():
        """make(host="127.0.0.1", port=0) -> a BlackHole, closed after the test."""
        with closed_after(BlackHole) as make:
            yield make
