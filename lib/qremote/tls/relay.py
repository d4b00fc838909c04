"""The TLS handshake and the relay, over raw fds, with the SSL object on memory BIOs.

Memory BIOs rather than an SSL socket: the connection may be two fds (6 to read,
7 to write), and the BIOs let us decide exactly when bytes enter OpenSSL, which the
half-close needs. OpenSSL's shutdown, asked for close_notify while a record waits
unread in the incoming BIO, fails the whole connection ("application data after close
notify"). So the relay hands OpenSSL whole records only (it reads the 5-byte record
headers), and produces close_notify at a moment when every record given has been read.

Relay rules:
1. One poll() per round, no busy loop: an fd is polled only for what can make progress,
   and each poll event leads to a read or a write that moves bytes or ends a side.
2. Memory is bounded whatever the traffic: each of the four queues (cleartext waiting
   for the TLS engine, records for the network, records not yet decrypted, cleartext
   for PROG) holds at most about LIMIT bytes (network bytes: LIMIT plus one record);
   a side is not read while the queue it feeds is full. LIMIT is large (512 KiB, more
   than a socketpair buffer holds) so that a 50 MB message takes ~300 rounds, not ~1800:
   measured (tests/bench/bench_tls.py), a third less relay CPU than with 64 KiB.
3. EOF travels both ways: cleartext EOF -> close_notify, then shutdown(SHUT_WR) on the
   network; TLS EOF (close_notify or a bare TCP EOF) -> shutdown(SHUT_WR) on the cleartext
   socket, once every decrypted byte is written.
4. The relay ends when both directions are done, after `silence` seconds with no byte
   moving, or, once PROG has closed its end (POLLHUP), one second after the last byte
   moved (the rest of PROG's output and the close_notify get that long to leave).
"""

# the C functions os re-exports, without os.py: it costs ~1 ms of CPU at every start
# (_collections_abc, posixpath, stat); a program that never imports os saves it
import posix as os
import select
import time
from _socket import SHUT_WR, socket as raw_socket

import _ssl

from .context import TLSFailure, failure_from

LIMIT = 512 * 1024
AFTER_HANGUP = 1.0

_IN, _OUT = select.POLLIN, select.POLLOUT
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
_WANT = _ssl.SSLWantReadError
_NO_CONNECTION_ERRNOS = frozenset((9, 88))  # EBADF, ENOTSOCK: the fds hold no connection


def _whole_records(data, most=None):
    """The length of the longest run of whole TLS records at the start of data
    (up to `most` bytes when the first record alone is not longer)."""
    end, size = 0, len(data)
    while end + 5 <= size:
        record = end + 5 + (data[end + 3] << 8 | data[end + 4])
        if record > size or (most is not None and end and record > most):
            break
        end = record
    return end


def _shutdown_write(fd):
    """Half-close fd: shutdown(SHUT_WR) on a socket, close() on anything else."""
    try:
        sock = raw_socket(fileno=fd)
    except OSError:
        os.close(fd)
        return
    try:
        sock.shutdown(SHUT_WR)
    except OSError:
        pass
    finally:
        sock.detach()


class TLSConnection:
    """The SSL object and the network fds it speaks through."""

    def __init__(self, context, name, fdr, fdw):
        self.incoming = _ssl.MemoryBIO()
        self.outgoing = _ssl.MemoryBIO()
        self.sslobj = context._wrap_bio(self.incoming, self.outgoing, False, name)
        self.fdr, self.fdw = fdr, fdw
        self.timeout = 0

    # --- the handshake: blocking in effect, bounded by one deadline ---

    def handshake(self, timeout):
        """Complete the handshake within timeout seconds (0: no bound), or raise TLSFailure."""
        deadline = time.monotonic() + timeout if timeout else None
        self.timeout = timeout
        try:
            os.set_blocking(self.fdr, False)
            os.set_blocking(self.fdw, False)
        except OSError as error:
            raise self._io_failure(error) from None
        while True:
            try:
                self.sslobj.do_handshake()
                done = True
            except _WANT:
                done = False
            except _ssl.SSLError as error:
                self._flush_best_effort()  # the alert tells the server why
                raise failure_from(error) from None
            self._flush(deadline)
            if done:
                return
            if self.incoming.eof:  # OpenSSL wants more after the EOF it was given
                raise TLSFailure("closed", "the server closed the connection during the handshake")
            self._wait(self.fdr, _IN, deadline)
            try:
                data = os.read(self.fdr, LIMIT)
            except BlockingIOError:
                continue
            except OSError as error:
                raise self._io_failure(error) from None
            if data:
                self.incoming.write(data)
            else:
                self.incoming.write_eof()

    def _flush(self, deadline):
        while self.outgoing.pending:
            data = self.outgoing.read(LIMIT)
            while data:
                self._wait(self.fdw, _OUT, deadline)
                try:
                    data = data[os.write(self.fdw, data):]
                except BlockingIOError:
                    pass
                except OSError as error:
                    raise self._io_failure(error) from None

    def _flush_best_effort(self):
        try:
            os.write(self.fdw, self.outgoing.read(LIMIT))
        except OSError:
            pass

    def _wait(self, fd, event, deadline):
        poller = select.poll()
        poller.register(fd, event)
        while True:
            if deadline is None:
                wait = None
            else:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise TLSFailure("timeout", "the handshake did not finish within %d seconds" % self.timeout)
                wait = int(wait * 1000) + 1
            if poller.poll(wait):
                return

    def _io_failure(self, error):
        if error.errno in _NO_CONNECTION_ERRNOS:  # nothing usable was handed to us on the fds
            return TLSFailure("local", "no usable connection on fds %d and %d: %s"
                              % (self.fdr, self.fdw, error.strerror))
        # anything else (reset, unreachable from an ICMP error, ...) is this server's connection
        return TLSFailure("closed", "the connection failed during the handshake: %s" % error.strerror)

    # --- the relay ---

    def relay(self, clear, silence):
        """Move bytes between this connection and the cleartext socket fd `clear` until done."""
        Relay(self, clear, silence).run()


