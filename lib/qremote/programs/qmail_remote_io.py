"""qmail-remote-io [options] -- ip sender recip...: the SMTP transaction on fds 6/7.

Reads like stock's smtp(): optional greeting and EHLO (by hand, or after TLS: then
only what the EHLO inside TLS offers is used, RFC 3207),
then the transaction (smtp/transaction.py) driven over a Channel, the message
streamed through the encoder, and the reports written as the replies come in.
The message on fd 0 is read twice only when it is a regular file and the server
offers 8BITMIME: a first pass with pread() tells whether BODY=8BITMIME is due.
"""

import posix as os  # the C functions os re-exports, without os.py (about 1 ms per start)
import sys

import _stat

from .. import addresses, chainargv, failures, report
from ..smtp import encoder as encoding
from ..smtp.ehlo import Capabilities
from ..smtp.opening import Opening
from ..smtp.transaction import BODY, DONE, Transaction
from ..wire import Channel, Dropped, converse, quit

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
  -A, --auth=REFERENCE        SMTP AUTH with the credentials of route line REFERENCE
                              (NAME:LINE:HEX, never a secret: doc/auth.html)
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
        authenticated, auth_note = authenticate(channel, ip, capabilities, options.auth) if options.auth else (
            False, b"")
        size, eightbit = inspect_message(0, "8BITMIME" in capabilities, "SIZE" in capabilities)
        transaction = Transaction(ip, sender, recipients, capabilities, size, eightbit, authenticated)
        run(channel, transaction, reporter)
    except failures.Failure as failure:
        if failure.polite:  # the server is still listening
            quit(channel)
        raise
    quit(channel)
    note = b"; ".join(filter(None, (options.note, auth_note)))
    reporter.final(failures.K, accepted_report(transaction, note))
    if b"SSL_PROTOCOL" in os.environ:  # over TLS: the downgrade memory (tlsmemory.py), after the report
        from .. import tlsmemory
        tlsmemory.after_delivery(os.environ)


def accepted_report(transaction, note):
    """The K text, saying how the message travelled: over TLS (tlsc-io's SSL_* variables,
    which exist only when it ran us), or in cleartext although TLS was wanted (the note)."""
    environ = os.environ  # posix's: bytes keys and values
    return failures.accepted(transaction.ip, transaction.success, environ.get(b"SSL_PROTOCOL"),
                             environ.get(b"SSL_CIPHER"), environ.get(b"SSL_PEER_VERIFIED") == b"1", note,
                             environ.get(b"SSL_PEER_VERIFIED_BY"))


def opening(channel, ip, options):
    """The server's capabilities: from our own greeting and EHLO (-g, -h), or from argv."""
    if options.greeting or options.ehlo:
        machine = Opening(ip, options.ehlo, greeting=options.greeting)
        try:
            converse(channel, machine)
        except Dropped as error:
            raise failures.ConnectionDied(ip, why=str(error).encode(), too_long=error.too_long) from None
        if machine.capabilities is not None:
            return machine.capabilities
    try:
        return Capabilities.from_arg(options.capabilities)
    except ValueError as error:
        raise failures.UsageIO(PROGRAM, str(error)) from None


def authenticate(channel, ip, capabilities, reference):
    """SMTP AUTH with the route's credentials, read here and now (credentials.py):
    (True, b"") once authenticated, (False, note) when the server offers no mechanism we
    can use (s/qmail goes on without AUTH, and the K says so). Failures are raised."""
    from .. import credentials
    from ..smtp import auth

    user, secret, options = credentials.read(reference)
    tls = b"SSL_PROTOCOL" in os.environ  # tlsc-io ran us: this connection is inside TLS
    machine = auth.Auth(ip, capabilities.auth, user, lambda: secret, tls, b"cleartext" in options,
                        b"xoauth2" in options, scram_keys=cached_scram_keys)
    try:
        converse(channel, machine)
    except Dropped as error:
        raise failures.ConnectionDied(ip, why=str(error).encode(), too_long=error.too_long) from None
    if machine.outcome == auth.SKIPPED:
        return False, machine.note
    return True, b""


def cached_scram_keys(*args):
    """SCRAM's keys through run/qmail-remote/scram (scramcache.py): imported only by SCRAM."""
    from .. import scramcache

    return scramcache.keys(*args)


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
        raise transaction.died(str(error).encode(), error.too_long) from None


def send_message(channel, transaction):
    """Stream fd 0 through the encoder; the last write holds the final dot (one write,
    so a small message and its dot leave in one segment), and the transaction learns
    how much of it went: a drop before the dot's bytes is no possible duplicate."""
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
    last = held + tail
    try:
        channel.send(last)
    except Dropped as error:
        transaction.final_write(error.sent, len(last))
        raise
    transaction.final_write(len(last), len(last))


def inspect_message(fd, want_eightbit, want_size):
    """(size for SIZE=, whether BODY=8BITMIME is due), without moving fd's offset.

    Both come from one pread() pass over a regular file (qmail-rspawn gives one), made
    when the server offers SIZE or 8BITMIME: the size is the message's size on the wire
    (every line end CRLF, RFC 1870), the same for SIZE= and the check against the
    server's limit; the pass stops at the first 8-bit byte when the size is not wanted.
    The size is None when the server does not offer SIZE. For a pipe neither can be
    known in advance: no size, and BODY=8BITMIME whenever the server offers it, which
    is harmless for a 7-bit message.
    """
    try:
        os.set_blocking(fd, True)
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode):
            return None, want_eightbit
        offset = os.lseek(fd, 0, 1)  # SEEK_CUR: posix has no name for it
    except OSError:
        return None, want_eightbit
    if not want_size and not want_eightbit:
        return None, False  # no SIZE offered: no SIZE=, no limit to check
    counter = encoding.WireSize() if want_size else None
    eightbit = False
    position = offset
    while True:
        try:
            chunk = os.pread(fd, 1 << 20, position)
        except OSError:
            raise failures.MessageUnreadable() from None
        if not chunk:
            break
        if want_eightbit and not eightbit and not chunk.isascii():
            eightbit = True
            if counter is None:
                break
        if counter is not None:
            counter.feed(chunk)
        position += len(chunk)
    return (counter.size if counter is not None else None), eightbit
