"""qmail-mta-sts: show and manage qremote's MTA-STS policy cache (doc/mta-sts.html).

  qmail-mta-sts list            one line per cached policy domain
  qmail-mta-sts purge DOMAIN    forget that domain's policy (the next delivery fetches again)
  qmail-mta-sts purge all       forget every policy
  qmail-mta-sts fetch DOMAIN    look up _mta-sts.DOMAIN (dnspython) and fetch its policy now

Works in the qmail home (QMAILHOME or the installed default), on run/qmail-remote/mta-sts.
Output on stdout; a failure is one line `qmail-mta-sts: fatal: ...` on stderr, exit 111;
usage errors exit 100. An admin tool, not run by qmail-rspawn: it writes no report stream.
"""

import os
import sys
import time

from .. import paths
from ..admintool import Fatal, run, step
from ..mtasts import cache

USAGE = b"usage: qmail-mta-sts list | purge DOMAIN | purge all | fetch DOMAIN\n"
FETCH_TIMEOUT = 60  # RFC 8461 3.3's suggested timeout


class Usage(Exception):
    pass


def stamp(when):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)).encode()


def describe(domain, entry, now):
    """One line for an entry: policy fields, then the last failure if any."""
    fields = [domain.encode()]
    policy = entry.policy
    if policy is not None:
        fields += [b"mode=" + policy.mode.encode(), b"id=" + (policy.id or "-").encode(),
                   b"max_age=%d" % policy.max_age, b"fetched=" + stamp(policy.fetched_at),
                   b"expires=" + stamp(policy.expires()) + (b"(expired)" if policy.expired(now) else b""),
                   b"mx=" + (",".join(policy.mx) or "-").encode()]
    else:
        fields.append(b"no-policy")
    if entry.failed_at:
        fields.append(b"failed=%s id=%s: %s" % (stamp(entry.failed_at), (entry.failed_id or "-").encode(),
                                                entry.failure.encode("utf-8", "replace")))
    return b" ".join(fields) + b"\n"


def open_cache(create):
    home = paths.qmailhome()
    step(b"unable to chdir to " + os.fsencode(home), os.chdir, home)
    opened = cache.open_directory(create=create)
    if opened is None:
        if not create and not os.path.lexists(cache.DIRECTORY):
            return None
        raise Fatal(b"unable to open %s/%s\n" % (os.fsencode(home), cache.DIRECTORY.encode()))
    return opened


def listing():
    opened = open_cache(create=False)
    if opened is None:
        return b""
    directory, _ = opened
    now = int(time.time())
    lines = []
    for domain in step(b"unable to list the cache", cache.domains, directory):
        entry = cache.read(directory, domain)
        lines.append(describe(domain, entry, now) if entry is not None else domain.encode() + b" damaged\n")
    os.close(directory)
    return b"".join(lines)


def purge(what):
    if what != "all" and cache.normal_domain(what) is None:
        raise Usage()
    opened = open_cache(create=False)
    if opened is None:
        return b""
    directory, _ = opened
    try:
        if what == "all":
            names = step(b"unable to list the cache", os.listdir, directory)
            for name in names:
                if "=" in name or cache.normal_domain(name) == name:
                    step(b"unable to remove " + name.encode(), lambda name: os.unlink(name, dir_fd=directory), name)
            return b""
        domain = cache.normal_domain(what)
        return b"" if cache.purge(directory, domain) else b"%s: not cached\n" % domain.encode()
    finally:
        os.close(directory)


def txt_values(domain):
    """The TXT values of _mta-sts.DOMAIN ([] when none), or "failed": by dnspython, asking the
    nameservers a delivery asks ($DNSCACHEIP or /etc/resolv.conf)."""
    try:
        import dns.exception
        import dns.nameserver
        import dns.resolver
    except ImportError:
        raise Fatal(b"dnspython is not installed\n") from None
    from ..resolver import nameservers

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(s.address, s.port) for s in nameservers()]
    resolver.lifetime = 30
    try:
        answer = resolver.resolve("_mta-sts." + domain + ".", "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException:
        return "failed"
    return [b"".join(rdata.strings) for rdata in answer]


def fetch(what):
    from .. import mtasts

    domain = cache.normal_domain(what)
    if domain is None:
        raise Usage()
    opened = open_cache(create=True)
    os.close(opened[0])
    txt = txt_values(domain)
    policy, event = mtasts.policy_for(domain, txt, time.time(), FETCH_TIMEOUT, force=True)
    if policy is None:
        raise Fatal(b"%s: no policy: %s\n" % (domain.encode(), event.encode("utf-8", "replace")))
    entry = cache.Entry(policy)
    return b"%s: %s\n" % (domain.encode(), event.encode("utf-8", "replace")) + describe(domain, entry, int(time.time()))


def body():
    args = sys.argv[1:]
    try:
        if args == ["list"]:
            return listing()
        if len(args) == 2 and args[0] == "purge":
            return purge(args[1])
        if len(args) == 2 and args[0] == "fetch":
            return fetch(args[1])
        raise Usage()
    except Usage:
        os.write(2, USAGE)
        os._exit(100)


def main():
    run(body, b"qmail-mta-sts: fatal: ", 2)
