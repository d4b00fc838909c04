"""The TLS rule of one target, and the one place that decides it (sans-IO).

qmail-remote decides one Rule per target (MX host address) from every TLS policy it
knows; tlsc-io enforces it; the plan carries it across the resume (plan.py). The
precedence (doc/tlsdestinations.html has the table; decide() is it):

  1. a tlsdestinations line for this destination (tlsdest.py: sender-bound lines
     first) - except that a usable DANE TLSA set wins over a line without `/`, `%`, `!`;
  2. DANE: usable TLSA -> must, verified by TLSA; a validated TLSA set with no usable
     record -> must, unverified (RFC 7672 2.2); the TLSA lookup failed for a secure
     host -> the host is skipped; insecure, or validated "no TLSA" -> go on. Global
     `/:` or `/*:` turn DANE off;
  3. MTA-STS enforce: an MX the policy does not list is skipped; a listed one -> must,
     verified with the system store (or control/trustanchors' anchors) and the name;
  4. tlsdestinations' global rules (`-*:` `+*:` `~*:` `=*:` `/*:`, then `*:` `?:`);
  5. tlsstrictness and trustanchors, exactly as before tlsdestinations existed;
  6. the TLS memory only raises a may/first/default-none result to must.

A Rule is plain values, so the plan's codec (encode/decode here) can carry it in one
argv word. tlsc_options() maps a Rule to tlsc-io's options: the one place to extend
when tlsc-io learns new ones.
"""

from . import failures

NONE, MAY, FIRST, MUST, SKIP = "none", "may", "first", "must", "skip"
MODES = (NONE, MAY, FIRST, MUST, SKIP)
VERIFIES = (None, "ca", "ca+dn", "ca+dn*", "pin", "dane")
ORIGINS = ("tlsstrictness", "tlsdestinations", "dane", "mta-sts", "memory", "none")
# bounds that keep the plan's state one argv word (plan.py): DANE data is the big part
# records per host, bytes per record: SHA-256/512 digests; a full-data record (matching
# type 0) is carried as the SHA-256 of its data (matching type 1), which matches the same
# certificates (a collision would break SHA-256)
MAX_TLSA, MAX_TLSA_DATA = 4, 64
MAX_PINS, MAX_NAMES = 8, 4


