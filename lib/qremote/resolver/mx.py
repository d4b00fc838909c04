"""The MX, A and AAAA decisions: a host or relay name in, ordered candidates.Target out.

Rules 6 (results and failures), 7, 8 (order) and 11 (the name to ask for) of the
package docstring (qremote/resolver/__init__.py); the wire is codec.py's, the I/O
exchange.py's.
"""

import os

from .. import failures, hostname
from ..candidates import AF_INET, AF_INET6, Target, parse_literal, usable_targets
from .codec import TYPE_A, TYPE_AAAA, TYPE_MX, Question, fresh_ids, name_from_ascii, records_for
from .exchange import NXDOMAIN, OK, SOFT, Deadlines, Stage, nameservers

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


def address_questions(names):
    """The A and AAAA Questions of names, with distinct ids: [A, AAAA] per name, flattened."""
    ids = fresh_ids(2 * len(names))
    questions = []
    for i, name in enumerate(names):
        questions.append(Question(name, TYPE_A, ids[2 * i]))
        questions.append(Question(name, TYPE_AAAA, ids[2 * i + 1]))
    return questions


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


# --- the API -------------------------------------------------------------------------------

def mx_targets(host, timeoutdns=0, servers=None):
    """The Targets of a mail domain (bytes), MX groups in order; raises the stock DNS failures."""
    servers = nameservers() if servers is None else servers
    deadlines = Deadlines(timeoutdns)
    name = query_name(host)
    if name is None:
        raise failures.DnsHard(host)
    mx_result, = Stage([Question(name, TYPE_MX, fresh_ids(1)[0])], servers, deadlines.next_stage()).run()
    if mx_result.status == SOFT:
        raise failures.DnsSoft()
    if mx_result.status == NXDOMAIN:
        raise failures.DnsHard(host)
    exchangers = records_for(name, TYPE_MX, mx_result.records)
    if exchangers is None:  # a CNAME chain too long to follow: temporary, never a bounce
        raise failures.DnsSoft()
    exchangers = order_mx(exchangers)
    if not exchangers:  # implicit MX
        results = Stage(address_questions([name]), servers, deadlines.next_stage()).run()
        return one_name_targets(name, host, 25, results)
    if is_null_mx(exchangers):
        raise failures.NullMX(host)
    ordered = [(p, n) for p, n in exchangers if not n.is_root()][:MAX_MX]  # a root target among others: unusable
    names = [n for _, n in ordered if parse_literal(name_bytes(n)) is None]
    results = Stage(address_questions(names), servers, deadlines.next_stage()).run() if names else []
    by_name = {n: (results[2 * i], results[2 * i + 1]) for i, n in enumerate(names)}
    return mx_list_targets(ordered, by_name)


def relay_targets(relay, port, timeoutdns=0, servers=None):
    """The Targets of a smtproutes relay name: its A and AAAA records only, never MX."""
    servers = nameservers() if servers is None else servers
    name = query_name(relay)
    if name is None:
        raise failures.DnsHard(relay)
    results = Stage(address_questions([name]), servers, Deadlines(timeoutdns).next_stage()).run()
    return one_name_targets(name, relay, port, results, routed=True)
