"""Every report text of the chain, as a table: one exception class per way a delivery
can end other than success, plus the recipient and K texts.

Rules of this module:
1. Callers raise; they never pick a report letter or write a text. Each failure is one
   row of TABLE: the class it is a kind of, its letter (D permanent, Z temporary, or
   BY_REPLY: D for a 5xx, Z for anything else), whether the server is still there to
   be told QUIT (polite), its template and its fields. The row becomes an exception
   class the first time a caller names it (failures.GreetingFailed): building some
   forty classes at every start cost about 1 ms of CPU in each program of the chain.
   The few failures whose text is more than a template are classes below the table.
   Texts are in stock qmail-remote's wording where stock has the case (notqmail's
   qmail-remote.c: its temp_* and perm_* functions).
2. A field is rendered by its kind, so no template sanitises by hand:
   RAW bytes we made ourselves (an IP we connected to), NAME a host or address as
   stock's outsafe() shows it, TEXT a line from a library, a server or a file (one
   printable ASCII line), SAID a server's reply as "Remote host said: " + its text.
3. Texts are bytes, end with LF, and are built here only; report.py writes them.

Letters are plain bytes constants, not an Enum: importing enum costs about 5 ms of
CPU in every process of the chain, and the letters are only ever written out.
"""

from .sanitise import safe_name, safe_text

K = b"K"  # message accepted
Z = b"Z"  # message deferred (temporary)
D = b"D"  # message bounced (permanent)
RCPT_OK = b"r"
RCPT_PERM = b"h"
RCPT_TEMP = b"s"
BY_REPLY = b"?"  # not a letter: it follows the server's reply: letter_for()

RAW, NAME, TEXT, SAID = "raw", "name", "text", "said"


def remote_said(reply):
    """Stock's "Remote host said:" suffix for a reply (empty when there is none)."""
    if reply is None or not reply.text:
        return b""
    return b"Remote host said: " + reply.text


def letter_for(reply):
    """D for a 5xx reply, Z for 4xx and for anything malformed (never a guess of success)."""
    return D if reply is not None and reply.code is not None and reply.code >= 500 else Z


_RENDER = {
    RAW: lambda value: value if isinstance(value, bytes) else str(value).encode("ascii", "replace"),
    NAME: safe_name,
    TEXT: safe_text,
    SAID: remote_said,
}


class Failure(Exception):
    """Base: a delivery outcome other than K. Subclasses are the rows of the table."""

    LETTER = Z
    template = b""
    fields = ()     # ((name, kind), ...): the constructor's arguments, in order
    polite = False  # the server is still listening: say QUIT before reporting

    def __init__(self, *args, **named):
        super().__init__(*args)
        values = dict(zip((name for name, _ in self.fields), args))
        values.update(named)
        for name, _ in self.fields:
            setattr(self, name, values.get(name))

    @property
    def letter(self):
        return letter_for(getattr(self, "reply", None)) if self.LETTER is BY_REPLY else self.LETTER

    def text(self):
        return self.template % {name.encode(): _RENDER[kind](getattr(self, name)) for name, kind in self.fields}


# --- failures whose text is more than a template ---

class AtPeer(Failure):
    """A failure while talking to one server: its text names the server's IP."""
    fields = (("ip", RAW), ("reply", SAID))


class ConnectionDied(AtPeer):
    """The connection was lost, or a reply took too long or was too long."""
    fields = (("ip", RAW), ("duplicate", RAW), ("why", RAW), ("too_long", RAW))
    DUPLICATE = b" Possible duplicate!"

    def text(self):
        dup = self.DUPLICATE if self.duplicate else b""
        if self.too_long:
            return b"Connected to %s but its reply was too long; connection dropped.%s (#4.4.2)\n" % (self.ip, dup)
        return b"Connected to %s but connection died.%s (#4.4.2)\n" % (self.ip, dup)


