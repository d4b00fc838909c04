"""host (or its smtproutes route) -> the ordered list of Targets to try.

IP literals need no DNS; everything else goes to the resolver package, which is
imported only here and only when a name must be looked up, so a delivery through an
IP route never loads it.
"""

from . import failures
from .candidates import Target, parse_literal, unusable_reason
from .routes import MX


def targets_for(host, route, timeoutdns=None):
    """Targets for host, or the route's relay; raises the stock DNS failures."""
    if route is not MX:
        literal = parse_literal(route.relay)
        if literal is not None:
            return usable_literal(Target(literal[0], literal[1], route.port, 0, route.relay, route.protocol),
                                  failures.Z)
        from . import resolver
        targets = resolver.relay_targets(route.relay, route.port, timeoutdns)
        for target in targets:
            target.protocol = route.protocol
        return targets
    literal = parse_literal(host)
    if literal is not None:
        return usable_literal(Target(literal[0], literal[1], 25, 0, host), failures.D)
    from . import resolver
    return resolver.mx_targets(host, timeoutdns)


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