class Rule:
    """What TLS one target gets (doc/tlsdestinations.html). required: the text a
    TLSRequired names ("control/tlsdestinations line 3"); why: for mode SKIP, the
    reason the target is not tried; port, protocol: tlsdestinations' override of the
    target's port (None: unchanged; applied before connecting, so not encoded)."""

    __slots__ = ("mode", "fallback", "verify", "anchors", "system", "ciphers", "depth", "anonymous", "pins",
                 "tlsa", "names", "clientref", "clientcert", "clientkey", "origin", "required", "why",
                 "port", "protocol", "dane_off", "checks")

    def __init__(self, mode=NONE, origin="none", fallback=False, verify=None, anchors=None, system=False,
                 ciphers=None, depth=None, anonymous=False, pins=(), tlsa=(), names=(), clientref=None,
                 clientcert=None, clientkey=None, required="", why=b""):
        self.mode, self.origin, self.fallback, self.verify = mode, origin, fallback, verify
        self.anchors, self.system, self.ciphers, self.depth, self.anonymous = anchors, system, ciphers, depth, anonymous
        self.pins, self.tlsa, self.names = list(pins), list(tlsa), list(names)
        self.clientref, self.clientcert, self.clientkey = clientref, clientcert, clientkey
        self.required, self.why = required, why
        self.port = self.protocol = None
        self.dane_off = False
        self.checks = []  # (what names it, path): files the caller must find readable now

    def _fields(self):
        return tuple(getattr(self, name) for name in self.__slots__[:17])

    def __eq__(self, other):
        return isinstance(other, Rule) and self._fields() == other._fields()

    def __repr__(self):
        return "Rule(%s)" % ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.__slots__
                                      if getattr(self, n) not in (None, False, [], b"", ""))

    @property
    def uses_tls(self):
        return self.mode in (MAY, FIRST, MUST)

    # --- the codec: one rule as a word without , ; / (the plan's separators) ---
    # mode.fallback.verify.ANCHORS.system.hex(ciphers).depth.anonymous.pins.tlsa.names.
    #   CLIENTREF.CLIENTCERT.CLIENTKEY.origin.hex(required).hex(why)
    # pins: fingerprints joined by "+"; tlsa: U-S-M-hex(data) joined by "+"; names: hex joined by "+";
    # a path (ANCHORS, CLIENTCERT, CLIENTKEY) or the domaincerts reference (CLIENTREF) is the
    # index of a list the plan keeps once (paths): the same long strings in every rule

    def encode(self, paths):
        """The word of this rule; paths: {path: index} the plan fills (each path once)."""
        h = lambda value: (value or b"").hex()  # noqa: E731

        def path(value):
            return "" if value is None else "%d" % paths.setdefault(value, len(paths))
        return ".".join([
            self.mode, "1" if self.fallback else "", self.verify or "", path(self.anchors), "1" if self.system else "",
            h(self.ciphers and self.ciphers.encode("latin-1")), "" if self.depth is None else "%d" % self.depth,
            "1" if self.anonymous else "", "+".join(self.pins),
            "+".join("%d-%d-%d-%s" % (u, s, m, d.hex()) for u, s, m, d in self.tlsa),
            "+".join(name.hex() for name in self.names), path(self.clientref and self.clientref.encode("ascii")),
            path(self.clientcert), path(self.clientkey), self.origin, h(self.required.encode("latin-1")),
            h(self.why)])

    @classmethod
    def decode(cls, word, paths):
        """The Rule of encode()'s word with paths (a list); ValueError when it is malformed."""
        fields = word.split(".")
        if len(fields) != 17:
            raise ValueError("bad rule %r" % word[:40])
        (mode, fallback, verify, anchors, system, ciphers, depth, anonymous, pins, tlsa, names, clientref,
         cert, key, origin, required, why) = fields
        if mode not in MODES or (verify or None) not in VERIFIES or origin not in ORIGINS:
            raise ValueError("bad rule %r" % word[:40])
        if fallback not in ("", "1") or system not in ("", "1") or anonymous not in ("", "1"):
            raise ValueError("bad rule flags")
        if depth and not depth.isdigit():
            raise ValueError("bad depth")

        def path(index):
            return paths[int(index)] if index else None
        pins = pins.split("+") if pins else []
        if len(pins) > MAX_PINS or not all(_is_hex(pin) for pin in pins):
            raise ValueError("bad pins")
        records = []
        for record in filter(None, tlsa.split("+")):
            u, s, m, data = record.split("-")
            records.append((int(u), int(s), int(m), bytes.fromhex(data)))
        if len(records) > MAX_TLSA or any(len(r[3]) > MAX_TLSA_DATA for r in records):
            raise ValueError("too many or too large TLSA records")
        names = [bytes.fromhex(n) for n in names.split("+")] if names else []
        if len(names) > MAX_NAMES:
            raise ValueError("too many names")
        clientref = path(clientref)
        clientref = clientref.decode("ascii") if clientref is not None else None
        if clientref is not None and not is_reference(clientref):
            raise ValueError("bad domaincerts reference")
        return cls(mode, origin, fallback == "1", verify or None, path(anchors), system == "1",
                   bytes.fromhex(ciphers).decode("latin-1") or None, int(depth) if depth else None,
                   anonymous == "1", pins, records, names, clientref, path(cert), path(key),
                   bytes.fromhex(required).decode("latin-1"), bytes.fromhex(why))


def _is_hex(text):
    return bool(text) and all(c in "0123456789abcdef" for c in text)


