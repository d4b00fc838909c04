"""My own addresses, for the loop protection of candidates.apply_prefme().

control/ipme, when it exists, lists them (IPv4 and IPv6, one per line; '#' comments).
Otherwise they are read from the kernel, so that out of the box the behaviour
matches stock: the IPv4 address of every interface that is up, as stock asks them
(SIOCGIFCONF, one entry per address, then SIOCGIFFLAGS for IFF_UP), and every IPv6
address of every interface (/proc/net/if_inet6; stock has no IPv6). 0.0.0.0 and ::
always count, as 0.0.0.0 does in stock: connecting to them reaches this machine.
(Not /proc/net/fib_trie: with a full routing table it is megabytes per delivery.)
"""

import _socket

from . import control, failures
from .candidates import normal_ip

ALWAYS = ("0.0.0.0", "::")
SIOCGIFCONF, SIOCGIFFLAGS, IFF_UP = 0x8912, 0x8913, 0x1
IFNAMSIZ = 16
MAX_IFCONF = 1 << 22  # bytes: about 100000 addresses


def from_control(lines):
    return set(ALWAYS) | {ip for _, ip, _ in control.parse_addresses("ipme", lines)}


def interface_ipv4():
    """{address} of the IPv4 interfaces that are up (stock's ipme_init)."""
    import array
    import fcntl
    import struct
    ifreq = IFNAMSIZ + (24 if struct.calcsize("P") == 8 else 16)  # the union holds a struct ifmap
    found = set()
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        size = 64 * ifreq
        while True:
            buffer = array.array("B", bytes(size))
            request = struct.pack("iL", size, buffer.buffer_info()[0])
            length = struct.unpack("iL", fcntl.ioctl(sock.fileno(), SIOCGIFCONF, request))[0]
            if length + ifreq <= size or size >= MAX_IFCONF:
                break  # room to spare: nothing was left out
            size *= 2
        entries = buffer.tobytes()[:length]
        for at in range(0, length - ifreq + 1, ifreq):
            entry = entries[at:at + ifreq]
            if struct.unpack_from("H", entry, IFNAMSIZ)[0] != _socket.AF_INET:  # host byte order
                continue
            flags = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, entry[:IFNAMSIZ] + bytes(ifreq - IFNAMSIZ))
            if struct.unpack_from("H", flags, IFNAMSIZ)[0] & IFF_UP:
                found.add(_socket.inet_ntop(_socket.AF_INET, entry[IFNAMSIZ + 4:IFNAMSIZ + 8]))
    finally:
        sock.close()
    return found


def from_kernel():
    found = set(ALWAYS)
    try:
        found |= interface_ipv4()
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