class Relay:
    def __init__(self, connection, clear, silence):
        self.tls = connection
        self.sslobj, self.incoming, self.outgoing = connection.sslobj, connection.incoming, connection.outgoing
        self.fdr, self.fdw, self.clear = connection.fdr, connection.fdw, clear
        self.silence = silence or None
        os.set_blocking(clear, False)
        # upward: PROG -> network
        self.plain = b""          # cleartext read from PROG that the engine has not taken yet
        self.to_net = b""         # records taken from the outgoing BIO, not yet written
        self.clear_eof = False    # PROG's EOF seen
        self.notified = False     # close_notify produced
        self.net_shut = False     # shutdown(SHUT_WR) done on the network
        self.net_dead = False     # the network cannot be written any more
        # downward: network -> PROG
        # network bytes not yet in the incoming BIO. What the handshake read beyond its last
        # record is still whole in the BIO (OpenSSL reads one record at a time): take it back
        self.raw = bytearray(self.incoming.read() if self.incoming.pending else b"")
        self.to_clear = bytearray()  # decrypted, not yet written to PROG
        self.raw_eof = False      # the network said EOF (or reset)
        self.eof_fed = False      # ... and the incoming BIO was told
        self.tls_eof = False      # the TLS stream ended (close_notify, or EOF after raw_eof)
        self.clear_shut = False   # shutdown(SHUT_WR) done on the cleartext socket
        self.hung_up = False      # PROG closed its end: nobody reads what comes down
        self.last_move = time.monotonic()

    def run(self):
        poller = select.poll()
        registered = {}
        while True:
            self.pump()
            up_done = self.net_shut or self.net_dead
            down_done = self.clear_shut or self.hung_up
            if up_done and down_done:
                return
            wanted = self.wanted()
            for fd in list(registered):
                if fd not in wanted:
                    poller.unregister(fd)
                    del registered[fd]
            for fd, events in wanted.items():
                if registered.get(fd) != events:
                    poller.register(fd, events)
                    registered[fd] = events
            if not wanted:
                return  # nothing can move any more (cannot happen while a direction is open)
            wait = self.time_left()
            if wait is not None and wait <= 0:
                return
            for fd, revents in poller.poll(None if wait is None else int(wait * 1000) + 1):
                self.handle(fd, revents)

    def time_left(self):
        limit = self.silence
        if self.hung_up:
            limit = AFTER_HANGUP if limit is None else min(limit, AFTER_HANGUP)
        if limit is None:
            return None
        return self.last_move + limit - time.monotonic()

    # what each fd is polled for
    def want_net_read(self):
        # a record longer than what is buffered must always be completed, or nothing moves
        return not self.raw_eof and not self.hung_up and (len(self.raw) < LIMIT or not _whole_records(self.raw))

    def want_clear_read(self):
        return (not self.clear_eof and not self.plain
                and (self.net_dead or (not self.notified and len(self.to_net) + self.outgoing.pending < LIMIT)))

    def wanted(self):
        wanted = {}
        if self.want_net_read():
            wanted[self.fdr] = _IN
        if self.to_net and not self.net_dead:
            wanted[self.fdw] = wanted.get(self.fdw, 0) | _OUT
        clear = 0
        if self.want_clear_read():
            clear |= _IN
        if self.to_clear and not self.hung_up:
            clear |= _OUT
        if clear or not self.hung_up:
            wanted[self.clear] = wanted.get(self.clear, 0) | clear  # 0: still told of POLLHUP
        return wanted

    def handle(self, fd, revents):
        if fd == self.clear:
            if revents & (_IN | _GONE) and self.want_clear_read():
                self.read_clear()
            if revents & (_OUT | _GONE) and self.to_clear and not self.hung_up:
                self.write_clear()
            if revents & _GONE and not self.hung_up:
                # PROG closed its end (a mere half-close gives POLLIN, not POLLHUP)
                self.hung_up = True
                self.to_clear = bytearray()
                self.last_move = time.monotonic()
        if fd == self.fdr and revents & (_IN | _GONE) and self.want_net_read():
            self.read_net()
        if fd == self.fdw and revents & (_OUT | _GONE) and self.to_net and not self.net_dead:
            self.write_net()

    # --- the four moves ---

    def read_net(self):
        try:
            data = os.read(self.fdr, LIMIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
            self.net_dead = True
        self.last_move = time.monotonic()
        if data:
            self.raw += data
        else:
            self.raw_eof = True

    def write_net(self):
        try:
            written = os.write(self.fdw, self.to_net)
        except BlockingIOError:
            return
        except OSError:
            self.net_dead = True
            self.to_net = b""
            self.plain = b""
            return
        self.last_move = time.monotonic()
        self.to_net = self.to_net[written:]

    def read_clear(self):
        try:
            data = os.read(self.clear, LIMIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.last_move = time.monotonic()
        if not data:
            self.clear_eof = True
        elif not self.net_dead:
            self.plain = data  # the engine takes it in pump()

    def write_clear(self):
        try:
            written = os.write(self.clear, self.to_clear)
        except BlockingIOError:
            return
        except OSError:
            self.hung_up = True  # EPIPE: PROG is gone
            self.to_clear = bytearray()
            return
        self.last_move = time.monotonic()
        del self.to_clear[:written]

    # --- the TLS engine between them ---

    def pump(self):
        """Let the engine take and give what it can; then the EOFs that are due."""
        self.feed()
        self.decrypt()
        if self.tls_eof and not self.to_clear and not self.clear_shut and not self.hung_up:
            _shutdown_write(self.clear)
            self.clear_shut = True
        if self.plain and not self.net_dead:
            try:
                self.sslobj.write(self.plain)
                self.plain = b""
            except _WANT:
                pass  # the engine needs the peer first (a key update); retried next round
            except _ssl.SSLError:
                self.net_dead = True
                self.plain = b""
        if self.clear_eof and not self.plain and not self.notified and not self.net_dead:
            if self.hung_up or self.tls_eof or (not self.incoming.pending and not self.sslobj.pending()):
                self.notify()
        if not self.to_net and self.outgoing.pending and not self.net_dead:
            # all of it (the bound is on to_net + pending, checked before PROG is read);
            # read(LIMIT) would leave the records' framing behind: a tiny extra write per round
            self.to_net = self.outgoing.read()
        if self.notified and not self.to_net and not self.outgoing.pending and not self.net_shut and not self.net_dead:
            _shutdown_write(self.fdw)
            self.net_shut = True

    def feed(self):
        """Whole records from raw into the incoming BIO, while it has room; then EOF."""
        if self.incoming.pending < LIMIT and self.raw:
            end = _whole_records(self.raw, LIMIT)
            if end:
                self.incoming.write(self.raw[:end])
                del self.raw[:end]
        if self.raw_eof and not self.eof_fed and (self.hung_up or not _whole_records(self.raw)):
            if self.raw:  # a truncated record: OpenSSL reports it with the EOF
                self.incoming.write(self.raw)
                self.raw = bytearray()
            self.incoming.write_eof()
            self.eof_fed = True

    def decrypt(self):
        while not self.tls_eof and (len(self.to_clear) < LIMIT or self.hung_up):
            try:
                data = self.sslobj.read(LIMIT)
            except _WANT:
                return
            except (_ssl.SSLZeroReturnError, _ssl.SSLEOFError):
                self.tls_eof = True
                return
            except _ssl.SSLError:
                # a fatal alert or a corrupt record: nothing more can be read or written
                self.tls_eof = self.net_dead = True
                self.to_net = b""
                return
            if not data:
                self.tls_eof = True
                return
            if not self.hung_up:
                self.to_clear += data

    def notify(self):
        """Queue close_notify. The engine then wants the peer's: that want is not an error."""
        self.notified = True
        try:
            self.sslobj.shutdown()
        except _WANT:
            pass
        except _ssl.SSLError:
            pass