class Internal(Failure):
    """A bug or an unexpected system condition: deferred, never a traceback."""
    template = b"%(program)s: internal error (%(kind)s: %(detail)s); will try again later. (#4.3.0)\n"
    fields = (("program", TEXT), ("error", RAW))

    def text(self):
        return self.template % {b"program": safe_text(self.program), b"kind": safe_text(type(self.error).__name__),
                                b"detail": safe_text(str(self.error)[:200])}


class Remembered(Failure):
    """A failure carried over a --qremote-resume (letter and text as they were)."""
    template = b"%(message)s"
    fields = (("remembered", RAW), ("message", RAW))

    @property
    def letter(self):
        return self.remembered


class UnusableAddresses(Failure):
    """Every address found is one no mail server can have (0.0.0.0/8, multicast, ...).

    skipped: [(name bytes, ip text, why text)]. D, like an MX with no address
    (#5.4.4); Z (#4.3.0) for an smtproutes relay, which the admin must fix.
    """
    MAX_LISTED = 4
    template = b"Sorry, no address found can be a mail server's; skipped %(skipped)s. (%(code)s)\n"
    fields = (("skipped", RAW), ("chosen", RAW))

    @property
    def letter(self):
        return self.chosen or D

    def text(self):
        shown = [b"%s of %s (%s)" % (safe_text(ip), safe_name(name), safe_text(why))
                 for name, ip, why in self.skipped[:self.MAX_LISTED]]
        if len(self.skipped) > self.MAX_LISTED:
            shown.append(b"%d more" % (len(self.skipped) - self.MAX_LISTED))
        return self.template % {b"skipped": b"; ".join(shown), b"code": b"#5.4.4" if self.letter == D else b"#4.3.0"}


def listing(pairs, most, more=0):
    """"ip: why; ip: why; ..." of at most `most` pairs; more: how many were left out before."""
    if not pairs:
        return b"nothing was tried"
    shown = b"; ".join(b"%s: %s" % (ip, why) for ip, why in pairs[:most])
    return shown + (b"; ..." if len(pairs) > most or more else b"")


class OpeningTimedOut(Failure):
    """The whole opening (every connect, greeting, EHLO, STARTTLS and handshake over all
    addresses) ran past control/timeoutopening: what was tried, as far as it fits."""
    MAX_LISTED = 8
    template = (b"Sorry, no server could be reached within the %(seconds)s seconds of control/timeoutopening "
                b"(%(tried)s). (#4.4.1)\n")
    fields = (("seconds", RAW), ("tried", RAW), ("more", RAW))  # tried: [(ip bytes, why bytes)], sanitised by Plan

    def text(self):
        return self.template % {b"seconds": b"%d" % self.seconds,
                                b"tried": listing(self.tried, self.MAX_LISTED, self.more)}


class TLSRequired(Failure):
    """tlsstrictness 2 and no server would take the message over verified TLS."""
    MAX_REASONS = 8
    template = (b"Sorry, no server would take the message over TLS, as control/tlsstrictness 2 requires "
                b"(%(reasons)s). (#4.7.5)\n")
    fields = (("reasons", RAW), ("more", RAW))  # [(ip bytes, why bytes)], and how many were not kept

    def text(self):
        return self.template % {b"reasons": listing(self.reasons, self.MAX_REASONS, self.more)}


# --- the table: name: (kind of, letter, polite, template, fields or None to inherit) ---

