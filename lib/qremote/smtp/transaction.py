"""Sans-IO mail transaction: replies in, commands and outcomes out.

It starts after EHLO (or HELO) and ends with the reply to the final dot. The I/O
shell (qmail_remote_io.py) sends what opening() and receive() return, streams the
message when the phase is BODY, tells final_write() how much of the write that
holds the final dot the kernel took, and asks died() what a lost connection means
at that moment.

Rules:
1. The phase is one value; "Possible duplicate!" follows from it: only AFTER_DOT,
   from the moment a byte of the final ".\\r\\n" has been handed to the kernel until
   its reply is read, makes a lost connection a possible duplicate. A write that
   fails before it reached the dot leaves the phase BODY: the server cannot have
   taken a message whose end it never got, so that is a plain "connection died".
2. Success (phase DONE) only after a 2xx reply to the final dot: a 3xx there is no
   valid answer (RFC 5321 section 4.3.2), so it is a temporary failure, where stock
   says K. A malformed reply is never success (reply.py rule 2). DATA goes on to the
   message only after a 354: after anything else (stock takes any reply below 400)
   the server would read the message as commands. Elsewhere any reply below 400
   goes on, as stock.
3. Failures are raised as the exceptions of failures.py; recipient reports queue up
   in order and the shell takes them with take_reports().
4. With PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one write and the
   replies are read in order; without it, one command per reply, and DATA only if
   a recipient was accepted.
"""

from .. import failures
from . import commands

MAIL, RCPT, DATA, BODY, AFTER_DOT, DONE = "MAIL", "RCPT", "DATA", "BODY", "AFTER_DOT", "DONE"


def needs_smtputf8(addresses):
    return any(not address.isascii() for address in addresses)


class Transaction:
    def __init__(self, ip, sender, recipients, capabilities, size=None, eightbit=False, authenticated=False):
        """sender and recipients are mangled addresses (bytes); size from fstat or None;
        authenticated: AUTH succeeded, so MAIL says AUTH=<sender> (RFC 4954 section 5)."""
        self.authenticated = authenticated
        self.ip = ip
        self.sender = sender
        self.recipients = list(recipients)
        self.caps = capabilities
        self.size = size
        self.eightbit = eightbit
        self.pipelining = "PIPELINING" in capabilities
        self.phase = MAIL
        self.accepted = 0
        self.replied = 0  # RCPT replies received so far
        self.success = None  # the final reply, once phase is DONE
        self._reports = []

    def opening(self):
        """The first bytes to send; raises TooBig or NeedsSmtpUtf8 before anything goes out."""
        caps = self.caps
        smtputf8 = needs_smtputf8([self.sender] + self.recipients)
        if smtputf8 and "SMTPUTF8" not in caps:
            raise failures.NeedsSmtpUtf8(self.ip)
        if caps.size_limit and self.size is not None and self.size > caps.size_limit:
            raise failures.TooBig(self.ip, self.size, caps.size_limit)
        command = commands.mail(
            self.sender,
            size=self.size if "SIZE" in caps and self.size is not None else None,
            eightbit=self.eightbit and "8BITMIME" in caps,
            smtputf8=smtputf8,
            auth=self.sender if self.authenticated else None)
        if self.pipelining:
            command += b"".join(commands.rcpt(r) for r in self.recipients) + commands.DATA
        return command

    def receive(self, reply):
        """Digest the next reply; returns the bytes to send next (maybe none)."""
        if self.phase == MAIL:
            if not reply.ok:
                raise failures.SenderRejected(self.ip, reply)
            self.phase = RCPT
            return b"" if self.pipelining else commands.rcpt(self.recipients[0])
        if self.phase == RCPT:
            return self._rcpt_reply(reply)
        if self.phase == DATA:
            if reply.code != 354:
                raise failures.DataRejected(self.ip, reply)
            self.phase = BODY
            return b""
        if self.phase == AFTER_DOT:
            if reply.code is None or not 200 <= reply.code < 300:
                raise failures.MessageRejected(self.ip, reply)
            self.phase = DONE
            self.success = reply
            return b""
        raise RuntimeError("no reply expected in phase %s" % self.phase)

    def _rcpt_reply(self, reply):
        if reply.ok:
            self.accepted += 1
        self._reports.append(failures.recipient_report(self.ip, reply))
        self.replied += 1
        if self.replied < len(self.recipients):
            return b"" if self.pipelining else commands.rcpt(self.recipients[self.replied])
        if not self.accepted:
            raise failures.NoRecipients(self.ip)
        self.phase = DATA
        return b"" if self.pipelining else commands.DATA

    def take_reports(self):
        reports, self._reports = self._reports, []
        return reports

    def final_write(self, sent, total):
        """The shell's last write of the message (total bytes, ending with the final
        ".\\r\\n") handed sent bytes to the kernel: all of them, or fewer when it failed.
        From the first byte of the dot on, the server may take the message."""
        if self.phase == BODY and sent > total - len(commands.END_OF_DATA):
            self.phase = AFTER_DOT

    def died(self, why=b"", too_long=False):
        """What a lost connection (or a timeout, or an endless reply) means now."""
        return failures.ConnectionDied(self.ip, duplicate=self.phase == AFTER_DOT, why=why, too_long=too_long)
