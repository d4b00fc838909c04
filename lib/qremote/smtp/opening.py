"""Sans-IO opening of an SMTP session: greeting, EHLO (HELO if refused), STARTTLS.

It ends where transaction.py starts. The I/O shell sends what start() and receive()
return and reads one reply while `outcome` is None; qmail-remote runs it on a fresh
connection (and, when STARTTLS goes through, execs tlsc-io), qmail-remote-io runs it
inside TLS (EHLO again, RFC 3207) or by hand.

States, in order (each may be skipped by the constructor):
  GREETING  read the 220 (not after STARTTLS: the greeting came before it)
  EHLO      EHLO; a refusal -> HELO; a refused HELO -> HeloRejected
  STARTTLS  only when asked for and offered; the reply to it
Outcomes:
  READY     the server's capabilities are known; go on in cleartext (or inside TLS)
  NO_TLS    TLS was asked for, but STARTTLS is not offered or was refused (`why`); the
            connection is still usable: the policy says whether to go on or QUIT
  TLS       220 to STARTTLS and nothing after it: hand the connection to tlsc-io
  BROKEN    220 to STARTTLS but more bytes came with it (a response injection,
            CVE-2011-0411's twin): those bytes would be read as if inside TLS, so
            the connection must be dropped (`why`)
Failures raised: GreetingFailed, HeloRejected (polite: the server is still there).
Room for what comes next: an implicit-TLS start is GREETING over the TLS relay; AUTH
will be a state after EHLO.
"""

from .. import failures
from . import commands
from .ehlo import Capabilities

GREETING, EHLO, HELO, STARTTLS = "GREETING", "EHLO", "HELO", "STARTTLS"
READY, NO_TLS, TLS, BROKEN = "READY", "NO_TLS", "TLS", "BROKEN"


class Opening:
    def __init__(self, ip, helohost, greeting=True, starttls=False):
        """helohost None: no EHLO (qmail-remote-io given the capabilities in argv);
        starttls: the policy wants TLS on this connection."""
        self.ip = ip
        self.helohost = helohost
        self.starttls = starttls
        self.state = GREETING if greeting else EHLO
        self.outcome = None
        self.capabilities = None  # after EHLO (empty after HELO)
        self.why = b""            # NO_TLS and BROKEN: why, as reports say it

    def start(self):
        """The first bytes to send (none when the greeting comes first)."""
        if self.state == GREETING:
            return b""
        return self._after_greeting()

    @property
    def checks_surplus(self):
        """The shell must say whether bytes follow this reply (receive's `surplus`)."""
        return self.state == STARTTLS

    def receive(self, reply, surplus=False):
        """Digest one reply; the bytes to send next. surplus: bytes came after this reply."""
        state = self.state
        if state == GREETING:
            if reply.code != 220:
                raise failures.GreetingFailed(self.ip, reply)
            return self._after_greeting()
        if state == EHLO:
            if reply.code == 250:
                return self._after_hello(Capabilities.from_ehlo(reply))
            self.state = HELO
            return commands.helo(self.helohost)
        if state == HELO:
            if reply.code != 250:
                raise failures.HeloRejected(self.ip, reply)
            return self._after_hello(Capabilities())
        if state == STARTTLS:
            if reply.code != 220:
                return self._end(NO_TLS, failures.starttls_refused(reply))
            if surplus:
                return self._end(BROKEN, failures.TLS_INJECTION)
            return self._end(TLS)
        raise RuntimeError("no reply expected after the opening (%s)" % self.outcome)

    def _after_greeting(self):
        if self.helohost is None:
            return self._end(READY)
        self.state = EHLO
        return commands.ehlo(self.helohost)

    def _after_hello(self, capabilities):
        self.capabilities = capabilities
        if not self.starttls:
            return self._end(READY)
        if "STARTTLS" not in capabilities:
            return self._end(NO_TLS, failures.TLS_NOT_OFFERED)
        self.state = STARTTLS
        return commands.STARTTLS

    def _end(self, outcome, why=b""):
        self.outcome, self.why = outcome, why
        self.state = None
        return b""
