"""My own addresses, for the loop protection of candidates.apply_prefme().

control/ipme, when it exists, lists them (IPv4 and IPv6, one per line; '#' comments).
Otherwise they are read from the kernel, so that out of the box the behaviour
matches stock (which asks SIOCGIFCONF, IPv4 only): every IPv4 address the kernel
calls a local host address (/proc/net/fib_trie, "/32 host LOCAL") and every IPv6
address of every interface (/proc/net/if_inet6). 0.0.0.0 and :: always count, as
0.0.0.0 does in stock: connecting to them reaches this machine.
"""

from . import control, failures
from .candidates import normal_ip

ALWAYS = ("0.0.0.0", "::")


def from_control(lines):
    found = set(ALWAYS)
    for number, line in lines:
        address = normal_ip(line.strip().decode("latin-1"))
        if address is None:
            raise failures.ControlInvalid("ipme", "line %d is not an IP address" % number)
        found.add(address[0])
    return found


def from_kernel():
    found = set(ALWAYS)
    try:
        with open("/proc/net/fib_trie", "rb") as trie:
            previous = b""
            for line in trie:
                if line.strip() == b"/32 host LOCAL" and b"|--" in previous:
                    found.add(previous.split(b"|--")[1].strip().decode("ascii"))
                previous = line
    except OSError:
        raise failures.NoResources() from None
    try:
        with open("/proc/net/if_inet6", "rb") as inet6:
            for line in inet6:
                hexa = line.split()[0].decode("ascii")
                found.add(normal_ip(":".join(hexa[i:i + 4] for i in range(0, 32, 4)))[0])
    except FileNotFoundError:
        pass  # a kernel without IPv6
    except OSError:
        raise failures.NoResources() from None
    return found


def my_addresses():
    lines = control.read_lines("ipme")
    return from_control(lines) if lines is not None else from_kernel()
