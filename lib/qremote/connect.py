"""Connecting: deadline-bounded non-blocking connects, raced the Happy Eyeballs way.

race() tries the addresses of one MX in the order given (families interleaved by
the caller, RFC 8305 section 4): it starts the first, and whenever STAGGER seconds
pass with no connection, or an attempt fails, starts the next one beside those
still pending. The first to connect wins; the others are closed. Each attempt has
its own timeoutconnect. Every attempt's outcome is passed to on_result(target,
error, timed_out) (tcpto bookkeeping), except those abandoned because another won.

sources (control/outgoingip, read by control.py): {family: local address} to bind
before connecting; a family not in it lets the kernel choose. An address that
cannot be bound (not on this machine) is the admin's mistake, not the server's:
it raises failures.SourceUnusable (Z naming the file) and never touches tcpto.
"""

import _socket
import errno
import select
import time

from . import failures

STAGGER = 0.25  # RFC 8305's recommended Connection Attempt Delay


def _start(target, source):
    """(socket, connect_ex's errno) of a new attempt, or (None, errno) when none could start."""
    try:
        sock = _socket.socket(target.family, _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC)
    except OSError as error:
        return None, error.errno or errno.EIO
    if source is not None:
        try:
            sock.bind(source if isinstance(source, tuple) else (source, 0))  # a tuple: IPv6 with its scope
        except OSError as error:
            sock.close()
            raise failures.SourceUnusable(source[0] if isinstance(source, tuple) else source,
                                          error.strerror or "bind failed", "control/outgoingip") from None
    try:
        return sock, sock.connect_ex((target.ip, target.port))
    except OSError as error:
        sock.close()
        return None, error.errno or errno.EIO


def race(targets, timeout, on_result, sources=None, stagger=STAGGER):
    """(sock, target) of the first connection among targets, or (None, None)."""
    sources = sources or {}
    poller = select.poll()
    pending = {}  # fd -> (sock, target, deadline)
    queue = list(targets)
    next_start = time.monotonic()
    try:
        while queue or pending:
            now = time.monotonic()
            if queue and (not pending or now >= next_start):
                target = queue.pop(0)
                sock, err = _start(target, sources.get(target.family))
                if err == 0:
                    on_result(target, 0, False)
                    return sock, target
                if err == errno.EINPROGRESS:
                    pending[sock.fileno()] = (sock, target, now + timeout)
                    poller.register(sock.fileno(), select.POLLOUT)
                    next_start = now + stagger
                else:
                    if sock is not None:
                        sock.close()
                    on_result(target, err, False)
                    next_start = now  # a failure starts the next attempt at once
                continue
            wake = min(d for _, _, d in pending.values())
            if queue:
                wake = min(wake, next_start)
            for fd, _ in poller.poll(max(0.0, wake - now) * 1000.0):
                sock, target, _ = pending.pop(fd)
                poller.unregister(fd)
                err = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
                if err == 0:
                    on_result(target, 0, False)
                    return sock, target
                sock.close()
                on_result(target, err, False)
                next_start = time.monotonic()  # a failure starts the next attempt at once
            now = time.monotonic()
            for fd, (sock, target, deadline) in list(pending.items()):
                if deadline <= now:
                    del pending[fd]
                    poller.unregister(fd)
                    sock.close()
                    on_result(target, errno.ETIMEDOUT, True)
                    next_start = now
        return None, None
    finally:
        for sock, _, _ in pending.values():
            sock.close()


def interleave(targets):
    """RFC 8305 order for one MX: alternate families, starting with the first one's."""
    if not targets:
        return []
    first = [t for t in targets if t.family == targets[0].family]
    other = [t for t in targets if t.family != targets[0].family]
    mixed = []
    for i in range(max(len(first), len(other))):
        mixed.extend(first[i:i + 1])
        mixed.extend(other[i:i + 1])
    return mixed
