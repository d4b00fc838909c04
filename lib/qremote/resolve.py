"""host (or its smtproutes route) -> the resolver's Lookup: the ordered Targets to try, and
what DNSSEC (DANE), MTA-STS and the trace need from the same answers.

IP literals need no DNS; everything else goes to the resolver package, which is
imported only here and only when a name must be looked up, so a delivery through an
IP route never loads it.
"""

from . import failures
from .candidates import Target, parse_literal, unusable_reason
from .routes import MX


class Literal:
    """What an IP literal (a domain or relay given as an address) has instead of a Lookup:
    its one target, no DNSSEC (no DANE), no MTA-STS, no answers."""

    __slots__ = ("targets",)
    dane, sts, answers = {}, None, None  # answers None: the trace lists the target itself

    def __init__(self, targets):
        self.targets = targets


def lookup_for(host, route, timeoutdns=None, dane=False, sts=False):
    """The resolver's Lookup for host, or the route's relay (targets, dane, sts, answers):
    dane asks each host's TLSA beside its addresses when DNSSEC validated them; sts asks
    _mta-sts.<host> TXT beside the MX query (MX deliveries only). Raises the stock DNS
    failures."""
    if route is not MX:
        literal = parse_literal(route.relay)
        if literal is not None:
            return Literal(usable_literal(Target(literal[0], literal[1], route.port, 0, route.relay, route.protocol),
                                          failures.Z))
        from . import resolver
        lookup = resolver.relay_lookup(route.relay, route.port, timeoutdns, dane=dane)
        for target in lookup.targets:
            target.protocol = route.protocol
        return lookup
    literal = parse_literal(host)
    if literal is not None:
        return Literal(usable_literal(Target(literal[0], literal[1], 25, 0, host), failures.D))
    from . import resolver
    return resolver.mx_lookup(host, timeoutdns, dane=dane, sts=sts)


def usable_literal(target, letter):
    """[target], or UnusableAddresses when no mail server can have its address: D for
    the recipient's domain, Z for an smtproutes relay (the admin must fix the route)."""
    why = unusable_reason(target.ip, target.family)
    if why is not None:
        raise failures.UnusableAddresses([(target.name, target.ip, why)], letter)
    return [target]


def require_some(targets):
    if not targets:
        raise failures.NoAddress()
    return targets
