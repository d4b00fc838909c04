"""The STARTTLS policy of qmail-remote: pure decisions, no I/O.

control/tlsstrictness (read only when control/trustanchors names anchors):
  0  STARTTLS when offered; cleartext on the same connection when it is not offered or
     the STARTTLS command is refused; when the handshake itself fails, a new connection
     to the same address in cleartext (Postfix's "may" level), noted in the K report.
     Certificates are not required to verify.
  1  pass 1: every address is tried for one that does STARTTLS (those that do not are
     left with QUIT); only when none does, pass 2 goes over the addresses that answered
     in pass 1 again, in cleartext.
  2  never cleartext: no STARTTLS, a refused STARTTLS, a failed handshake or a
     certificate that does not verify against the anchors with the MX host name: the
     address is skipped; none left -> Z naming why.

A Plan is where the connection loop stands: the addresses still to try in this pass,
those kept for pass 2 (strictness 1), the reasons addresses were given up, the pass
number, and the last failure of a server before TLS (greeting, EHLO, a drop). When
tlsc-io's handshake fails it execs qmail-remote again with the plan encoded in argv
(chainargv.encode_resume), so the loop resumes without DNS.

Addresses of one MX (same name and preference) are one group, raced by connect.py;
those a race did not try go back in front (put_back), so every address gets its
chance to do TLS. Plaintext injected after the 220 to STARTTLS counts as a failed
handshake (failures.TLS_INJECTION).
"""

from . import failures

# What to do once EHLO has shown what the server offers, or STARTTLS has been answered.
STARTTLS, CLEAR, SKIP = "starttls", "clear", "skip"


class Policy:
    __slots__ = ("strictness", "anchors", "clientcert", "clientkey")

    def __init__(self, strictness=0, anchors=None, clientcert=None, clientkey=None):
        self.strictness = strictness
        self.anchors = anchors  # path (bytes) of a PEM bundle, or of a directory when it ends in '/'
        self.clientcert, self.clientkey = clientcert, clientkey

    @property
    def wanted(self):
        return bool(self.anchors)

    @property
    def verify(self):
        return self.strictness >= 2


class Attempt:
    """One target as the plan holds it: cleartext=True means "do not try STARTTLS";
    retry=True marks the cleartext reconnection after a failed handshake; note is what
    the K report adds when the message goes in cleartext although TLS was wanted."""

    __slots__ = ("target", "cleartext", "note", "retry")

    def __init__(self, target, cleartext=False, note=b"", retry=False):
        self.target, self.cleartext, self.note, self.retry = target, cleartext, note, retry


class Plan:
    __slots__ = ("policy", "todo", "later", "reasons", "pass_no", "last_failure")

    def __init__(self, policy, todo, later=(), reasons=(), pass_no=1, last_failure=None):
        self.policy = policy
        self.todo = list(todo)       # Attempts left in this pass, in order
        self.later = list(later)     # targets for the cleartext pass 2 (strictness 1)
        self.reasons = list(reasons)  # (ip bytes, why bytes) for the final Z at strictness >= 1
        self.pass_no = pass_no
        self.last_failure = last_failure  # the last server failure before TLS (stock's report if all fail)

    def next_group(self):
        """The next Attempts sharing one MX (name, preference), or [] when the plan is done.

        A cleartext retry after a failed handshake is a group of its own:
        it must go to the same address, not race the others.
        """
        if not self.todo and self.pass_no == 1 and self.later and self.policy.strictness == 1:
            self.pass_no = 2
            self.todo = [Attempt(t, cleartext=True, note=failures.NO_TLS_NOTE) for t in self.later]
            self.later = []
        if not self.todo:
            return []
        if self.todo[0].retry:
            return [self.todo.pop(0)]
        first = self.todo[0].target
        count = 1
        while count < len(self.todo) and (self.todo[count].target.name, self.todo[count].target.pref) == (
                first.name, first.pref):
            count += 1
        group, self.todo = self.todo[:count], self.todo[count:]
        return group

    def put_back(self, attempts):
        """Attempts of a group that were not tried (another address won the race): next in line."""
        self.todo[:0] = attempts

    def after_ehlo(self, attempt, capabilities):
        if attempt.cleartext or not self.policy.wanted:
            return CLEAR
        if "STARTTLS" in capabilities:
            return STARTTLS
        return self._without_tls(attempt, failures.TLS_NOT_OFFERED)

    def after_starttls_refused(self, attempt, reply_text):
        return self._without_tls(attempt, failures.starttls_refused(reply_text))

    def _without_tls(self, attempt, why):
        if self.policy.strictness == 0:
            return CLEAR
        self.give_up(attempt, why)
        return SKIP

    def give_up(self, attempt, why):
        """This address will not do TLS: remember why, and keep it for pass 2 at strictness 1."""
        self.reasons.append((attempt.target.ip.encode(), why))
        if self.policy.strictness == 1 and self.pass_no == 1:
            self.later.append(attempt.target)

    def handshake_failed(self, attempt, why):
        """tlsc-io could not complete the handshake with attempt's address (resume time)."""
        if self.policy.strictness == 0:
            self.todo.insert(0, Attempt(attempt.target, cleartext=True, note=failures.cleartext_note(why),
                                         retry=True))
        else:
            self.give_up(attempt, why)

    def exhausted(self):
        """The failure to report once every address has been tried, or None (stock's "no connection")."""
        if self.policy.strictness >= 2 and self.reasons:
            return failures.TLSRequired(self.reasons)
        return self.last_failure


def server_name(target):
    """The name tlsc-io is given (-k) for target: SNI, and what the certificate must match.

    The MX host name from DNS, the domain itself for an implicit MX, or the smtproutes
    relay, without a final dot. For an IP literal (a literal domain, or a relay given
    as an address) there is no name: the address itself is given, so that verification
    (strictness 2) needs a certificate for that address (an iPAddress subjectAltName);
    the ssl module sends no SNI for an address, as RFC 6066 wants. The same for a
    name that is no valid host name.
    """
    from .candidates import parse_literal

    name = target.name.rstrip(b".")
    # a name DNS could only print escaped (a dot or an odd byte inside a label) is no
    # host name OpenSSL would take: treat it as having none
    if not name or b"\\" in name or parse_literal(name) is not None:
        return target.ip.encode()
    return name


def handshake_failure(value):
    """tlsc-io's TLSC_FAILURE ("KIND: TEXT") -> (kind, why) with why as reports say it."""
    kind, sep, text = value.partition(": ")
    if not sep or not kind.isalpha():
        kind, text = "handshake", value
    return kind, failures.tls_reason(kind, text.encode("ascii", "replace")[:300])