def is_reference(text):
    """A domaincerts reference: "domaincerts:LINE:HEX" (tlsdest.py)."""
    name, _, rest = text.partition(":")
    line, _, pinned = rest.partition(":")
    return name == "domaincerts" and line.isdigit() and _is_hex(pinned)


STRICTNESS_2 = "control/tlsstrictness 2"


def from_policy(policy):
    """The Rule of today's tlsstrictness Policy (plan.Policy): level 5, bit for bit."""
    if not policy.wanted:
        return Rule(NONE, "none", clientcert=policy.clientcert, clientkey=policy.clientkey)
    if policy.strictness == 0:
        return Rule(MAY, "tlsstrictness", fallback=True, clientcert=policy.clientcert, clientkey=policy.clientkey)
    if policy.strictness == 1:
        return Rule(FIRST, "tlsstrictness", clientcert=policy.clientcert, clientkey=policy.clientkey)
    return Rule(MUST, "tlsstrictness", verify="ca+dn*", anchors=policy.anchors, clientcert=policy.clientcert,
                clientkey=policy.clientkey, required=STRICTNESS_2)


def _text(name):
    return failures.safe_name(name).decode("latin-1")


def decide(policy, dests=None, host=b"", mxname=b"", sender_domain=b"", dane=None, sts=None, memory=None,
           routed=False, client=None):
    """The Rule for one target.

    policy: plan.Policy (tlsstrictness, trustanchors, clientcert/clientkey);
    dests: tlsdest.Destinations or None (no control/tlsdestinations);
    host: the delivery's domain; mxname: the target's name (MX host, implicit-MX
    domain or route relay); routed: an smtproutes/authsenders route chose the relay
    (then only the relay's name is the destination);
    dane: an object with .state ("secure" "unusable" "none" "insecure" "failed"),
    .records [(u, s, m, data)], .base (bytes), .why (text) - or None (no DANE data);
    sts: an MTA-STS policy (.mode "enforce" "testing" "none", .matches(name)) or None;
    memory: what tlsmemory.remembered() says of mxname, (level, date), or just the level
    ("verified", "encrypted"), or None;
    client: (clientcert, clientkey, reference) of control/domaincerts, or None.
    """
    rule, level = _decide(policy, dests, host, mxname, sender_domain, dane, sts, routed)
    # the memory raises only what was opportunistic by a global setting (levels 4 and 5,
    # or no TLS by default): never an admin's line for this destination, never a stronger rule
    if memory and level >= 4 and (rule.mode in (MAY, FIRST) or rule.mode == NONE and rule.origin == "none"):
        rule.mode, rule.origin, rule.fallback = MUST, "memory", False
        level, date = memory if isinstance(memory, tuple) else (memory, None)
        rule.required = "the TLS memory of %s" % _text(mxname) + (
            " (it did %s TLS on %s, control/tlsmemory)" % (level, date) if date else "")
    if client is not None and rule.uses_tls:
        rule.clientcert, rule.clientkey, rule.clientref = client
    return rule


def _decide(policy, dests, host, mxname, sender_domain, dane, sts, routed):
    """(Rule, the level of the precedence table that decided it)."""
    line = None
    if dests is not None:
        names = [mxname] if routed or host.lower().rstrip(b".") == mxname.lower().rstrip(b".") else [mxname, host]
        line = dests.find(names, sender_domain)
    dane_off = dests is not None and dests.dane_off
    if line is not None:
        rule = line.rule(policy, dests)
        if not (rule.dane_off or line.prefix in (b"%", b"!")) and not dane_off:
            from_dane = _dane_rule(dane, mxname)
            if from_dane is not None and from_dane.verify == "dane":
                from_dane.port, from_dane.protocol = rule.port, rule.protocol
                return from_dane, 2
        return rule, 1
    if not dane_off:
        rule = _dane_rule(dane, mxname)
        if rule is not None:
            return rule, 2
    if sts is not None and getattr(sts, "mode", None) == "enforce":
        domain = _text(host)
        if not sts.matches(mxname):
            return Rule(SKIP, "mta-sts", required="the MTA-STS policy of %s" % domain,
                        why=b"not an MX of the MTA-STS policy of %s" % domain.encode("latin-1")), 3
        anchors = policy.anchors if policy.anchors else None
        return Rule(MUST, "mta-sts", verify="ca+dn*", anchors=anchors, system=anchors is None,
                    required="the MTA-STS policy of %s" % domain), 3
    if dests is not None and dests.global_rule is not None:
        return dests.global_rule.rule(policy, dests), 4
    rule = from_policy(policy)
    if dests is not None and dests.anonymous and rule.uses_tls and rule.verify is None:
        rule.anonymous = True
    return rule, 5


