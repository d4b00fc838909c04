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
those kept for pass 2 (strictness 1), the reasons addresses were given up, and the
pass number. When tlsc-io's handshake fails it execs qmail-remote again with the plan
encoded in argv (chainargv.encode_resume), so the loop resumes without DNS.
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
    """One target as the plan holds it: cleartext=True means "do not try STARTTLS"."""

    __slots__ = ("target", "cleartext", "note")

    def __init__(self, target, cleartext=False, note=b""):
        self.target, self.cleartext, self.note = target, cleartext, note


class Plan:
    __slots__ = ("policy", "todo", "later", "reasons", "pass_no")

    def __init__(self, policy, todo, later=(), reasons=(), pass_no=1):
        self.policy = policy
        self.todo = list(todo)       # Attempts left in this pass, in order
        self.later = list(later)     # targets for the cleartext pass 2 (strictness 1)
        self.reasons = list(reasons)  # (ip bytes, why bytes) for the final Z at strictness >= 1
        self.pass_no = pass_no

    def next_group(self):
        """The next Attempts sharing one MX (name, preference), or [] when the plan is done."""
        if not self.todo and self.pass_no == 1 and self.later and self.policy.strictness == 1:
            self.pass_no = 2
            self.todo = [Attempt(t, cleartext=True) for t in self.later]
            self.later = []
        if not self.todo:
            return []
        first = self.todo[0].target
        count = 1
        while count < len(self.todo) and (self.todo[count].target.name, self.todo[count].target.pref) == (
                first.name, first.pref):
            count += 1
        group, self.todo = self.todo[:count], self.todo[count:]
        return group

    def after_ehlo(self, attempt, capabilities):
        if attempt.cleartext or not self.policy.wanted:
            return CLEAR
        if "STARTTLS" in capabilities:
            return STARTTLS
        return self._without_tls(attempt, b"no STARTTLS offered")

    def after_starttls_refused(self, attempt, reply_text):
        return self._without_tls(attempt, b"STARTTLS refused: " + reply_text.rstrip(b"\n").split(b"\n")[-1])

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
            note = b"sent in cleartext: the TLS handshake failed (%s)" % why
            self.todo.insert(0, Attempt(attempt.target, cleartext=True, note=note))
        else:
            self.give_up(attempt, why)

    def exhausted(self):
        """The failure to report once every address has been tried, or None to use stock's."""
        if self.policy.strictness >= 2 and self.reasons:
            return failures.TLSRequired(self.reasons)
        return None
