"""qmail-remote-qmtp [options] -- ip sender recip...: one QMTP package on fds 6/7.

QMTP (qmtp.txt) has no greeting and no commands: the package goes out in one stream
(qmtp.py builds its head and tail, the message goes between them as it is on fd 0),
then one reply per recipient comes back. The message's length leads the package, so
fd 0 must be a regular file (qmail-rspawn gives one); it is read in chunks, never
whole: memory stays flat whatever its size.

"Possible duplicate!" once the package's last byte was handed to the kernel: from then
on the server may have taken the message, and any failure (a drop, silence, a reply
that breaks the format) is said so. Before it, the server must throw the package
away (qmtp.txt section 2).
"""

import posix as os  # the C functions os re-exports, without os.py (about 1 ms per start)
import sys
import time

import _stat

from .. import chainargv, failures, qmtp, report, trace
from ..wire import Channel, Dropped

PROGRAM = chainargv.QMTP
CHUNK = 256 * 1024

HELP = b"""usage: qmail-remote-qmtp [options] [--] ip sender recip [recip ...]
One QMTP package on a connection given as fds 6 (read) and 7 (write): the message on
fd 0 (a regular file), the reports on fd 1 (doc/qmail-remote-qmtp.html).
  -t, --timeout=SECONDS       for the replies and each write (default 1200)
  -n, --note=TEXT             add " (TEXT)" to the K report
  -6, --fdr=FD, -7, --fdw=FD  the connection on other descriptors
"""


def main():
    if sys.argv[1:2] == ["--help"]:
        os.write(1, HELP)
        return
    report.run_program(PROGRAM, deliver, sys.argv)


def deliver(argv, reporter):
    options = chainargv.parse_qmtp(argv)
    ip, recipients = options.ip, options.recipients
    size = message_size(0)
    try:
        channel = Channel(options.fdr, options.fdw, options.timeout)
    except OSError as error:
        raise failures.NoChannel(PROGRAM, options.fdr, options.fdw, error.strerror) from None
    send_package(channel, size, options.sender, recipients, ip)
    replies = read_replies(channel, len(recipients), ip, reporter)
    accepted = [r for r in replies.replies if r.ok]
    if not accepted:
        raise failures.NoRecipients(ip)
    environ = os.environ
    reporter.final(failures.K, failures.qmtp_accepted(
        ip, accepted[-1], environ.get(b"SSL_PROTOCOL"), environ.get(b"SSL_CIPHER"),
        environ.get(b"SSL_PEER_VERIFIED") == b"1", options.note))


def message_size(fd):
    """Bytes from fd's offset to its end; QMTPNeedsFile unless it is a regular file."""
    try:
        os.set_blocking(fd, True)
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode):
            raise failures.QMTPNeedsFile()
        return max(0, st.st_size - os.lseek(fd, 0, 1))  # 1 = SEEK_CUR
    except OSError:
        raise failures.QMTPNeedsFile() from None


def send_package(channel, size, sender, recipients, ip):
    """head, the message, tail; the last write holds the tail, so its success is the
    moment the whole package may have reached the server."""
    pending = qmtp.head(size)
    left = size
    try:
        while left:
            try:
                chunk = os.read(0, min(CHUNK, left))
            except OSError:
                raise failures.MessageUnreadable() from None
            if not chunk:
                raise failures.MessageChanged()  # shorter than fstat said: the length is already out
            left -= len(chunk)
            if pending:
                channel.send(pending)
            pending = chunk
        try:
            more = os.read(0, 1)
        except OSError:
            raise failures.MessageUnreadable() from None
        if more:
            raise failures.MessageChanged()
        channel.send(pending + qmtp.tail(sender, recipients))
    except Dropped as error:
        raise failures.ConnectionDied(ip, duplicate=False, why=str(error).encode()) from None


def read_replies(channel, expected, ip, reporter):
    """One reply per recipient, reported as it comes; then no byte more may be there."""
    replies = qmtp.Replies(expected)
    deadline = time.monotonic() + channel.timeout  # for all of them: a trickle ends too
    try:
        while not replies.complete:
            for reply in replies.feed(channel.read_some(deadline)):
                trace.event("qmtp", letter=reply.letter)
                reporter.recipient(*failures.qmtp_recipient_report(ip, reply))
        replies.finish(channel.read_ready())  # too many replies: as far as they are already here
    except qmtp.ProtocolError as error:
        raise failures.QMTPProtocol(ip, str(error)) from None
    except Dropped as error:
        why = str(error) + (" in the middle of a reply" if replies.partial else "")
        raise failures.ConnectionDied(ip, duplicate=True, why=why.encode()) from None
    return replies
