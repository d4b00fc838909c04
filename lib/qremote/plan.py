"""The plan of qmail-remote's connection loop: pure decisions and their state, no I/O.

The STARTTLS policy (control/tlsstrictness, read only when control/trustanchors names
anchors; doc/starttls.html):
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

A Plan is where the loop stands: the Attempts still to try in this pass, the targets
kept for pass 2 (strictness 1), why addresses were given up for TLS, what was tried
(for the report when the deadline passes), the last failure of a server before TLS,
and the deadline of the whole opening (control/timeoutopening): every connect,
greeting, EHLO, STARTTLS and handshake over all addresses ends by then, however many
addresses DNS gave.

Addresses of one MX (same name and preference) are one group, raced by connect.py;
those a race did not try go back in front (put_back), so every address gets its
chance to do TLS.

The plan crosses one exec: when tlsc-io's handshake fails it execs qmail-remote again
with `--qremote-resume=STATE` (dump/load below), and the loop goes on where it
stood, without DNS or smtproutes, under the policy and deadline it started with.
Callers change a Plan only through its methods.
"""

from . import failures
from .candidates import PROTOCOLS, QMTPS, SMTPS

# What to do with a connection whose server will not do TLS although the policy wants it.
CLEAR, SKIP = "clear", "skip"
MAX_KEPT = 8  # reasons and tried addresses kept for the report (the rest are counted)


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


class Kept:
    """(ip, why) pairs for a report: the first MAX_KEPT, and how many more there were."""

    __slots__ = ("pairs", "more")

    def __init__(self, pairs=(), more=0):
        self.pairs, self.more = list(pairs), more

    def add(self, ip, why):
        if len(self.pairs) < MAX_KEPT:
            self.pairs.append((ip, failures.safe_text(why)))
        else:
            self.more += 1

    def __bool__(self):
        return bool(self.pairs)


