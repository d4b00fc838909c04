"""MTA-STS (RFC 8461) for qmail-remote: which policy applies to a delivery by MX.

    policy, event = mtasts.policy_for(domain, txt, now, timeout)

domain   the recipient (policy) domain, bytes or str
txt      None (the TXT record was not looked up), "failed" (the lookup failed), or the
         list of the TXT values (bytes) of _mta-sts.<domain>
now      Unix seconds (time.time()): expiry by max_age
timeout  seconds: the most this call may take (lock wait and fetch together)
port     the policy host's port: 443 (tests give another)
force    fetch even if the cached policy has the record's id (qmail-mta-sts fetch)
policy   a policy.Policy (mode "enforce", "testing" or "none") or None: deliver as today
event    a short text for the trace: "cached", "fetched", "fetch failed: WHY",
         "fetch failed: WHY, cached used", "no record", "invalid record: WHY",
         "TXT lookup failed", "lock busy, cached used", ...

The rules (RFC 8461 sections 3 and 5), in order:
1. An unexpired cached policy (fetched_at + max_age > now) whose id is the TXT record's:
   used, no network ("cached").
2. No usable TXT record (none, several, invalid, lookup failed, not looked up): an
   unexpired cached policy is still used (5.1: the absence of a record does not remove
   a cached policy); else None.
3. A valid record whose id differs from the cached policy's, or no unexpired policy:
   fetch, one delivery at a time per domain (a lock file); the others wait until the
   deadline, then find the policy the fetcher cached ("cached") or use the cached one
   ("lock busy, cached used") or go on without ("lock busy, no policy").
4. An unexpired policy with the record's id past half its max_age is fetched again by
   the delivery that finds the lock free (no waiting; the others use it: "cached"), so
   a policy in use is kept warm and never expires while its domain still publishes it
   (RFC 8461's authors: refresh proactively when there is traffic); a failed refresh
   keeps it ("fetch failed: WHY, cached used").
5. A fetch that fails (or a policy that does not parse) leaves the cached policy in use
   until it expires ("fetch failed: WHY, cached used"), else None; the failure is
   recorded in the entry and the fetch is not tried again for RETRY seconds for the
   same id, so a dead policy host does not cost every delivery a timeout.
Nothing here raises: every error is an event.
"""

import os
import time

from . import cache
from .policy import Invalid, Policy, record_id

__all__ = ["Policy", "policy_for", "RETRY", "TIMEOUT"]

MAX_EVENT = 200
RETRY = 300   # seconds after a failed fetch before the same id is fetched again
TIMEOUT = 30  # a delivery's suggested limit for policy_for: lock wait and fetch together
              # (RFC 8461 3.3 suggests a minute for the fetch; qmail-mta-sts fetch gives 60)


def _with_cached(cached, reason):
    return (cached, "%s, cached used" % reason) if cached is not None else (None, reason)


def policy_for(domain, txt, now, timeout, port=443, force=False):
    now = int(now)
    name = cache.normal_domain(domain)
    if name is None:
        return None, "bad domain"
    deadline = time.monotonic() + timeout
    opened = cache.open_directory()
    directory, owner = opened if opened is not None else (None, None)
    try:
        policy, event = _decide(name, txt, now, deadline, directory, owner, port, force)
    except Exception as error:  # noqa: BLE001 - MTA-STS never fails a delivery by itself
        return None, "internal error: %s" % type(error).__name__
    finally:
        if directory is not None:
            os.close(directory)
    # parts of it come from the policy host (a header, an error): printable ASCII, bounded
    return policy, "".join(c if " " <= c <= "~" else "?" for c in event[:MAX_EVENT])


def _unexpired(entry, now):
    if entry is None or entry.policy is None or entry.policy.expired(now):
        return None
    return entry.policy


def _decide(name, txt, now, deadline, directory, owner, port, force):
    entry = cache.read(directory, name) if directory is not None else None
    cached = _unexpired(entry, now)
    if txt is None:
        return (cached, "cached") if cached is not None else (None, "not looked up")
    if txt == "failed":
        return _with_cached(cached, "TXT lookup failed")
    try:
        txt_id = record_id(txt)
    except Invalid as why:
        reason = why.args[0]
        return _with_cached(cached, reason if reason == "no record" else "invalid record: " + reason)
    refresh = False
    if not force:
        if cached is not None and cached.id == txt_id:
            if directory is None or not _stale(cached, now) or _failed_recently(entry, txt_id, now):
                return cached, "cached"
            refresh = True  # past half its max_age: fetched again while still good (kept warm)
        elif _failed_recently(entry, txt_id, now):
            return _with_cached(cached, "fetch failed: " + entry.failure)
    if directory is None:
        return _fetch(name, txt_id, now, deadline, None, None, None, port)
    before = _fetch_mark(entry)
    # a refresh never waits for the lock: the policy in hand is good
    lock = cache.lock(directory, owner, name, time.monotonic() if refresh else deadline)
    if lock is None:
        return (cached, "cached") if refresh else _with_cached(cached, "lock busy")
    try:
        # another delivery may have fetched (or failed) while we waited
        entry = cache.read(directory, name)
        cached = _unexpired(entry, now)
        if not force:
            if entry is not None and entry.policy is not None and entry.policy.id == txt_id and (
                    _fetch_mark(entry) != before):
                # fetched while we waited, for our id: fresh, even with a max_age of 0 (else
                # each waiter would fetch in turn)
                return entry.policy, "cached"
            if not refresh and cached is not None and cached.id == txt_id:
                return cached, "cached"
            if _failed_recently(entry, txt_id, now):
                return _with_cached(cached, "fetch failed: " + entry.failure)
        return _fetch(name, txt_id, now, deadline, directory, owner, entry, port)
    finally:
        os.close(lock)


def _stale(policy, now):
    return now - policy.fetched_at >= policy.max_age // 2


def _fetch_mark(entry):
    return None if entry is None or entry.policy is None else (entry.policy.fetched_at, entry.policy.id)


def _failed_recently(entry, txt_id, now):
    return entry is not None and entry.failed_at and entry.failed_id == txt_id and 0 <= now - entry.failed_at < RETRY


def _fetch(name, txt_id, now, deadline, directory, owner, entry, port):
    from . import fetch
    from .policy import parse_policy

    cached = _unexpired(entry, now)
    left = deadline - time.monotonic()
    if left < 0.5:
        return _with_cached(cached, "lock busy")
    try:
        body = fetch.fetch(name, left, port)
        policy = parse_policy(body, txt_id, now)
    except (fetch.Failed, Invalid) as error:
        why = error.args[0]
        if isinstance(error, Invalid):
            why = "invalid policy: " + why
        if directory is not None:
            kept = entry if entry is not None else cache.Entry()
            kept.failed_at, kept.failed_id, kept.failure = now, txt_id, why
            cache.write(directory, owner, name, kept)
        return _with_cached(cached, "fetch failed: " + why)
    if directory is not None:
        cache.write(directory, owner, name, cache.Entry(policy))
    return policy, "fetched"
