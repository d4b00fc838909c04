"""Pure decisions about where to connect: IP literals, targets, the ipme/prefme rule.

No DNS and no sockets here; the resolver package produces MX answers, this module orders and
filters them, connect.py tries them.
"""

import _socket  # the C module: socket.py itself costs ~13 ms of imports (enum)

from . import failures

AF_INET, AF_INET6 = _socket.AF_INET, _socket.AF_INET6
SMTP, QMTP, QMTPS, SMTPS = "smtp", "qmtp", "qmtps", "smtps"  # what a target speaks (routes.py)
PROTOCOLS = (SMTP, QMTP, QMTPS, SMTPS)
NO_MX_ME = 100000  # stock: "prefme" when none of my addresses is an MX
ROUTED = 300000    # stock: a routed delivery never excludes anything


class Target:
    """One address to try: ip (text), its family, the port, the MX preference, the MX name,
    and the protocol (routes.SMTP, QMTP or QMTPS: what qmtproutes said)."""

    __slots__ = ("ip", "family", "port", "pref", "name", "protocol")

    def __init__(self, ip, family, port=25, pref=0, name=b"", protocol=SMTP):
        self.ip, self.family, self.port, self.pref, self.name = ip, family, port, pref, name
        self.protocol = protocol

    def __repr__(self):
        return "Target(%r, %r, %r, %r, %r)" % (self.ip, self.port, self.pref, self.name, self.protocol)

    def __eq__(self, other):
        return isinstance(other, Target) and (self.ip, self.port, self.pref, self.name, self.protocol) == (
            other.ip, other.port, other.pref, other.name, other.protocol)


def normal_ip(text):
    """(canonical text, family) of an IPv4 or IPv6 address, or None."""
    for family in (AF_INET, AF_INET6):
        try:
            packed = _socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
        return _socket.inet_ntop(family, packed), family
    return None


# ::ffff:a.b.c.d, an IPv4 address in IPv6 form: everywhere (ipme, tcpto, the unusable
# ranges) it counts as the IPv4 address a.b.c.d. The one place this rule is written.
IPV4_MAPPED = b"\0" * 10 + b"\xff\xff"


def ipv4_of(packed):
    """The 4 bytes of an IPv4 address given packed as itself or IPv4-mapped; None for IPv6."""
    if len(packed) == 4:
        return packed
    return packed[12:] if packed[:12] == IPV4_MAPPED else None


def unusable_reason(ip, family):
    """Why ip (canonical text) cannot be a mail server's address, as a short text; None if it can.

    Connecting to 0.0.0.0 or :: reaches this very host; multicast, broadcast and the
    reserved 240.0.0.0/4 are no unicast host at all. IPv4-mapped forms alike.
    """
    packed = _socket.inet_pton(family, ip)
    if family == AF_INET6:
        if packed == bytes(16):
            return "unspecified address ::"
        if packed[0] == 0xFF:
            return "multicast ff00::/8"
        packed = ipv4_of(packed)
        if packed is None:
            return None
    if packed[0] == 0:
        return "this network 0.0.0.0/8"
    if 224 <= packed[0] < 240:
        return "multicast 224.0.0.0/4"
    if packed == b"\xff" * 4:
        return "broadcast 255.255.255.255"
    if packed[0] >= 240:
        return "reserved 240.0.0.0/4"
    return None


def usable_targets(targets):
    """(kept, skipped) of targets: skipped is [(name, ip, why)] for those unusable_reason refuses."""
    kept, skipped = [], []
    for target in targets:
        why = unusable_reason(target.ip, target.family)
        if why is None:
            kept.append(target)
        else:
            skipped.append((target.name, target.ip, why))
    return kept, skipped


def parse_literal(host):
    """An address literal: 1.2.3.4, [1.2.3.4], [IPv6:2001:db8::1] or [2001:db8::1]; else None.

    Stock also accepts dotted quads with parts over 255 (taken mod 256); here such a
    name is not a literal, so it goes to DNS and fails there.
    """
    try:
        text = host.decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if text[:5].lower() == "ipv6:":
            text = text[5:]
            found = normal_ip(text)
            return found if found and found[1] == AF_INET6 else None
        return normal_ip(text)
    found = normal_ip(text)
    return found if found and found[1] == AF_INET else None


def is_me(ip, ipme):
    """ip is one of mine; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) counts as a.b.c.d."""
    if ip in ipme:
        return True
    if ":" not in ip:
        return False
    v4 = ipv4_of(_socket.inet_pton(AF_INET6, ip))
    return v4 is not None and _socket.inet_ntop(AF_INET, v4) in ipme


def apply_prefme(targets, ipme, routed):
    """Stock's loop protection: if one of my addresses is an MX, use only better MXes.

    prefme is the lowest preference among targets that are mine (NO_MX_ME if none,
    ROUTED for a smtproutes route); only targets with a strictly lower preference
    stay. Nothing left: the stock AmbiguousMX bounce.
    """
    prefme = ROUTED if routed else min(
        (t.pref for t in targets if is_me(t.ip, ipme)), default=NO_MX_ME)
    kept = [t for t in targets if t.pref < prefme]
    if not kept:
        raise failures.AmbiguousMX()
    return kept