class Plan:
    __slots__ = ("policy", "todo", "later", "reasons", "tried", "pass_no", "last_failure", "deadline", "budget",
                 "source", "helohost", "auth")

    def __init__(self, policy, targets=(), deadline=float("inf"), budget=0, source=None, helohost=None, auth=None):
        self.policy = policy
        self.source = source      # the route's or domainips' localip (text, maybe "%ifname"), or None: outgoingip
        self.helohost = helohost  # domainips' HELO name (bytes), or None: control/helohost
        self.auth = auth          # the route's credentials reference (routes.reference), or None: no AUTH
        self.todo = [Attempt(t) for t in targets]  # Attempts left in this pass, in order
        self.later = []           # targets for the cleartext pass 2 (strictness 1)
        self.reasons = Kept()     # why addresses would not do TLS (TLSRequired)
        self.tried = Kept()       # what happened to each address tried (OpeningTimedOut)
        self.pass_no = 1
        self.last_failure = None  # the last server failure before TLS (stock's report if all fail)
        self.deadline = deadline  # time.monotonic() value: the system-wide clock, the same after exec
        self.budget = budget      # control/timeoutopening, for the report

    # --- the loop ---

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

    def remaining(self, now):
        """Seconds left of the opening's deadline (<= 0: time is up)."""
        return self.deadline - now

    def tls_wanted(self, attempt):
        """STARTTLS when the policy wants TLS, and always on a route with AUTH: a password
        goes only inside TLS where the server offers it (doc/auth.html)."""
        return (self.policy.wanted or self.auth is not None) and not attempt.cleartext

    def unreachable(self, target, why):
        """A connect to target failed (refused, timed out)."""
        self.tried.add(target.ip.encode(), why)

    def server_failed(self, attempt, failure):
        """The server failed before TLS (greeting, EHLO, a drop): stock's report if all fail."""
        self.last_failure = failure
        self.tried.add(attempt.target.ip.encode(), failure.text().split(b"\n")[0])

    def without_tls(self, attempt, why):
        """TLS was wanted but this server will not do it on this connection (STARTTLS not
        offered or refused): CLEAR to go on in cleartext, SKIP to leave it with QUIT."""
        if self.policy.strictness == 0:
            return CLEAR
        self._give_up(attempt, why)
        return SKIP

    def broken_tls(self, attempt, why):
        """The connection cannot be used for TLS nor kept (plaintext injected after 220)."""
        self._handshake_failed(attempt, why)

    def _give_up(self, attempt, why):
        """This address will not do TLS: remember why, and keep it for pass 2 at strictness 1."""
        self.reasons.add(attempt.target.ip.encode(), why)
        self.tried.add(attempt.target.ip.encode(), why)
        if self.policy.strictness == 1 and self.pass_no == 1:
            self.later.append(attempt.target)

    def _handshake_failed(self, attempt, why):
        if attempt.target.protocol in (QMTPS, SMTPS):
            # implicit TLS: this port has no cleartext to fall back to, at any strictness
            ip = attempt.target.ip.encode()
            self.tried.add(ip, why)
            if self.policy.strictness >= 2:
                self.reasons.add(ip, why)
            implicit = failures.QMTPSFailed if attempt.target.protocol == QMTPS else failures.SMTPSFailed
            self.last_failure = implicit(ip, why)
            return
        if self.policy.strictness == 0:
            self.todo.insert(0, Attempt(attempt.target, cleartext=True, note=failures.cleartext_note(why),
                                        retry=True))
            self.tried.add(attempt.target.ip.encode(), why)
        else:
            self._give_up(attempt, why)

    def handshake_failed(self, why):
        """On resume: tlsc-io could not complete the handshake with the first attempt's address."""
        self._handshake_failed(self.todo.pop(0), why)

    def exhausted(self, now):
        """The failure to report once no address is left or time is up, or None (stock's "no connection")."""
        if self.remaining(now) <= 0:
            return failures.OpeningTimedOut(self.budget, self.tried.pairs, self.tried.more)
        if self.policy.strictness >= 2 and self.reasons:
            return failures.TLSRequired(self.reasons.pairs, self.reasons.more)
        return self.last_failure

    # --- the codec: --qremote-resume=STATE ---
    #
    # STATE = "4" ; PASS ; DEADLINE ; BUDGET ; POLICY ; NAMES ; TODO ; LATER ; REASONS ; TRIED ; LAST ; SOURCE
    #         ; HELO ; AUTH
    #   POLICY   strictness/hex(anchors)/hex(clientcert)/hex(clientkey) (empty hex: none)
    #   NAMES    hex(name),...: each MX name once; targets refer to it by index
    #   TODO     ip/port/pref/index/protocol/flags/hex(note),...  flags "c" cleartext, "r" retry;
    #            the first is the one handed to tlsc-io; protocol smtp, smtps, qmtp or qmtps
    #   LATER    ip/port/pref/index/protocol,...
    #   REASONS, TRIED  more,hex(ip)/hex(why),...
    #   LAST     hex(letter + text) of the last server failure, or empty
    #   SOURCE   the route's or domainips' localip (maybe with %ifname), or empty
    #   HELO     hex(domainips' HELO name), or empty
    #   AUTH     the credentials reference (name:line:hex, never a secret), or empty
    # Every part is bounded (32 MX names of at most 255 octets, 16 addresses each,
    # MAX_KEPT reasons), so the state always fits one argv word (128 KiB).

    VERSION = "4"

    def dump(self, first=None):
        """STATE, with attempt `first` (handed to tlsc-io) in front of the todo list."""
        todo = ([first] if first is not None else []) + self.todo
        names = {}
        for target in [a.target for a in todo] + self.later:
            names.setdefault(target.name, len(names))

        def target(t):
            return "%s/%d/%d/%d/%s" % (t.ip, t.port, t.pref, names[t.name], t.protocol)

        def kept(k):
            return ",".join(["%d" % k.more] + ["%s/%s" % (ip.hex(), why.hex()) for ip, why in k.pairs])

        policy = self.policy
        failure = self.last_failure
        return ";".join([
            self.VERSION, "%d" % self.pass_no, repr(self.deadline), "%d" % self.budget,
            "%d/%s/%s/%s" % (policy.strictness, (policy.anchors or b"").hex(), (policy.clientcert or b"").hex(),
                             (policy.clientkey or b"").hex()),
            ",".join(name.hex() for name in names),
            ",".join("%s/%s/%s" % (target(a.target), ("c" if a.cleartext else "") + ("r" if a.retry else ""),
                                   a.note.hex()) for a in todo),
            ",".join(target(t) for t in self.later),
            kept(self.reasons), kept(self.tried),
            (failure.letter + failure.text()).hex() if failure is not None else "",
            self.source or "", (self.helohost or b"").hex(), self.auth or ""])

    @classmethod
    def load(cls, state):
        """The Plan in STATE; ValueError when it is malformed."""
        from .candidates import Target, normal_ip

        parts = state.split(";")
        if len(parts) != 14 or parts[0] != cls.VERSION:
            raise ValueError("not a version %s state" % cls.VERSION)
        _, pass_no, deadline, budget, policy, names, todo, later, reasons, tried, last, source, helo, auth = parts
        strictness, anchors, cert, key = policy.split("/")
        if strictness not in ("0", "1", "2"):
            raise ValueError("bad strictness %r" % strictness)
        names = [bytes.fromhex(name) for name in names.split(",")] if names else []

        def target(fields):
            ip, port, pref, index, protocol = fields
            found = normal_ip(ip)
            if found is None:
                raise ValueError("bad address %r" % ip)
            if protocol not in PROTOCOLS:
                raise ValueError("bad protocol %r" % protocol)
            return Target(found[0], found[1], int(port), int(pref), names[int(index)], protocol)

        def kept(text):
            more, *pairs = text.split(",")
            return Kept([tuple(bytes.fromhex(x) for x in pair.split("/", 1)) for pair in pairs], int(more))

        plan = cls(Policy(int(strictness), bytes.fromhex(anchors) or None, bytes.fromhex(cert) or None,
                          bytes.fromhex(key) or None), (), float(deadline), int(budget))
        if source and normal_ip(source.partition("%")[0]) is None:
            raise ValueError("bad source address %r" % source)
        plan.source = source or None
        plan.helohost = bytes.fromhex(helo) or None
        name, _, rest = auth.partition(":")
        line, _, pinned = rest.partition(":")
        if auth and not (name in ("smtproutes", "authsenders") and line.isdigit() and pinned and
                         all(c in "0123456789abcdef" for c in pinned)):
            raise ValueError("bad credentials reference")
        plan.auth = auth or None
        plan.pass_no = int(pass_no)
        for item in filter(None, todo.split(",")):
            fields = item.split("/")
            if len(fields) != 7 or fields[5] not in ("", "c", "r", "cr"):
                raise ValueError("bad attempt %r" % item)
            plan.todo.append(Attempt(target(fields[:5]), cleartext="c" in fields[5], note=bytes.fromhex(fields[6]),
                                     retry="r" in fields[5]))
        if not plan.todo:
            raise ValueError("no attempt: the first one is the one whose handshake failed")
        plan.later = [target(item.split("/")) for item in filter(None, later.split(","))]
        plan.reasons, plan.tried = kept(reasons), kept(tried)
        last = bytes.fromhex(last)
        if last and last[:1] not in (failures.D, failures.Z):
            raise ValueError("bad last failure")
        plan.last_failure = failures.Remembered(last[:1], last[1:]) if last else None
        return plan
