"""Every way a delivery can end other than success: one exception class each.

Rules of this module:
1. Callers raise; they never pick a report letter. Each class carries its letter
   (D permanent, Z temporary) and its text, in stock qmail-remote's wording where
   stock has the case (../shared/reference/stock-qmail-remote.md section 12).
2. Texts are bytes, end with LF, and are built here only; report.py writes them.
3. A remote reply is added as stock does: "Remote host said: " + its text.

Letters are plain bytes constants, not an Enum: importing enum costs about 5 ms of
CPU in every process of the chain, and the letters are only ever written out.
"""

K = b"K"  # message accepted
Z = b"Z"  # message deferred (temporary)
D = b"D"  # message bounced (permanent)
RCPT_OK = b"r"
RCPT_PERM = b"h"
RCPT_TEMP = b"s"


def remote_said(reply):
    """Stock's "Remote host said:" suffix for a reply (empty when there is none)."""
    if reply is None or not reply.text:
        return b""
    return b"Remote host said: " + reply.text


def letter_for(reply):
    """D for a 5xx reply, Z for 4xx and for anything malformed (never a guess of success)."""
    return D if reply.code is not None and reply.code >= 500 else Z


def safe_name(name):
    """Stock's outsafe(): every byte outside 33..126 becomes '?'."""
    return bytes(c if 33 <= c <= 126 else 63 for c in name)


def safe_text(text):
    """Peer- or library-provided text inside a report line: printable ASCII only."""
    return bytes(c if 32 <= c <= 126 else 63 for c in text)


class Failure(Exception):
    """Base: a delivery outcome other than K, with its letter and text."""

    letter = Z

    def text(self):
        raise NotImplementedError


class _Fixed(Failure):
    message = b""

    def text(self):
        return self.message


class Usage(_Fixed):
    letter = D
    message = b"I (qmail-remote) was invoked improperly. (#5.3.5)\n"


class NoHome(_Fixed):
    message = b"Unable to switch to home directory. (#4.3.0)\n"


class NoResources(_Fixed):
    message = b"System resources temporarily unavailable. (#4.3.0)\n"


class NoConnection(_Fixed):
    message = b"Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"


class DnsSoft(_Fixed):
    message = b"Sorry, I couldn't find any host by that name. (#4.1.2)\n"


class NoAddress(_Fixed):
    letter = D
    message = b"Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n"


