"""The thin I/O shell around the SMTP core: timed reads and writes on two fds.

Rules:
1. Every wait is bounded by a time.monotonic() deadline: a whole reply must arrive
   within `timeout` seconds; a write must make progress at least every `timeout`
   seconds (so a large message over a slow link is fine, a stalled peer is not).
2. Both fds are made non-blocking, so no single system call can outlive its deadline.
3. A Channel in "exact" mode (qmail-remote, which hands the socket on to the next
   program) never takes bytes past the end of a reply off the socket: it peeks,
   finds the end with the parser, then reads just that much. Greedy mode
   (qmail-remote-io, the last owner) keeps the surplus for the next reply, which is
   how pipelined replies that arrive together are read in order.
"""

# the C functions os re-exports, without os.py: it costs ~1 ms of CPU at every start
# (_collections_abc, posixpath, stat); a program that never imports os saves it
import posix as os
import select
import time

from . import trace
from .smtp import commands
from .smtp.reply import ReplyParser, ReplyTooLong

READ_SIZE = 65536
_POLLIN = select.POLLIN | select.POLLPRI
_POLLOUT = select.POLLOUT


class Dropped(Exception):
    """The connection was closed, failed, or timed out; str() says which. too_long: the
    peer sent a reply larger than we read (smtp.reply's ReplyTooLong), which ends the
    connection like a drop."""

    sent = 0  # from send(): how many bytes of its data the kernel took before it failed

    def __init__(self, why, too_long=False):
        super().__init__(why)
        self.too_long = too_long


class Channel:
    def __init__(self, rfd, wfd, timeout, sock=None, deadline=float("inf")):
        """sock: the socket object behind rfd, for exact mode (peek); None for greedy mode.
        deadline: a time.monotonic() value no wait may pass (qmail-remote's opening)."""
        self.rfd, self.wfd = rfd, wfd
        self.timeout = timeout
        self.deadline = deadline
        self.sock = sock
        self.surplus = b""
        os.set_blocking(rfd, False)
        if wfd != rfd:
            os.set_blocking(wfd, False)
        self._rpoll = select.poll()
        self._rpoll.register(rfd, _POLLIN)
        self._wpoll = select.poll()
        self._wpoll.register(wfd, _POLLOUT)

    def _wait(self, poller, deadline, what):
        remaining = deadline - time.monotonic()
        if remaining < 0 or not poller.poll(remaining * 1000.0):
            raise Dropped("timed out while %s" % what)

    def _deadline(self):
        return min(time.monotonic() + self.timeout, self.deadline)

    def send(self, data):
        """Write all of data, or raise Dropped with .sent: how far it got (whether the
        final dot had started decides "Possible duplicate!")."""
        view = memoryview(data)
        deadline = self._deadline()
        try:
            while view:
                try:
                    done = os.write(self.wfd, view)
                except BlockingIOError:
                    self._wait(self._wpoll, deadline, "writing")
                    continue
                except OSError as error:
                    raise Dropped("write failed: %s" % error.strerror) from None
                view = view[done:]
                deadline = self._deadline()
        except Dropped as error:
            error.sent = len(data) - len(view)
            raise

    def _read(self, deadline):
        while True:
            try:
                if self.sock is not None:
                    data = self.sock.recv(READ_SIZE, 2)  # 2 = MSG_PEEK
                else:
                    data = os.read(self.rfd, READ_SIZE)
            except BlockingIOError:
                self._wait(self._rpoll, deadline, "reading")
                continue
            except OSError as error:
                raise Dropped("read failed: %s" % error.strerror) from None
            if not data:
                raise Dropped("connection closed by the remote host")
            return data

    def read_some(self, deadline):
        """Whatever has come (greedy mode), waiting at most until deadline; Dropped at
        the end of the stream or of the time."""
        if self.surplus:
            data, self.surplus = self.surplus, b""
            return data
        return self._read(min(deadline, self.deadline))

    def read_ready(self):
        """What has already come, without waiting (b"" for nothing, or the end)."""
        data, self.surplus = self.surplus, b""
        try:
            return data + os.read(self.rfd, READ_SIZE)
        except OSError:  # BlockingIOError: nothing more is there
            return data

    def read_reply(self):
        """One whole reply; raises Dropped (also for an endless reply: too_long)."""
        parser = ReplyParser()
        deadline = self._deadline()
        try:
            if self.surplus:
                used = parser.feed(self.surplus)
                self.surplus = self.surplus[used:]
            while parser.reply is None:
                data = self._read(deadline)
                used = parser.feed(data)
                if self.sock is not None:
                    self._consume(used)
                else:
                    self.surplus = data[used:]
        except ReplyTooLong:
            raise Dropped("reply too long", too_long=True) from None
        trace.event("reply", code=parser.reply.code)
        return parser.reply

    def _consume(self, count):
        """Exact mode: take off the socket the count bytes just peeked at."""
        while count:
            count -= len(self.sock.recv(count))

    def unread_bytes(self):
        """Whether the peer has sent anything beyond the last reply."""
        if self.sock is None:
            return bool(self.surplus)
        try:
            return bool(self.sock.recv(1, 2 | 0x40))  # MSG_PEEK | MSG_DONTWAIT
        except BlockingIOError:
            return False
        except OSError:
            return False


def converse(channel, machine):
    """Run a sans-IO opening (smtp/opening.py) over channel until it has an outcome.

    Only bytes move here; a lost connection raises Dropped."""
    outgoing = machine.start()
    while machine.outcome is None:
        if outgoing:
            channel.send(outgoing)
        reply = channel.read_reply()
        outgoing = machine.receive(reply, machine.checks_surplus and channel.unread_bytes())


def quit(channel):
    """Say QUIT and do not wait for the reply (as stock: the outcome is already known)."""
    try:
        channel.send(commands.QUIT)
    except Dropped:
        pass
