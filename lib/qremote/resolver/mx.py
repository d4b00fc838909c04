"""The MX, A, AAAA, TLSA and TXT decisions: a host or relay name in, ordered
candidates.Target out, with each target's DANE state and the MTA-STS TXT values.

Rules 6 (results and failures), 7, 8 (order), 11 (the name to ask for), 12 (DNSSEC and
DANE) and 13 (MTA-STS) of the package docstring (qremote/resolver/__init__.py); the
wire is codec.py's, the I/O exchange.py's.
"""

import os

from .. import failures, hostname
from ..candidates import AF_INET, AF_INET6, Target, parse_literal, usable_targets
from .codec import (MAX_NAME, TYPE_A, TYPE_AAAA, TYPE_MX, TYPE_NAMES, TYPE_TLSA, TYPE_TXT, Name, Question,
                    fresh_ids, name_from_ascii, record_text, records_for)
from .exchange import NXDOMAIN, OK, SOFT, Deadlines, Result, Stage, nameservers

MAX_MX = 32           # MX targets used, the best ones
MAX_ADDRESSES = 16    # addresses used per target, families shared fairly


# --- decisions (pure) ------------------------------------------------------------------------

def query_name(host):
    """A host (bytes) as the Name to ask for, or None if it cannot be one (rule 11).

    A non-ASCII host is UTF-8 to be turned into A-labels by hostname.to_ascii (IDNA
    2008), the same encoder as the TLS server name's (rule 1).
    """
    if host.isascii():
        return name_from_ascii(host)
    if b"\\" in host:
        return None
    try:
        text = hostname.to_ascii(host.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError, hostname.InvalidName
        return None
    return name_from_ascii(text.encode("ascii"))


def name_bytes(name):
    """A Name as Target.name: text without the final dot (rule 11)."""
    return name.text()


def order_mx(exchangers, entropy=os.urandom):
    """(preference, name) pairs by preference, ties in random order; a name keeps its best preference."""
    best = {}
    for preference, name in exchangers:
        if name not in best or preference < best[name]:
            best[name] = preference
    return sorted(((p, n) for n, p in best.items()), key=lambda pair: (pair[0], entropy(8)))


def is_null_mx(exchangers):
    """RFC 7505: the only MX (after merging duplicates) points at the root."""
    return len(exchangers) == 1 and exchangers[0][1].is_root()


def share_addresses(ipv6, ipv4, limit=MAX_ADDRESSES):
    """At most limit addresses, IPv6 first, each family keeping half unless the other needs less."""
    take6 = min(len(ipv6), max(limit // 2, limit - len(ipv4)))
    take4 = min(len(ipv4), limit - take6)
    return [(ip, AF_INET6) for ip in ipv6[:take6]] + [(ip, AF_INET) for ip in ipv4[:take4]]


def addresses(name, result_a, result_aaaa):
    """(addresses [(ip, family)], soft) of a name from its A and AAAA Results.

    soft: one of the two queries failed softly, or its CNAME chain was too long (NXDOMAIN
    and NODATA just give nothing).
    """
    ipv4 = records_for(name, TYPE_A, result_a.records) if result_a.status == OK else []
    ipv6 = records_for(name, TYPE_AAAA, result_aaaa.records) if result_aaaa.status == OK else []
    soft = SOFT in (result_a.status, result_aaaa.status) or ipv4 is None or ipv6 is None
    return share_addresses(ipv6 or [], ipv4 or []), soft


def one_name_targets(name, label, port, results, routed=False):
    """Targets (preference 0) of one name from its two Results: a relay (routed), or an implicit MX."""
    found, soft = addresses(name, results[0], results[1])
    targets, skipped = usable_targets([Target(ip, family, port, 0, label) for ip, family in found])
    if targets:
        return targets
    if soft:
        raise failures.DnsSoft()
    if skipped:
        raise failures.UnusableAddresses(skipped, failures.Z if routed else failures.D)
    raise failures.DnsHard(label)  # stock: no address record for the name itself is "no such host"


def mx_list_targets(ordered, results_by_name, port=25):
    """Targets of ordered (preference, name) pairs, given each looked-up name's two Results.

    An address no mail server can have is skipped; an MX left with none is like an MX
    without addresses.
    """
    targets, soft = [], False
    for preference, name in ordered:
        label = name_bytes(name)
        literal = parse_literal(label)
        if literal is not None:
            targets.append(Target(literal[0], literal[1], port, preference, label))
            continue
        found, name_soft = addresses(name, *results_by_name[name])
        soft = soft or name_soft
        targets.extend(Target(ip, family, port, preference, label) for ip, family in found)
    targets, skipped = usable_targets(targets)
    if not targets:
        if soft:
            raise failures.DnsSoft()
        raise failures.UnusableAddresses(skipped) if skipped else failures.NoAddress()
    return targets


# --- DANE and MTA-STS decisions (pure) ---------------------------------------------------------

SECURE, UNUSABLE, NONE, INSECURE, FAILED = "secure", "unusable", "none", "insecure", "failed"
DIGEST_SIZES = {1: 32, 2: 64}  # SHA2-256, SHA2-512; matching type 0 is the whole data


class Dane:
    """A target's DANE state (rule 12): state, usable records [(usage, selector, mtype, data)],
    base (the TLSA base domain, bytes), why (text, for "failed")."""

    __slots__ = ("state", "records", "base", "why")

    def __init__(self, state, records=(), base=None, why=None):
        self.state, self.records, self.base, self.why = state, list(records), base, why

    def __repr__(self):
        return "Dane(%r, %r, %r, %r)" % (self.state, self.records, self.base, self.why)

    def __eq__(self, other):
        return isinstance(other, Dane) and (self.state, self.records, self.base, self.why) == (
            other.state, other.records, other.base, other.why)


class Lookup:
    """What a lookup found: targets (as mx_targets gives them), dane {Target.name: Dane},
    sts (None: not asked; [TXT values]; "failed"), answers (for the trace:
    [(qname, qtype, status, ad, [record texts])], str except ad)."""

    __slots__ = ("targets", "dane", "sts", "answers")

    def __init__(self, targets, dane, sts, answers):
        self.targets, self.dane, self.sts, self.answers = targets, dane, sts, answers

    def __repr__(self):
        return "Lookup(%r, %r, %r)" % (self.targets, self.dane, self.sts)


def prefixed(labels, name):
    """name with labels put in front, or None when the result would be too long to exist."""
    longer = Name(tuple(labels) + name.labels)
    return longer if len(longer.wire) <= MAX_NAME else None


def tlsa_name(name, port):
    """_PORT._tcp.name (RFC 6698 section 3), or None when it cannot exist."""
    return prefixed((b"_%d" % port, b"_tcp"), name)


def usable_tlsa(record):
    """RFC 7672 section 3.1: DANE-TA(2) and DANE-EE(3) only, selectors 0 and 1, matching
    types 0, 1 and 2; a digest of the wrong length (or empty data) is unusable (RFC 7671
    section 4: not a reason to fail the whole RRset, unlike dnspython, which refuses it)."""
    usage, selector, mtype, data = record
    return (usage in (2, 3) and selector in (0, 1) and mtype in (0, 1, 2)
            and len(data) == DIGEST_SIZES.get(mtype, len(data)) and len(data) > 0)


def host_is_secure(result_a, result_aaaa):
    """Both address answers came and were validated (NODATA and NXDOMAIN included)."""
    return all(r.ad and r.status != SOFT for r in (result_a, result_aaaa))


# A TLSA name too long to exist, for a validated host: as a validated NXDOMAIN
_NO_SUCH_TLSA = Result(NXDOMAIN, (), True)


def dane_state(name, port, result_a, result_aaaa, result_tlsa):
    """The Dane of host name (a Name) from its address Results and the Result of its TLSA
    query _port._tcp.name (None: not asked, because what led to the name was not validated)."""
    base = name_bytes(name)
    if result_tlsa is None:
        return Dane(INSECURE, base=base)
    if not host_is_secure(result_a, result_aaaa):
        if (result_a.ad or result_aaaa.ad) and SOFT in (result_a.status, result_aaaa.status):
            # half validated, half failed: bogus data looks like this; never a quiet downgrade
            return Dane(FAILED, base=base, why="address lookup failed for a DNSSEC-signed host")
        return Dane(INSECURE, base=base)
    if result_tlsa.status == SOFT:
        return Dane(FAILED, base=base, why="TLSA lookup failed (SERVFAIL or no answer)")
    if not result_tlsa.ad:
        return Dane(INSECURE, base=base)
    if result_tlsa.status == NXDOMAIN:
        return Dane(NONE, base=base)
    found = records_for(tlsa_name(name, port), TYPE_TLSA, result_tlsa.records)
    if found is None:
        return Dane(FAILED, base=base, why="TLSA lookup failed (CNAME chain too long)")
    if not found:
        return Dane(NONE, base=base)
    usable = [record for record in found if usable_tlsa(record)]
    return Dane(SECURE, usable, base) if usable else Dane(UNUSABLE, base=base)


def txt_values(name, result):
    """The TXT values (bytes) of name from its Result: [] when there is none, "failed"."""
    if name is None or result.status == NXDOMAIN:
        return []
    if result.status == SOFT:
        return "failed"
    found = records_for(name, TYPE_TXT, result.records)
    return "failed" if found is None else found


def answer_lines(questions, results):
    """The trace's view of a stage: (qname, qtype, status, ad, [record texts]) per question."""
    lines = []
    for question, result in zip(questions, results):
        found = records_for(question.name, question.rdtype, result.records) or []
        lines.append((question.name.text().decode("ascii", "backslashreplace"), TYPE_NAMES[question.rdtype],
                      result.status, result.ad, [record_text(question.rdtype, value) for value in found]))
    return lines


# --- the API -------------------------------------------------------------------------------

def host_questions(names, tlsa_port=None, first=0, taken=()):
    """Stage 2's Questions for names: A, AAAA and (with tlsa_port) TLSA of each, distinct ids
    (none in taken: the ids of queries still in flight on the same Stage); and per name the
    indexes of its (A, AAAA, TLSA or None) answers, counted from first (the number of
    questions of the stages before, on the same Stage)."""
    ids = fresh_ids(3 * len(names), taken=taken)
    questions, slots = [], []
    for name in names:
        a, aaaa = len(questions), len(questions) + 1
        questions.append(Question(name, TYPE_A, ids[a]))
        questions.append(Question(name, TYPE_AAAA, ids[aaaa]))
        owner = tlsa_name(name, tlsa_port) if tlsa_port else None
        if owner is not None:
            questions.append(Question(owner, TYPE_TLSA, ids[len(questions)]))
        slots.append((first + a, first + aaaa, first + len(questions) - 1 if owner is not None else None))
    return questions, slots


def addresses_done(slots):
    """Stage 2 may end once every A and AAAA is answered and no secure host's TLSA is pending:
    a TLSA decides TLS only for a secure host, so only then is it worth waiting for (rule 12)."""
    def enough(results):
        for a, aaaa, tlsa in slots:
            if results[a] is None or results[aaaa] is None:
                return False
            if tlsa is not None and results[tlsa] is None and host_is_secure(results[a], results[aaaa]):
                return False
        return True
    return enough


def names_stage(names, port, ask_tlsa, stage, deadline):
    """Run stage 2 for names on stage (a Stage, maybe with queries of stage 1 still in flight:
    they go on, never waited for): ({name: ((A, AAAA) Results, Dane or None (DANE off))},
    [Result of every question of the Stage])."""
    questions, slots = host_questions(names, port if ask_tlsa else None, len(stage.queries), stage.by_ident)
    results = stage.then(questions, deadline, addresses_done(slots)).run()
    found = {}
    for name, (a, aaaa, tlsa) in zip(names, slots):
        if ask_tlsa is None:
            dane = None
        elif not ask_tlsa:
            dane = dane_state(name, port, results[a], results[aaaa], None)
        else:
            dane = dane_state(name, port, results[a], results[aaaa], _NO_SUCH_TLSA if tlsa is None else results[tlsa])
        found[name] = ((results[a], results[aaaa]), dane)
    return found, results


def mx_lookup(host, timeoutdns=0, servers=None, dane=True, sts=False):
    """A mail domain's (bytes) Lookup: Targets in MX order, their Dane, the _mta-sts TXT values.

    Raises the stock DNS failures as mx_targets does. dane: ask each MX host's TLSA
    (_25._tcp) beside its addresses when the MX answer was validated (rule 12); sts: ask
    _mta-sts.<host> TXT beside the MX query, never waiting for it (rule 13).
    """
    servers = nameservers() if servers is None else servers
    deadlines = Deadlines(timeoutdns)
    name = query_name(host)
    if name is None:
        raise failures.DnsHard(host)
    sts_name = prefixed((b"_mta-sts",), name) if sts else None
    ids = fresh_ids(2)
    questions = [Question(name, TYPE_MX, ids[0])]
    if sts_name is not None:
        questions.append(Question(sts_name, TYPE_TXT, ids[1]))
    # stage 1 ends with the MX answer; a TXT still in flight goes on through stage 2 on the
    # same sockets (no round trip of its own, and it holds nothing)
    stage = Stage(questions, servers, deadlines.next_stage(), enough=lambda done: done[0] is not None)
    try:
        mx_result = stage.run(last=False)[0]
        if mx_result.status == SOFT:
            raise failures.DnsSoft()
        if mx_result.status == NXDOMAIN:
            raise failures.DnsHard(host)
        exchangers = records_for(name, TYPE_MX, mx_result.records)
        if exchangers is None:  # a CNAME chain too long to follow: temporary, never a bounce
            raise failures.DnsSoft()
        exchangers = order_mx(exchangers)
        if exchangers and is_null_mx(exchangers):
            raise failures.NullMX(host)
        ordered = [(p, n) for p, n in exchangers if not n.is_root()][:MAX_MX]  # a root target among others: unusable
        names = [n for _, n in ordered if parse_literal(name_bytes(n)) is None] if exchangers else [name]
        ask_tlsa = mx_result.ad if dane else None  # None: DANE off, False: not validated
        found, results = names_stage(names, 25, ask_tlsa, stage, deadlines.next_stage())
    finally:
        stage.close()
    answers = answer_lines([query.question for query in stage.queries], results)
    sts_values = (txt_values(sts_name, results[1]) if sts_name is not None else []) if sts else None
    if not exchangers:  # implicit MX
        (addresses_results, state), = found.values()
        targets = one_name_targets(name, host, 25, addresses_results)
        return Lookup(targets, {host: state or Dane(NONE)}, sts_values, answers)
    targets = mx_list_targets(ordered, {n: pair for n, (pair, _) in found.items()})
    states = {}
    for _, n in ordered:
        label = name_bytes(n)
        state = found[n][1] if n in found else Dane(INSECURE, base=label)  # a literal has no TLSA
        states[label] = state or Dane(NONE)
    return Lookup(targets, states, sts_values, answers)


def relay_lookup(relay, port, timeoutdns=0, servers=None, dane=True):
    """A smtproutes relay name's Lookup: its A and AAAA records only (never MX), and with dane
    its TLSA (_PORT._tcp.relay) beside them; sts is None."""
    servers = nameservers() if servers is None else servers
    name = query_name(relay)
    if name is None:
        raise failures.DnsHard(relay)
    ask_tlsa = True if dane else None  # nothing came before the relay name: nothing to validate
    stage = Stage([], servers, 0)
    found, results = names_stage([name], port, ask_tlsa, stage, Deadlines(timeoutdns).next_stage())
    answers = answer_lines([query.question for query in stage.queries], results)
    (pair, state), = found.values()
    targets = one_name_targets(name, relay, port, pair, routed=True)
    return Lookup(targets, {relay: state or Dane(NONE)}, None, answers)


def mx_targets(host, timeoutdns=0, servers=None):
    """The Targets of a mail domain (bytes), MX groups in order; raises the stock DNS failures."""
    return mx_lookup(host, timeoutdns, servers, dane=False).targets


def relay_targets(relay, port, timeoutdns=0, servers=None):
    """The Targets of a smtproutes relay name: its A and AAAA records only, never MX."""
    return relay_lookup(relay, port, timeoutdns, servers, dane=False).targets
