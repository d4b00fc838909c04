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

Each Attempt carries its target's TLS Rule (tlsrule.py: tlsdestinations, DANE,
MTA-STS, tlsstrictness, memory). The strictness words above are the rules' modes:
0 is "may", 1 "first", 2 "must"; without trustanchors the mode is "none". A plan
built from the Policy alone (no rules given) is exactly the plan of tlsstrictness.
"""

from . import failures, tlsrule
from .candidates import PROTOCOLS, QMTPS, SMTPS
from .tlsrule import FIRST, MAY, MUST, NONE, SKIP as SKIPPED

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

    __slots__ = ("target", "cleartext", "note", "retry", "rule")

    def __init__(self, target, cleartext=False, note=b"", retry=False, rule=None):
        self.target, self.cleartext, self.note, self.retry = target, cleartext, note, retry
        self.rule = rule  # its tlsrule.Rule; None: the plan's tlsstrictness rule


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
                 "source", "helohost", "auth", "required", "ruled", "default", "later_rules")

    def __init__(self, policy, targets=(), deadline=float("inf"), budget=0, source=None, helohost=None, auth=None,
                 rules=None):
        """rules: the Rule of each target (tlsrule.decide), or None: tlsstrictness's for all."""
        self.policy = policy
        self.source = source      # the route's or domainips' localip (text, maybe "%ifname"), or None: outgoingip
        self.helohost = helohost  # domainips' HELO name (bytes), or None: control/helohost
        self.auth = auth          # the route's credentials reference (routes.reference), or None: no AUTH
        self.todo = []            # Attempts left in this pass, in order
        self.later = []           # targets for the cleartext pass 2 (mode first)
        self.later_rules = []     # their rules (missing at the end: the default)
        self.reasons = Kept()     # why addresses would not do TLS (TLSRequired)
        self.tried = Kept()       # what happened to each address tried (OpeningTimedOut)
        self.pass_no = 1
        self.last_failure = None  # the last server failure before TLS (stock's report if all fail)
        self.deadline = deadline  # time.monotonic() value: the system-wide clock, the same after exec
        self.budget = budget      # control/timeoutopening, for the report
        self.required = ""        # what required TLS of an address given up (TLSRequired names it)
        self.ruled = rules is not None  # rules other than tlsstrictness's: the state says them (version 5)
        self.default = default = tlsrule.from_policy(policy)
        for target, rule in zip(targets, rules if rules is not None else [default] * len(targets)):
            if rule.mode == SKIPPED:  # DANE lookup failed, not an MX of the MTA-STS policy: never tried
                self.reasons.add(target.ip.encode(), rule.why)
                self.tried.add(target.ip.encode(), rule.why)
                self.required = self.required or rule.required
                continue
            self.todo.append(Attempt(target, rule=rule))

    # --- the loop ---

    def next_group(self):
        """The next Attempts sharing one MX (name, preference), or [] when the plan is done.

        A cleartext retry after a failed handshake is a group of its own:
        it must go to the same address, not race the others.
        """
        if not self.todo and self.pass_no == 1 and self.later:
            self.pass_no = 2
            rules = self.later_rules + [self.default] * (len(self.later) - len(self.later_rules))
            self.todo = [Attempt(t, cleartext=True, note=failures.NO_TLS_NOTE, rule=rule)
                         for t, rule in zip(self.later, rules)]
            self.later, self.later_rules = [], []
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
        rule = self.rule_of(attempt)
        if attempt.cleartext or rule.mode == NONE and rule.origin != "none":  # `!` of tlsdestinations: never
            return False
        return rule.mode != NONE or self.auth is not None

    def rule_of(self, attempt):
        """The TLS rule of attempt: its own, or the plan's tlsstrictness rule."""
        return attempt.rule if attempt.rule is not None else self.default

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
        if self.rule_of(attempt).mode in (MAY, NONE):
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
        rule = self.rule_of(attempt)
        if rule.mode == FIRST and self.pass_no == 1:
            self.later_rules[len(self.later):] = []
            self.later_rules += [self.default] * (len(self.later) - len(self.later_rules)) + [rule]
            self.later.append(attempt.target)
        elif rule.mode == MUST:
            self.required = self.required or rule.required

    def _handshake_failed(self, attempt, why):
        if attempt.target.protocol in (QMTPS, SMTPS):
            # implicit TLS: this port has no cleartext to fall back to, at any strictness
            ip = attempt.target.ip.encode()
            self.tried.add(ip, why)
            rule = self.rule_of(attempt)
            if rule.mode == MUST:
                self.reasons.add(ip, why)
                self.required = self.required or rule.required
            implicit = failures.QMTPSFailed if attempt.target.protocol == QMTPS else failures.SMTPSFailed
            self.last_failure = implicit(ip, why)
            return
        rule = self.rule_of(attempt)
        if rule.mode == NONE or rule.mode == MAY and rule.fallback:
            self.todo.insert(0, Attempt(attempt.target, cleartext=True, note=failures.cleartext_note(why),
                                        retry=True, rule=rule))
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
        if self.required and self.reasons:
            if self.required == tlsrule.STRICTNESS_2:  # today's text, word for word
                return failures.TLSRequired(self.reasons.pairs, self.reasons.more)
            return failures.TLSRequiredBy(self.required, self.reasons.pairs, self.reasons.more)
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
    # Version 5, when some target's rule is not the tlsstrictness rule (tlsdestinations,
    # DANE, MTA-STS, memory, domaincerts): the same, each TODO item with a 8th field and
    # each LATER item with a 6th, the index of its rule in RULES, and two more parts:
    #   ; RULES ; REQUIRED ; PATHS
    #   RULES    tlsrule.Rule.encode() words, each distinct rule once
    #   REQUIRED hex(what required TLS of an address given up), or empty
    #   PATHS    hex(path),...: each file path (or domaincerts reference) of the rules once; the
    #            rules refer to it by index, 0-2 being POLICY's anchors, clientcert, clientkey
    # Every part is bounded (32 MX names of at most 255 octets, 16 addresses each,
    # MAX_KEPT reasons, a rule per MX name at most with tlsrule's caps on TLSA data,
    # pins and names), so the state always fits one argv word (128 KiB).

    VERSION = "4"
    RULED_VERSION = "5"

    def dump(self, first=None):
        """STATE, with attempt `first` (handed to tlsc-io) in front of the todo list."""
        todo = ([first] if first is not None else []) + self.todo
        names = {}
        for target in [a.target for a in todo] + self.later:
            names.setdefault(target.name, len(names))
        later_rules = self.later_rules + [self.default] * (len(self.later) - len(self.later_rules))
        all_rules = [self.rule_of(a) for a in todo] + later_rules
        ruled = self.required not in ("", tlsrule.STRICTNESS_2) or any(r != self.default for r in all_rules)
        # the policy's paths (POLICY) are indices 0-2 of the paths, not written twice; a
        # placeholder with NUL (no control file holds one) stands for a missing one
        words, paths = {}, {self.policy.anchors or b"\0a": 0, self.policy.clientcert or b"\0c": 1,
                            self.policy.clientkey or b"\0k": 2}
        encoded = {}  # id(rule) -> its word: rules are shared objects, encode each once
        for rule in all_rules:
            if id(rule) not in encoded:
                encoded[id(rule)] = rule.encode(paths)
            words.setdefault(encoded[id(rule)], len(words))

        def index(rule):
            return "/%d" % words[encoded[id(rule)]] if ruled else ""

        def target(t):
            return "%s/%d/%d/%d/%s" % (t.ip, t.port, t.pref, names[t.name], t.protocol)

        def kept(k):
            return ",".join(["%d" % k.more] + ["%s/%s" % (ip.hex(), why.hex()) for ip, why in k.pairs])

        policy = self.policy
        failure = self.last_failure
        parts = [
            self.RULED_VERSION if ruled else self.VERSION, "%d" % self.pass_no, repr(self.deadline),
            "%d" % self.budget,
            "%d/%s/%s/%s" % (policy.strictness, (policy.anchors or b"").hex(), (policy.clientcert or b"").hex(),
                             (policy.clientkey or b"").hex()),
            ",".join(name.hex() for name in names),
            ",".join("%s/%s/%s%s" % (target(a.target), ("c" if a.cleartext else "") + ("r" if a.retry else ""),
                                     a.note.hex(), index(self.rule_of(a))) for a in todo),
            ",".join(target(t) + index(rule) for t, rule in zip(self.later, later_rules)),
            kept(self.reasons), kept(self.tried),
            (failure.letter + failure.text()).hex() if failure is not None else "",
            self.source or "", (self.helohost or b"").hex(), self.auth or ""]
        if ruled:
            parts += [",".join(words), self.required.encode("latin-1").hex(),
                      ",".join(p.hex() for p in list(paths)[3:])]
        return ";".join(parts)

    @classmethod
    def load(cls, state):
        """The Plan in STATE; ValueError when it is malformed."""
        from .candidates import Target, normal_ip

        parts = state.split(";")
        ruled = parts[0] == cls.RULED_VERSION
        if len(parts) != (17 if ruled else 14) or parts[0] not in (cls.VERSION, cls.RULED_VERSION):
            raise ValueError("not a version %s or %s state" % (cls.VERSION, cls.RULED_VERSION))
        _, pass_no, deadline, budget, policy, names, todo, later, reasons, tried, last, source, helo, auth = parts[:14]
        strictness, anchors, cert, key = policy.split("/")
        paths = [bytes.fromhex(anchors) or None, bytes.fromhex(cert) or None, bytes.fromhex(key) or None]
        paths += [bytes.fromhex(p) for p in parts[16].split(",")] if ruled and parts[16] else []
        rules = [tlsrule.Rule.decode(word, paths) for word in parts[14].split(",")] if ruled and parts[14] else []
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

        def rule(fields, count):
            """The rule of an item with count fields without its rule index."""
            if len(fields) != count + ruled:
                raise ValueError("bad item %r" % "/".join(fields))
            if not ruled:
                return None
            found = rules[int(fields[count])]
            if found.mode == SKIPPED:
                raise ValueError("a skipped target in the plan")
            return found

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
            found = rule(fields, 7)
            if fields[5] not in ("", "c", "r", "cr"):
                raise ValueError("bad attempt %r" % item)
            plan.todo.append(Attempt(target(fields[:5]), cleartext="c" in fields[5], note=bytes.fromhex(fields[6]),
                                     retry="r" in fields[5], rule=found))
        if not plan.todo:
            raise ValueError("no attempt: the first one is the one whose handshake failed")
        for item in filter(None, later.split(",")):
            fields = item.split("/")
            found = rule(fields, 5)
            plan.later.append(target(fields[:5]))
            if found is not None:
                plan.later_rules.append(found)
        plan.reasons, plan.tried = kept(reasons), kept(tried)
        last = bytes.fromhex(last)
        if last and last[:1] not in (failures.D, failures.Z):
            raise ValueError("bad last failure")
        plan.last_failure = failures.Remembered(last[:1], last[1:]) if last else None
        plan.required = bytes.fromhex(parts[15]).decode("latin-1") if ruled else (
            tlsrule.STRICTNESS_2 if plan.policy.strictness == 2 and plan.policy.wanted else "")
        plan.ruled = ruled
        return plan
