"""The trace's work (doc/trace.html, schema version 1), loaded only when tracing: the
memfd and its event lines (trace.py's hooks call here), and the one line assembled from
them by the program that writes the delivery's K, Z or D (report.py), appended to
TRACEDIR/YYYY-MM-DD.jsonl with one O_APPEND write.

An event line (private to this module): KIND, then TAB KEY=VALUE per field, VALUE in
JSON (encode below), so the assembler splices values without parsing them and no
program loads the json module (it imports re: milliseconds per start). The memfd's
first line, "begin", holds the trace directory and the delivery's start. At most
MAX_EVENTS bytes of events per delivery; later ones are dropped and counted as one.

One write with O_APPEND to a regular file is never interleaved with another (the
kernel holds the file's lock for the whole write), so concurrent deliveries each add
whole lines. A line is at most MAX_LINE bytes: the events that do not fit are dropped
(the latest of the longest kinds first) and "truncated" counts them. The file is
opened O_NOFOLLOW | O_NONBLOCK (no link followed, no wait on a FIFO) and written only
when it is a regular file. Any failure: no line, and the report is unchanged.
"""

import posix
import time

from . import trace

MAX_EVENTS = 1 << 20  # bytes of events a delivery may leave in its memfd
MAX_STRING = 2048     # characters of one string value (a server's text, a DNS record)
MAX_LINE = 65536
VERSION = 1

TOP = ("delivery", "route")                                      # their fields are the line's
LISTS = {"dns": "dns", "attempt": "attempts", "reply": "replies", "qmtp": "qmtp_replies"}
OBJECTS = ("policy", "tls")                                      # merged, later fields win
ORDER = ("host", "sender_domain", "recipient_domains", "recipients", "route", "dns", "policy", "attempts",
         "tls", "replies", "qmtp_replies")
# dropped first when the line is too long
DROP = ("events", "replies", "qmtp_replies", "dns", "attempts")


def event(fd, kind, fields):
    try:
        data = ("%s%s\n" % (kind, "".join("\t%s=%s" % (k, encode(v)) for k, v in fields.items()))).encode(
            "utf-8", "replace")
        if posix.lseek(fd, 0, 2) + len(data) <= MAX_EVENTS:  # 2: SEEK_END
            posix.write(fd, data)
    except Exception:  # noqa: BLE001 - a trace never stops a delivery
        pass


_ESCAPES = {i: "\\u%04x" % i for i in range(32)}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", 8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r",
                 0x7f: "\\u007f"})