def _dane_rule(dane, mxname):
    """Level 2's Rule from a Dane-like object, or None to go on down the list."""
    state = getattr(dane, "state", None)
    if state is None or state in ("none", "insecure"):
        return None
    required = "DANE (the TLSA records of %s)" % _text(mxname)
    if state == "failed":
        # the resolver's why says what failed ("TLSA lookup failed (SERVFAIL or no answer)",
        # "address lookup failed for a DNSSEC-signed host"): as it is, never prefixed again
        why = str(getattr(dane, "why", "") or "") or "TLSA lookup failed"
        return Rule(SKIP, "dane", required=required, why=failures.safe_text(why))
    if state == "unusable":
        return Rule(MUST, "dane", required=required)
    if state != "secure":
        return Rule(SKIP, "dane", required=required, why=b"unknown DANE state")
    records = []
    for u, s, m, data in dane.records:
        if u not in (2, 3) or s not in (0, 1) or m not in (0, 1, 2) or len(records) == MAX_TLSA:
            continue
        if m == 0:
            from hashlib import sha256  # only for a full-data record: its digest matches the same

            m, data = 1, sha256(bytes(data)).digest()
        if len(data) == (32 if m == 1 else 64):  # a digest of the wrong length matches nothing
            records.append((u, s, m, bytes(data)))
    if not records:  # the resolver said usable, but none is: never unverified instead
        return Rule(SKIP, "dane", required=required, why=b"no usable TLSA record")
    base = bytes(getattr(dane, "base", b"") or mxname)
    # the names a DANE-TA certificate may match beyond the MX name itself (tlsc-io's -k)
    names = [base] if base.lower().rstrip(b".") != mxname.lower().rstrip(b".") else []
    return Rule(MUST, "dane", verify="dane", tlsa=records, names=names, required=required)


# --- tlsc-io's options ---

def tlsc_options(rule, name):
    """build_tlsc's keyword arguments for rule, with name the target's server name
    (tlsc.server_name: the MX host, the relay, or the address).

    tlsstrictness 2 passes -v alone, so its K still says "verified"; every other
    verifying rule says how (-m, -f, -D: s/qmail's words in the K). DANE: the SNI and
    first reference name is the TLSA base domain, the MX name the other (RFC 7672 3.2.2).
    """
    options = {"name": name, "anchors": None, "cert": rule.clientcert, "key": rule.clientkey, "verify": False,
               "clientref": rule.clientref, "ciphers": rule.ciphers}
    verify = rule.verify
    if verify == "dane":
        options["tlsa"] = [tuple(record) for record in rule.tlsa]
        if rule.names:
            options["name"], options["names"] = rule.names[0], [name]
    elif verify == "pin":
        options["pins"] = list(rule.pins)
    elif verify is not None:
        # anchors only when verifying: below tlsstrictness 2 any certificate is taken, and
        # loading a system bundle costs tlsc-io ~50 ms of CPU for nothing
        options["anchors"], options["system"] = rule.anchors, rule.system and not rule.anchors
        options["depth"] = rule.depth
        if rule.origin == "tlsstrictness":
            options["verify"] = True
        else:
            options["name_check"] = {"ca": "ca", "ca+dn": "dn", "ca+dn*": "dn*"}[verify]
    elif rule.anonymous:
        options["anonymous"] = True
    return options
