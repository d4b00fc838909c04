"""qmail-remote-io [options] -- ip sender recip...: the SMTP transaction on fds 6/7.

Reads like stock's smtp(): optional greeting and EHLO (by hand, or after TLS: then
only what the EHLO inside TLS offers is used, RFC 3207),
then the transaction (smtp/transaction.py) driven over a Channel, the message
streamed through the encoder, and the reports written as the replies come in.
The message on fd 0 is read twice only when it is a regular file and the server
offers 8BITMIME: a first pass with pread() tells whether BODY=8BITMIME is due.
"""

import os
import stat
import sys

from .. import addresses, chainargv, failures, report, session
from ..smtp import encoder as encoding
from ..smtp.ehlo import Capabilities
from ..smtp.reply import ReplyTooLong
from ..smtp.transaction import BODY, DONE, Transaction
from ..wire import Channel, Dropped

PROGRAM = chainargv.IO
CHUNK = 256 * 1024


HELP = b"""usage: qmail-remote-io [options] [--] ip sender recip [recip ...]
The SMTP transaction on a connection given as fds 6 (read) and 7 (write): the message
on fd 0, the reports on fd 1 (doc/qmail-remote-io.html).
  -t, --timeout=SECONDS       for each reply and each write (default 1200)
  -c, --capabilities=LIST     what the EHLO offered, e.g. PIPELINING,SIZE=1000000,8BITMIME
  -g, --greeting              read the server's greeting first
  -h, --ehlo=NAME             say EHLO NAME first and use what it offers (-c ignored)
  -n, --note=TEXT             add " (TEXT)" to the K report
  -6, --fdr=FD, -7, --fdw=FD  the connection on other descriptors
"""


def main():
    if sys.argv[1:2] == ["--help"]:  # for people: qmail-remote's argv starts with -t
        os.write(1, HELP)
        return
    report.run_program(PROGRAM, deliver, sys.argv)


def deliver(argv, reporter):
    options = chainargv.parse_io(argv)
    ip = options.ip
    sender, recipients = addresses.envelope(options.sender, options.recipients)
    try:
        channel = Channel(options.fdr, options.fdw, options.timeout)
    except OSError as error:
        raise failures.NoChannel(PROGRAM, options.fdr, options.fdw, error.strerror) from None
    try:
        capabilities = opening(channel, ip, options)
        size, eightbit = inspect_message(0, "8BITMIME" in capabilities)
        transaction = Transaction(ip, sender, recipients, capabilities, size, eightbit)
        run(channel, transaction, reporter)
    except _POLITE:
        session.quit(channel)
        raise
    session.quit(channel)
    reporter.final(failures.K, accepted_text(transaction, options.note))


def accepted_text(transaction, note):
    """The K text, saying how the message travelled: over TLS (tlsc-io's SSL_* variables,
    which exist only when it ran us), or in cleartext although TLS was wanted (the note)."""
    environ = os.environb
    return failures.accepted_text(transaction.accepted_text(), environ.get(b"SSL_PROTOCOL"),
                                  environ.get(b"SSL_CIPHER"), environ.get(b"SSL_PEER_VERIFIED") == b"1", note)


# Failures after which the server is still listening: say QUIT before reporting.
_POLITE = (failures.GreetingFailed, failures.HeloRejected, failures.SenderRejected,
           failures.NoRecipients, failures.DataRejected, failures.MessageRejected,
           failures.TooBig, failures.NeedsSmtpUtf8)


def opening(channel, ip, options):
    """The server's capabilities: from argv, or from our own greeting and EHLO."""
    if options.greeting:
        session.greeting(channel, ip)
    if options.ehlo:
        return session.hello(channel, ip, options.ehlo)
    try:
        return Capabilities.from_arg(options.capabilities)
    except ValueError as error:
        raise failures.UsageIO(PROGRAM, str(error)) from None


def run(channel, transaction, reporter):
    """Drive the transaction to DONE; lost connections become ConnectionDied."""
    try:
        outgoing = transaction.opening()
        while transaction.phase != DONE:
            if outgoing:
                channel.send(outgoing)
            if transaction.phase == BODY:
                send_message(channel, transaction)
                outgoing = b""
                continue
            try:
                outgoing = transaction.receive(channel.read_reply())
            finally:
                for letter, text in transaction.take_reports():
                    reporter.recipient(letter, text)
    except Dropped as error:
        raise transaction.died(str(error).encode()) from None
    except ReplyTooLong:
        died = transaction.died()
        raise failures.ReplyTooLong(died.ip, duplicate=died.duplicate) from None


def send_message(channel, transaction):
    """Stream fd 0 through the encoder; the last write holds the final dot."""
    encoder = encoding.Encoder()
    held = b""
    while True:
        try:
            chunk = os.read(0, CHUNK)
        except OSError:
            raise failures.MessageUnreadable() from None
        if not chunk:
            break
        if held:
            channel.send(held)
        held = encoder.feed(chunk)
    try:
        tail = encoder.finish()
    except encoding.PartialLine:
        raise failures.PartialLine() from None
    transaction.dot_sending()
    channel.send(held + tail)


def inspect_message(fd, want_eightbit):
    """(size for SIZE=, whether BODY=8BITMIME is due), without moving fd's offset.

    size is known only for a regular file (qmail-rspawn gives one). For a pipe the
    8-bit question cannot be answered in advance, so BODY=8BITMIME is declared
    whenever the server offers it: that is harmless for a 7-bit message.
    """
    try:
        os.set_blocking(fd, True)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, want_eightbit
        offset = os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return None, want_eightbit
    size = max(0, st.st_size - offset)
    if not want_eightbit:
        return size, False
    position = offset
    while True:
        try:
            chunk = os.pread(fd, 1 << 20, position)
        except OSError:
            raise failures.MessageUnreadable() from None
        if not chunk:
            return size, False
        if not chunk.isascii():
            return size, True
        position += len(chunk)