class AmbiguousMX(_Fixed):
    letter = D
    message = (b"Sorry. Although I'm listed as a best-preference MX or A for that host,\n"
               b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n")


class PartialLine(_Fixed):
    letter = D
    message = b"SMTP cannot transfer messages with partial final lines. (#5.6.2)\n"


class MessageUnreadable(_Fixed):
    message = b"Unable to read message. (#4.3.0)\n"


class ControlUnreadable(Failure):
    """A control file exists but cannot be read (stock: "Unable to read control files")."""

    def __init__(self, name, reason):
        super().__init__(name, reason)
        self.name, self.reason = name, reason

    def text(self):
        return b"Unable to read control files: control/%s: %s. (#4.3.0)\n" % (
            self.name.encode(), self.reason.encode())


class ControlInvalid(ControlUnreadable):
    """A control file is readable but its content cannot be used."""

    def text(self):
        return b"Invalid control file control/%s: %s. (#4.3.0)\n" % (
            self.name.encode(), self.reason.encode())


class NoHelohost(_Fixed):
    message = b"Unable to read control files: neither control/helohost nor control/me gives a name. (#4.3.0)\n"


class NullMX(Failure):
    """RFC 7505: the domain publishes a single MX "0 ." to say it takes no mail."""

    letter = D

    def __init__(self, host):
        super().__init__(host)
        self.host = host

    def text(self):
        return b"Sorry, %s does not accept mail: it publishes a null MX (RFC 7505). (#5.1.10)\n" % safe_name(self.host)


class DnsHard(Failure):
    letter = D

    def __init__(self, host):
        super().__init__(host)
        self.host = host

    def text(self):
        return b"Sorry, I couldn't find any host named %s. (#5.1.2)\n" % safe_name(self.host)


class BadAddress(Failure):
    """An envelope address that would put a control byte on the wire (command injection)."""

    letter = D

    def __init__(self, role, address):
        super().__init__(role, address)
        self.role, self.address = role, address

    def text(self):
        return (b"Sorry, the %s address contains a CR, LF or NUL byte, or an angle bracket outside quotes, "
                b"which SMTP cannot carry: %s. (#5.1.3)\n"
                % (self.role.encode(), safe_name(self.address)))


class Internal(Failure):
    """A bug or an unexpected system condition: deferred, never a traceback."""

    def __init__(self, program, error):
        super().__init__(program, error)
        self.program, self.error = program, error

    def text(self):
        detail = str(self.error).encode("utf-8", "replace")[:200]
        return b"%s: internal error (%s: %s); will try again later. (#4.3.0)\n" % (
            self.program.encode(), type(self.error).__name__.encode(), safe_name(detail))


class ChainBroken(Failure):
    """The next program of the chain could not be run."""

    def __init__(self, path, reason):
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def text(self):
        return b"Unable to run %s: %s. (#4.3.0)\n" % (safe_name(self.path), self.reason.encode())


class UsageIO(Failure):
    """qmail-remote-io (or another internal program) was given a bad command line."""

    letter = D

    def __init__(self, program, why):
        super().__init__(program, why)
        self.program, self.why = program, why

    def text(self):
        return b"%s was invoked improperly: %s. (#5.3.5)\n" % (self.program.encode(), self.why.encode())


class NoChannel(Failure):
    """The program was started without a usable connection on its fds."""

    def __init__(self, program, fdr, fdw, reason):
        super().__init__(program, fdr, fdw, reason)
        self.program, self.fdr, self.fdw, self.reason = program, fdr, fdw, reason

    def text(self):
        return b"%s: no connection on fds %d and %d: %s. (#4.3.0)\n" % (
            self.program.encode(), self.fdr, self.fdw, self.reason.encode())


class TLSFileUnusable(Failure):
    """A file named by a TLS control file (trustanchors, clientcert, clientkey) cannot be used."""

    def __init__(self, control, path, reason):
        super().__init__(control, path, reason)
        self.control, self.path, self.reason = control, path, reason

    def text(self):
        return b"Unable to use %s named by control/%s: %s. (#4.3.0)\n" % (
            safe_name(self.path), self.control.encode(), self.reason.encode())


class TLSRequired(Failure):
    """tlsstrictness 2 and no server would take the message over verified TLS."""

    MAX_REASONS = 8

    def __init__(self, reasons):
        super().__init__(reasons)
        self.reasons = reasons  # [(ip bytes, why bytes)]

    def text(self):
        listed = b"; ".join(b"%s: %s" % (ip, why) for ip, why in self.reasons[:self.MAX_REASONS])
        more = b"; ..." if len(self.reasons) > self.MAX_REASONS else b""
        return (b"Sorry, no server would take the message over TLS, as control/tlsstrictness 2 requires (%s%s). "
                b"(#4.7.5)\n" % (listed, more))


# --- failures once connected to IP; each knows the peer's address for its text ---

class AtPeer(Failure):
    """A failure while talking to one server: its text names the server's IP."""

    def __init__(self, ip, reply=None):
        super().__init__(ip, reply)
        self.ip, self.reply = ip, reply


class ConnectionDied(AtPeer):
    def __init__(self, ip, duplicate=False, why=b""):
        super().__init__(ip)
        self.duplicate, self.why = duplicate, why

    def text(self):
        dup = b" Possible duplicate!" if self.duplicate else b""
        return b"Connected to %s but connection died.%s (#4.4.2)\n" % (self.ip, dup)


class GreetingFailed(AtPeer):
    def text(self):
        return b"Connected to %s but greeting failed.\n%s" % (self.ip, remote_said(self.reply))


class HeloRejected(AtPeer):
    def text(self):
        return b"Connected to %s but my name was rejected.\n%s" % (self.ip, remote_said(self.reply))


class ReplyTooLong(ConnectionDied):
    """The server sent a reply larger than we are willing to read: treated like a drop."""

    def text(self):
        dup = b" Possible duplicate!" if self.duplicate else b""
        return b"Connected to %s but its reply was too long; connection dropped.%s (#4.4.2)\n" % (self.ip, dup)


class SenderRejected(AtPeer):
    @property
    def letter(self):
        return letter_for(self.reply)

    def text(self):
        return b"Connected to %s but sender was rejected.\n%s" % (self.ip, remote_said(self.reply))


class NoRecipients(AtPeer):
    letter = D

    def text(self):
        return b"Giving up on %s.\n" % self.ip


class DataRejected(AtPeer):
    @property
    def letter(self):
        return letter_for(self.reply)

    def text(self):
        return b"%s failed on DATA command.\n%s" % (self.ip, remote_said(self.reply))


class MessageRejected(AtPeer):
    @property
    def letter(self):
        return letter_for(self.reply)

    def text(self):
        return b"%s failed after I sent the message.\n%s" % (self.ip, remote_said(self.reply))


class TooBig(AtPeer):
    letter = D

    def __init__(self, ip, size, limit):
        super().__init__(ip)
        self.size, self.limit = size, limit

    def text(self):
        return (b"Connected to %s but the message (%d bytes) is bigger than its SIZE limit of %d bytes. (#5.3.4)\n"
                % (self.ip, self.size, self.limit))


class NeedsSmtpUtf8(AtPeer):
    letter = D

    def text(self):
        return (b"Connected to %s but an address is not ASCII and the server does not offer SMTPUTF8. (#5.6.7)\n"
                % self.ip)


class NoResolver(Failure):
    """No nameserver can be asked: $DNSCACHEIP is unusable or /etc/resolv.conf unreadable."""

    def __init__(self, why):
        super().__init__(why)
        self.why = why

    def text(self):
        # why is built by resolver/exchange.py; a word from $DNSCACHEIP in it is quoted with repr()
        return b"Unable to find a DNS server: %s. (#4.3.0)\n" % self.why.encode("ascii", "backslashreplace")


# --- TLS ---
# Reasons an address was not used over TLS (tlspolicy.Plan keeps them for TLSRequired),
# the note a cleartext fallback adds to K, and the K text over TLS.

TLS_NOT_OFFERED = b"no STARTTLS offered"
TLS_INJECTION = b"plaintext after the STARTTLS reply (response injection)"
NO_TLS_NOTE = b"sent in cleartext: no server would do TLS"

_TLS_KINDS = {  # tlsc-io's TLSC_FAILURE kinds (notes/tlsc-io-spec.md)
    "verify": b"certificate not trusted: %s",
    "name": b"certificate name mismatch: %s",
    "timeout": b"TLS handshake timed out: %s",
    "closed": b"connection closed during the TLS handshake: %s",
    "local": b"unusable TLS file: %s",
}


def tls_reason(kind, text):
    """Why a handshake failed, from tlsc-io's failure kind and text (bytes)."""
    if kind == "injection":
        return TLS_INJECTION
    return _TLS_KINDS.get(kind, b"TLS handshake error: %s") % safe_text(text)


def starttls_refused(reply_text):
    """The reason for a STARTTLS answered with other than 220: the reply's last line."""
    return b"STARTTLS refused: " + safe_text(reply_text.rstrip(b"\n").split(b"\n")[-1])


def cleartext_note(why):
    return b"sent in cleartext: the TLS handshake failed (%s)" % why


def accepted_text(text, protocol=None, cipher=None, verified=False, note=b""):
    """K text with how the message travelled added to its first line:
    "IP accepted message. (TLSv1.3 verified, cipher X)" or "(NOTE)" for a cleartext fallback."""
    first, newline, rest = text.partition(b"\n")
    if protocol:
        first += b" (%s %s" % (safe_text(protocol), b"verified" if verified else b"unverified")
        first += b", cipher %s)" % safe_text(cipher) if cipher else b")"
    if note:
        first += b" (%s)" % safe_text(note)
    return first + newline + rest


class TLSLocal(Failure):
    """tlsc-io could not use a file named by a TLS control file (its text names the file)."""

    def __init__(self, why):
        super().__init__(why)
        self.why = why

    def text(self):
        return b"Unable to start TLS: %s. (#4.3.0)\n" % safe_text(self.why)


# --- DNS and connections ---

class SourceUnusable(Failure):
    """control/outgoingip names an address this machine cannot connect from."""

    def __init__(self, address, reason):
        super().__init__(address, reason)
        self.address, self.reason = address, reason

    def text(self):
        return b"Unable to bind the source address %s named by control/outgoingip: %s. (#4.3.0)\n" % (
            self.address.encode("ascii", "replace"), self.reason.encode("ascii", "replace"))


class ResumeInvalid(Failure):
    """qmail-remote --qremote-resume=STATE with a STATE it cannot read (only tlsc-io should pass it)."""

    def __init__(self, why):
        super().__init__(why)
        self.why = why

    def text(self):
        return b"qmail-remote: invalid --qremote-resume state (an internal option): %s. (#4.3.0)\n" % (
            safe_text(self.why.encode("ascii", "replace")[:200]))


class Remembered(Failure):
    """A failure carried over a --qremote-resume (letter and text as they were)."""

    def __init__(self, letter, message):
        super().__init__(letter, message)
        self.letter, self.message = letter, message

    def text(self):
        return self.message


# --- addresses that cannot be a mail server (resolver, resolve.py) ---

class UnusableAddresses(Failure):
    """Every address found is one no mail server can have (0.0.0.0/8, multicast, ...).

    skipped: [(name bytes, ip text, why text)]. D, like an MX with no address
    (#5.4.4); Z (#4.3.0) for an smtproutes relay, which the admin must fix.
    """

    def __init__(self, skipped, letter=D):
        super().__init__(skipped)
        self.skipped, self.letter = skipped, letter

    def text(self):
        shown = ["%s of %s (%s)" % (ip, safe_name(name).decode("ascii"), why) for name, ip, why in self.skipped[:4]]
        if len(self.skipped) > 4:
            shown.append("%d more" % (len(self.skipped) - 4))
        code = b"#5.4.4" if self.letter == D else b"#4.3.0"
        return b"Sorry, no address found can be a mail server's; skipped %s. (%s)\n" % (
            "; ".join(shown).encode("ascii"), code)