def encode(value):
    """JSON text of value: None, bool, int, float, str, bytes (UTF-8, bad bytes replaced),
    list or tuple, dict with str keys. Strings are cut to MAX_STRING characters."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return "%d" % value
    if isinstance(value, float):
        return "%.4f" % value if value == value and abs(value) < 1e15 else "null"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return '"%s"' % value[:MAX_STRING].translate(_ESCAPES)
    if isinstance(value, dict):
        return "{%s}" % ",".join("%s:%s" % (encode(str(k)), encode(v)) for k, v in value.items())
    return "[%s]" % ",".join(encode(v) for v in value)


# --- the hooks' work (trace.py) ---

def begin(control, host, sender, recipients):
    """The memfd of a new trace (control: control/tracedir, open), or None."""
    try:
        try:
            line = posix.read(control, 4097).split(b"\n", 1)[0].rstrip(b" \t\r")
        finally:
            posix.close(control)
        if not line or len(line) > 4096 or any(c < 32 or c == 127 for c in line):
            return None  # an odd control/tracedir: no trace, and no Z for it
        fd = posix.memfd_create("qremote-trace", 0)  # flags 0: not close-on-exec
        low = []
        while fd < trace.LOW_FD:
            low.append(fd)
            fd = posix.dup(fd)
        for extra in low:
            posix.close(extra)
        posix.set_inheritable(fd, True)
        posix.write(fd, b"begin\tdir=%s\twall=%r\tmono=%r\n" % (line.hex().encode(), time.time(), time.monotonic()))
    except Exception:  # noqa: BLE001 - no memfd (an old kernel), no descriptor left: no trace
        return None
    posix.environ[trace.VARIABLE] = b"%d" % fd  # os.environ's data: the chain's environment
    event(fd, "delivery", {"host": host, "sender_domain": _domain(sender),
                           "recipient_domains": sorted({_domain(r) for r in recipients}),
                           "recipients": len(recipients)})
    return fd


def _domain(address):
    return address.rpartition(b"@")[2].lower() if b"@" in address else b""


def route(fd, chosen, lookup):
    """The route kind and what DNS gave: lookup.answers when the resolver keeps them
    ([(name, type, status, ad, [records])]), else the targets themselves."""
    if chosen is None:
        kind = "mx"
    elif (getattr(chosen, "where", None) or "").startswith("authsenders"):
        kind = "authsenders"
    elif getattr(chosen, "protocol", "smtp") in ("qmtp", "qmtps"):
        kind = "qmtproutes"
    else:
        kind = "smtproutes"
    event(fd, "route", {"route": kind})
    answers = getattr(lookup, "answers", None)
    if answers is not None:
        for name, rdtype, status, ad, records in answers:
            event(fd, "dns", {"name": name, "type": rdtype, "status": status, "ad": bool(ad),
                              "records": list(records)})
        return
    found = {}
    for target in getattr(lookup, "targets", lookup):
        found.setdefault((target.name, "AAAA" if ":" in target.ip else "A"), []).append(target.ip)
    for (name, rdtype), ips in found.items():
        event(fd, "dns", {"name": name.rstrip(b"."), "type": rdtype, "status": "ok", "ad": False, "records": ips,
                          "source": "targets"})



def attempt(fd, target, failed):
    event(fd, "attempt", {"ip": target.ip, "name": target.name.rstrip(b"."), "port": target.port,
                          "protocol": getattr(target, "protocol", "smtp"), "t": time.monotonic() - _start(fd),
                          "result": failed or "connected", "failure": None})


def result(fd, text, failure=None):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    event(fd, "result", {"result": text.split("\n", 1)[0], "failure": failure})


def _start(fd):
    """The delivery's time.monotonic() start, from the memfd's first line."""
    try:
        return float(posix.pread(fd, 512, 0).split(b"\n", 1)[0].rpartition(b"\tmono=")[2])
    except (OSError, ValueError):
        return 0.0


def tls_done(fd, env):
    event(fd, "tls", {"version": env.get(b"SSL_PROTOCOL"), "cipher": env.get(b"SSL_CIPHER"),
                      "verified": env.get(b"SSL_PEER_VERIFIED") == b"1", "by": env.get(b"SSL_PEER_VERIFIED_BY"),
                      "sni": env.get(b"SSL_TLS_SNI_SERVERNAME")})
    result(fd, "tls")


# tlsc.KINDS -> RFC 8460 result-type (section 4.3); None: nothing to report to the domain
RESULT_TYPES = {"verify": "certificate-not-trusted", "name": "certificate-host-mismatch",
                "depth": "certificate-not-trusted", "dane": "tlsa-invalid", "pin": "validation-failure",
                "timeout": "validation-failure", "closed": "validation-failure", "handshake": "validation-failure",
                "local": None}


def result_type(kind, text=""):
    if kind == "verify" and "expired" in text:
        return "certificate-expired"
    return RESULT_TYPES.get(kind, "validation-failure")


# --- the line ---

def finish(letter, text):
    fd = trace.FD
    if fd is None:
        return
    data = posix.pread(fd, MAX_EVENTS + 1, 0)
    lines = data.split(b"\n")[:-1]  # a last line without its LF is incomplete
    if not lines or not lines[0].startswith(b"begin\t"):
        return
    head = dict(field.partition(b"=")[::2] for field in lines[0].split(b"\t")[1:])
    directory = bytes.fromhex(head[b"dir"].decode("ascii"))
    wall, mono = float(head[b"wall"]), float(head[b"mono"])
    line = assemble(lines[1:], letter, text, wall, time.monotonic() - mono, len(data) > MAX_EVENTS)
    append(directory, wall, line)


def _object(fields):
    return "{%s}" % ",".join('"%s":%s' % kv for kv in fields.items())


def assemble(lines, letter, text, wall, duration, overflow=False):
    """The JSON line (bytes, with its LF) of the event lines (bytes, without LF)."""
    top, objects = {}, {}
    lists = {name: [] for name in LISTS.values()}
    lists["events"] = []
    attempts = []  # dicts, so that "result" can still change the last one
    for raw in lines:
        kind, *pairs = raw.decode("utf-8", "replace").split("\t")
        fields = dict(pair.partition("=")[::2] for pair in pairs)
        if kind in TOP:
            top.update(fields)
        elif kind == "attempt":
            attempts.append(fields)
        elif kind == "result":
            if not attempts:
                attempts.append({})
            attempts[-1].update(fields)
        elif kind == "reply":
            lists["replies"].append(fields.get("code", "null"))
        elif kind == "qmtp":
            lists["qmtp_replies"].append(fields.get("letter", "null"))
        elif kind in LISTS:
            lists[LISTS[kind]].append(_object(fields))
        elif kind in OBJECTS:
            objects.setdefault(kind, {}).update(fields)
        else:  # another helper's kind: kept, named
            lists["events"].append(_object(dict(kind=encode(kind), **fields)))
    lists["attempts"] = [_object(a) for a in attempts]
    gmt = time.gmtime(wall)
    head = [("v", "%d" % VERSION), ("time", '"%04d-%02d-%02dT%02d:%02d:%02dZ"' % gmt[:6]),
            ("duration", "%.3f" % max(0.0, duration))]
    fixed = {"report": _object({"letter": encode(letter), "text": encode(text.rstrip(b"\n"))})}
    for name in ORDER:
        if name in lists:
            continue
        fixed[name] = objects[name] and _object(objects[name]) if name in objects else (
            top.get(name, "null"))
    for name, value in top.items():
        if name not in fixed:
            fixed[name] = value
    # the size: every list element costs its length and a comma
    size = sum(len(k) + len(v) + 4 for k, v in head + list(fixed.items())) + 2
    size += sum(len(k) + 5 + sum(len(e) + 1 for e in v) for k, v in lists.items())
    truncated = 0
    while size > MAX_LINE - 32:
        longest = [name for name in DROP if lists[name]]
        if not longest:
            break
        victim = lists[longest[0]]
        size -= len(victim.pop()) + 1
        truncated += 1
    if overflow:
        truncated += 1  # at least one event did not even reach the memfd
    parts = head[:]
    for name in ORDER:
        parts.append((name, "[%s]" % ",".join(lists[name]) if name in lists else fixed[name]))
    for name, value in fixed.items():
        if name not in ORDER:
            parts.append((name, value))
    if lists["events"]:
        parts.append(("events", "[%s]" % ",".join(lists["events"])))
    if truncated:
        parts.append(("truncated", "%d" % truncated))
    line = ("{%s}\n" % ",".join('"%s":%s' % kv for kv in parts)).encode("utf-8", "replace")
    return line if len(line) <= MAX_LINE else None


def append(directory, wall, line):
    if line is None:
        return
    name = directory.rstrip(b"/") + b"/%04d-%02d-%02d.jsonl" % time.gmtime(wall)[:3]
    flags = posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC
    fd = posix.open(name, flags, 0o640)
    try:
        import _stat

        if _stat.S_ISREG(posix.fstat(fd).st_mode):
            posix.write(fd, line)
    finally:
        posix.close(fd)


# --- the policy object (qmail-remote, deliveries by MX) ---

def sts_failure(event):
    """The RFC 8460 result-type (4.3.2.2) of mtasts.policy_for's event when no policy
    came of it, or None: a certificate the policy host's TLS did not verify, a policy (or
    TXT record) that does not parse, any other failed fetch."""
    if event.startswith("fetch failed: certificate"):
        return "sts-webpki-invalid"
    if event.startswith("fetch failed: invalid policy") or event.startswith("invalid record"):
        return "sts-policy-invalid"
    if event.startswith("fetch failed"):
        return "sts-policy-fetch-error"
    return None


def _policy_domain(host):
    """RFC 8460's policy-domain: the A-label form, lower case, no final dot."""
    if not host.isascii():
        from .hostname import to_ascii

        try:
            host = to_ascii(host.decode("utf-8")).encode("ascii")
        except ValueError:  # UnicodeDecodeError, InvalidName: kept as it came
            pass
    return host.lower().rstrip(b".")