_PEER = (("ip", RAW), ("reply", SAID))
TABLE = {
    # invocation, home, control files, the message
    "Usage": ("Failure", D, False, b"I (qmail-remote) was invoked improperly. (#5.3.5)\n", ()),
    "NoHome": ("Failure", Z, False, b"Unable to switch to home directory. (#4.3.0)\n", ()),
    "NoResources": ("Failure", Z, False, b"System resources temporarily unavailable. (#4.3.0)\n", ()),
    "PartialLine": ("Failure", D, False, b"SMTP cannot transfer messages with partial final lines. (#5.6.2)\n", ()),
    "MessageUnreadable": ("Failure", Z, False, b"Unable to read message. (#4.3.0)\n", ()),
    # a control file exists but cannot be read (stock: "Unable to read control files")
    "ControlUnreadable": ("Failure", Z, False,
                          b"Unable to read control files: control/%(name)s: %(reason)s. (#4.3.0)\n",
                          (("name", TEXT), ("reason", TEXT))),
    # it can be read, but its content cannot be used
    "ControlInvalid": ("ControlUnreadable", Z, False,
                       b"Invalid control file control/%(name)s: %(reason)s. (#4.3.0)\n", None),
    "NoHelohost": ("Failure", Z, False, b"Unable to read control files: neither control/helohost nor control/me "
                   b"gives a name. (#4.3.0)\n", ()),
    # an envelope address that would put a control byte on the wire (command injection)
    "BadAddress": ("Failure", D, False, b"Sorry, the %(role)s address contains a CR, LF or NUL byte, or an angle "
                   b"bracket outside quotes, which SMTP cannot carry: %(address)s. (#5.1.3)\n",
                   (("role", TEXT), ("address", NAME))),
    # the next program of the chain
    "ChainBroken": ("Failure", Z, False, b"Unable to run %(path)s: %(reason)s. (#4.3.0)\n",
                    (("path", NAME), ("reason", TEXT))),
    "UsageIO": ("Failure", D, False, b"%(program)s was invoked improperly: %(why)s. (#5.3.5)\n",
                (("program", TEXT), ("why", TEXT))),
    "NoChannel": ("Failure", Z, False,
                  b"%(program)s: no connection on fds %(fdr)s and %(fdw)s: %(reason)s. (#4.3.0)\n",
                  (("program", TEXT), ("fdr", RAW), ("fdw", RAW), ("reason", TEXT))),
    # --qremote-resume=STATE that cannot be read (only tlsc-io should pass it)
    "ResumeInvalid": ("Failure", Z, False,
                      b"qmail-remote: invalid --qremote-resume state (an internal option): %(why)s. (#4.3.0)\n",
                      (("why", TEXT),)),
    # tlsc-io could not go on and said so itself (-R)
    "TLSCFailed": ("Failure", Z, False, b"tlsc-io: %(why)s. (#4.3.0)\n", (("why", TEXT),)),

    # DNS
    "DnsSoft": ("Failure", Z, False, b"Sorry, I couldn't find any host by that name. (#4.1.2)\n", ()),
    "DnsHard": ("Failure", D, False, b"Sorry, I couldn't find any host named %(host)s. (#5.1.2)\n",
                (("host", NAME),)),
    "NoAddress": ("Failure", D, False, b"Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n", ()),
    # RFC 7505: a single MX "0 ." says the domain takes no mail
    "NullMX": ("Failure", D, False,
               b"Sorry, %(host)s does not accept mail: it publishes a null MX (RFC 7505). (#5.1.10)\n",
               (("host", NAME),)),
    "AmbiguousMX": ("Failure", D, False, b"Sorry. Although I'm listed as a best-preference MX or A for that host,\n"
                    b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n", ()),
    # $DNSCACHEIP unusable or /etc/resolv.conf unreadable
    "NoResolver": ("Failure", Z, False, b"Unable to find a DNS server: %(why)s. (#4.3.0)\n", (("why", TEXT),)),

    # connecting, the opening, TLS
    "NoConnection": ("Failure", Z, False, b"Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n", ()),
    # control/outgoingip names an address this machine cannot connect from
    # a source address this machine cannot connect from; named: where it was given
    "SourceUnusable": ("Failure", Z, False, b"Unable to bind the source address %(address)s named by "
                       b"%(named)s: %(reason)s. (#4.3.0)\n", (("address", TEXT), ("reason", TEXT), ("named", TEXT))),
    "GreetingFailed": ("AtPeer", Z, True, b"Connected to %(ip)s but greeting failed.\n%(reply)s", _PEER),
    "HeloRejected": ("AtPeer", Z, True, b"Connected to %(ip)s but my name was rejected.\n%(reply)s", _PEER),
    # a file named by trustanchors, clientcert or clientkey cannot be used
    "TLSFileUnusable": ("Failure", Z, False, b"Unable to use %(path)s named by control/%(control)s: %(reason)s. "
                        b"(#4.3.0)\n", (("control", TEXT), ("path", NAME), ("reason", TEXT))),
    # tlsc-io could not use a file named by a TLS control file (its text names the file)
    "TLSLocal": ("Failure", Z, False, b"Unable to start TLS: %(why)s. (#4.3.0)\n", (("why", TEXT),)),

    # the transaction
    "SenderRejected": ("AtPeer", BY_REPLY, True, b"Connected to %(ip)s but sender was rejected.\n%(reply)s", _PEER),
    "NoRecipients": ("AtPeer", D, True, b"Giving up on %(ip)s.\n", _PEER),
    "DataRejected": ("AtPeer", BY_REPLY, True, b"%(ip)s failed on DATA command.\n%(reply)s", _PEER),
    "MessageRejected": ("AtPeer", BY_REPLY, True, b"%(ip)s failed after I sent the message.\n%(reply)s", _PEER),
    "TooBig": ("AtPeer", D, True, b"Connected to %(ip)s but the message (%(size)s bytes) is bigger than its SIZE "
               b"limit of %(limit)s bytes. (#5.3.4)\n", (("ip", RAW), ("size", RAW), ("limit", RAW))),
    "NeedsSmtpUtf8": ("AtPeer", D, True, b"Connected to %(ip)s but an address is not ASCII and the server does not "
                      b"offer SMTPUTF8. (#5.6.7)\n", (("ip", RAW),)),

    # QMTP (qmtproutes, qmail-remote-qmtp)
    # the package starts with the message's length: a pipe cannot say it in advance
    "QMTPNeedsFile": ("Failure", Z, False, b"QMTP needs the message in a regular file, whose length is known "
                      b"before it is sent; fd 0 is not one. (#4.3.0)\n", ()),
    "MessageChanged": ("Failure", Z, False, b"Unable to read message: its length changed while it was sent. "
                       b"(#4.3.0)\n", ()),
    # qmtproutes' QMTPS port: the handshake (tlsc-io) failed, and there is no cleartext there
    "QMTPSFailed": ("Failure", Z, False, b"Connected to %(ip)s but the QMTPS handshake failed: %(why)s. (#4.4.2)\n",
                    (("ip", RAW), ("why", TEXT))),
    # replies are read only once the whole package went out: always a possible duplicate
    "QMTPProtocol": ("AtPeer", Z, False, b"Connected to %(ip)s but it did not talk proper QMTP (%(why)s). "
                     b"Possible duplicate! (#4.4.2)\n", (("ip", RAW), ("why", TEXT))),
}


def __getattr__(name):
    """The exception class of TABLE's row `name`, made on first use and kept."""
    row = TABLE.get(name)
    if row is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    kind_of, letter, polite, template, fields = row
    base = globals().get(kind_of) or __getattr__(kind_of)
    made = type(name, (base,), {"LETTER": letter, "polite": polite, "template": template,
                                "fields": base.fields if fields is None else fields, "__module__": __name__})
    globals()[name] = made
    return made


# --- what is not a failure: recipient reports and the K text ---

def recipient_report(ip, reply):
    """(letter, text) for the reply to one RCPT: r, or h/s with stock's text."""
    if reply.ok:
        return RCPT_OK, b""
    letter = RCPT_PERM if letter_for(reply) == D else RCPT_TEMP
    return letter, b"%s does not like recipient.\n%s" % (ip, remote_said(reply))


def accepted(ip, reply, protocol=None, cipher=None, verified=False, note=b"", by=None):
    """The K text: stock's "IP accepted message." and the server's reply, with how the
    message travelled added to the first line: "(TLSv1.3 verified, cipher X)" over TLS,
    or "(NOTE)" when it went in cleartext although TLS was wanted. by: tlsc-io's
    SSL_PEER_VERIFIED_BY (bytes), said in s/qmail's words (VERIFIED_BY_WORDS)."""
    first = b"%s accepted message." % ip
    if protocol:
        how = VERIFIED_BY_WORDS.get(by) or (b"verified" if verified else b"unverified")
        first += b" (%s %s" % (safe_text(protocol), how)
        first += b", cipher %s)" % safe_text(cipher) if cipher else b")"
    if note:
        first += b" (%s)" % safe_text(note)
    return first + b"\n" + remote_said(reply)


def qmtp_said(reply):
    """A QMTP reply's description as stock's "Remote host said:" line (foreign bytes: one
    printable line)."""
    return b"Remote host said: %s\n" % safe_text(reply.text) if reply.text else b""


def qmtp_recipient_report(ip, reply):
    """(letter, text) for a QMTP reply to one recipient: K -> r, D -> h, Z -> s."""
    if reply.ok:
        return RCPT_OK, b""
    letter = RCPT_PERM if reply.letter == D else RCPT_TEMP
    return letter, b"%s does not like recipient.\n%s" % (ip, qmtp_said(reply))


def qmtp_accepted(ip, reply, protocol=None, cipher=None, verified=False, note=b""):
    """The K text of a QMTP delivery: as accepted(), with "QMTP" or "QMTPS" said, and the
    last accepting reply."""
    first = accepted(ip, None, protocol, cipher, verified, note).rstrip(b"\n")
    return first.replace(b" accepted message.", b" accepted message over QMTP%s." % (b"S" if protocol else b""),
                         1) + b"\n" + qmtp_said(reply)


# --- why an address was not used over TLS (the Plan keeps them for TLSRequired) ---

TLS_NOT_OFFERED = b"no STARTTLS offered"
TLS_INJECTION = b"plaintext after the STARTTLS reply (response injection)"
NO_TLS_NOTE = b"sent in cleartext: no server would do TLS"
QMTP_NO_TLS = b"QMTP has no STARTTLS: qmtproutes names no QMTPS port"

TLS_KINDS = {  # tlsc-io's failure kinds (tlsc.KINDS) as reports say them
    "verify": b"certificate not trusted: %s",
    "name": b"certificate name mismatch: %s",
    "timeout": b"TLS handshake timed out: %s",
    "closed": b"connection closed during the TLS handshake: %s",
    "handshake": b"TLS handshake error: %s",
    "local": b"unusable TLS file: %s",
    # H-B tlsverify: -D, -f, -d of tlsc-io
    "dane": b"DANE verification failed: %s",
    "pin": b"certificate pinning failed: %s",
    "depth": b"certificate chain too deep: %s",
}

# H-B tlsverify: tlsc-io's SSL_PEER_VERIFIED_BY in the K text, in s/qmail's words
# ("TLS (TLSA validated)", "CERT pinning", "verified CA+DN*"); -v alone sets none: "verified"
VERIFIED_BY_WORDS = {
    b"DANE-EE": b"TLSA validated DANE-EE",
    b"DANE-TA": b"TLSA validated DANE-TA",
    b"pin": b"CERT pinning",
    b"ca": b"verified CA",
    b"ca+dn": b"verified CA+DN",
    b"ca+dn*": b"verified CA+DN*",
}


def tls_reason(kind, text):
    """Why a handshake failed, from tlsc-io's failure kind and text."""
    return TLS_KINDS[kind] % safe_text(text).rstrip(b". ")  # OpenSSL's own full stop would end ours


def starttls_refused(reply):
    """The reason for a STARTTLS answered with other than 220: the reply's last line."""
    return b"STARTTLS refused: " + safe_text(reply.text.rstrip(b"\n").split(b"\n")[-1])


def cleartext_note(why):
    return b"sent in cleartext: the TLS handshake failed (%s)" % why


# --- SMTPS and SMTP AUTH (smtproutes, authsenders; smtp/auth.py, doc/auth.html) ---
# Every AUTH failure is a Z: a broken AUTH set-up must defer, never bounce the queue.
# Texts follow s/qmail's "Connected to HOST but authentication was rejected (AUTH MECH)".

_AUTH = (("ip", RAW), ("mechanism", TEXT), ("reply", SAID))
TABLE.update({
    "AuthRejected": ("AtPeer", Z, True, b"Connected to %(ip)s but authentication was rejected (AUTH %(mechanism)s)."
                     b"\n%(reply)s", _AUTH),
    "AuthTransition": ("AtPeer", Z, True, b"Connected to %(ip)s but authentication needs a password transition "
                       b"(AUTH %(mechanism)s).\n%(reply)s", _AUTH),
    "AuthTemporary": ("AtPeer", Z, True, b"Connected to %(ip)s but authentication failed temporarily "
                      b"(AUTH %(mechanism)s).\n%(reply)s", _AUTH),
    "AuthTooWeak": ("AtPeer", Z, True, b"Connected to %(ip)s but the server finds the mechanism too weak "
                    b"(AUTH %(mechanism)s).\n%(reply)s", _AUTH),
    "AuthNeedsEncryption": ("AtPeer", Z, True, b"Connected to %(ip)s but the server requires encryption for "
                            b"this mechanism (AUTH %(mechanism)s).\n%(reply)s", _AUTH),
    "AuthProtocol": ("AtPeer", Z, True, b"Connected to %(ip)s but the AUTH %(mechanism)s exchange failed: "
                     b"%(why)s.\n%(reply)s", (("ip", RAW), ("mechanism", TEXT), ("why", TEXT), ("reply", SAID))),
    # PLAIN, LOGIN, XOAUTH2 send the secret itself: never without TLS unless the route says cleartext
    "AuthNeedsTLS": ("AtPeer", Z, True, b"Connected to %(ip)s but will not send a password in cleartext: no TLS on "
                     b"this connection and the server offers only AUTH %(mechanisms)s (the route's cleartext option "
                     b"allows it). (#4.7.0)\n", (("ip", RAW), ("mechanisms", TEXT))),
    "AuthNoMechanism": ("AtPeer", Z, True, b"Connected to %(ip)s but it does not offer AUTH %(mechanism)s, which "
                        b"the route requires (it offers: %(offered)s). (#4.7.0)\n",
                        (("ip", RAW), ("mechanism", TEXT), ("offered", TEXT))),
    # the credentials a route points to (qmail-remote-io reads them just before AUTH)
    "CredentialsUnusable": ("Failure", Z, False, b"Unable to read the AUTH credentials of %(where)s: %(why)s. "
                            b"(#4.3.0)\n", (("where", TEXT), ("why", TEXT))),
    # smtproutes' SMTPS port: the handshake failed, and there is no cleartext there
    "SMTPSFailed": ("Failure", Z, False, b"Connected to %(ip)s but the SMTPS handshake failed: %(why)s. (#4.4.2)\n",
                    (("ip", RAW), ("why", TEXT))),
    "DomainipUnusable": ("Failure", Z, False, b"Unable to bind the source address %(address)s named by "
                         b"control/domainips: %(reason)s. (#4.3.0)\n", (("address", TEXT), ("reason", TEXT))),
})


# --- per-destination TLS (tlsdestinations, domaincerts, DANE, MTA-STS; tlsrule.py) - H-C "policy" ---

class TLSRequiredBy(TLSRequired):
    """A policy other than tlsstrictness 2 required TLS and no server would do it:
    required names it ("control/tlsdestinations line 3", "DANE (the TLSA records of HOST)")."""
    template = (b"Sorry, no server would take the message over TLS, as %(required)s requires "
                b"(%(reasons)s). (#4.7.5)\n")
    fields = (("required", TEXT), ("reasons", RAW), ("more", RAW))

    def text(self):
        return self.template % {b"required": safe_text(self.required),
                                b"reasons": listing(self.reasons, self.MAX_REASONS, self.more)}