def policy_facts(host, targets, rules, dane, fetched):
    """(the policy event's fields, [(target, why, RFC 8460 result-type)] of the targets a
    rule skips). host: the delivery's domain; rules: each target's tlsrule.Rule; dane:
    the resolver's {target name: Dane}; fetched: (Policy or None, event) of
    mtasts.policy_for, or None when MTA-STS was not asked (no TXT record, nothing cached).

    type: "tlsa" when DANE decided a target (it wins over MTA-STS, RFC 8461 section 2),
    "sts" when an MTA-STS policy applies or its fetch failed, else "no-policy-found".
    decided_by is the first tried target's rule origin until a connection says which."""
    fields = {"domain": _policy_domain(host)}
    policy, event = fetched if fetched is not None else (None, None)
    tried = [rule for rule in rules if rule.mode != "skip"]
    fields["decided_by"] = (tried or rules)[0].origin if rules else "none"
    daned = [(target, dane[target.name]) for target, rule in zip(targets, rules)
             if rule.origin == "dane" and target.name in dane]
    if daned:
        fields["type"], fields["mode"] = "tlsa", None
        names, strings = [], []
        for target, found in daned:
            name = target.name.rstrip(b".")
            if name not in names:
                names.append(name)
                strings += ["%d %d %d %s" % (u, s, m, bytes(data).hex()) for u, s, m, data in found.records]
        fields["mx"], fields["strings"] = names, strings
    elif policy is not None and policy.mode in ("enforce", "testing"):
        fields["type"], fields["mode"] = "sts", policy.mode
        fields["mx"], fields["strings"] = list(policy.mx), policy.lines()
        if policy.mode == "testing":  # what enforce would have done (doc/mta-sts.html)
            would = []
            for target in targets:
                name = target.name.rstrip(b".").decode("utf-8", "replace")
                action = "tls required" if policy.matches(target.name) else "skipped"
                if "%s: %s" % (name, action) not in would:
                    would.append("%s: %s" % (name, action))
            fields["would"] = would
    elif event is not None and sts_failure(event):
        fields["type"], fields["mode"], fields["mx"], fields["strings"] = "sts", None, [], []
        fields["failure"] = sts_failure(event)
    else:  # none, no record, TXT lookup failed: nothing to apply (a mode none policy is said)
        fields["type"], fields["mode"] = "no-policy-found", None
        if policy is not None:
            fields["strings"] = policy.lines()
    if event is not None:
        fields["fetch"] = event
    skipped = []
    for target, rule in zip(targets, rules):
        if rule.mode == "skip":
            failure = "dane-required" if rule.origin == "dane" else "validation-failure"
            skipped.append((target, rule.why, failure))
    return fields, skipped
