"""The per-delivery trace (doc/trace.html): the events each program of the chain adds.

control/tracedir names a directory. qmail-remote, at the start of a delivery (begin),
creates a memfd and passes its number down the chain in QREMOTE_TRACE_FD: the
descriptor survives every exec, tlsc-io's failure continuation (qmail-remote again,
resumed) included, and its offset is shared, so each program's event() lines simply
follow the last one. The report writer (report.py), the one place every K, Z or D goes
through, hands the events to tracefile.finish, which assembles them into one JSON line
and appends it to TRACEDIR/YYYY-MM-DD.jsonl.

Without tracing event() returns at its first test: this module imports nothing but
posix (already loaded by every program), and the assembler (tracefile.py) is never
loaded. A trace is never worth a delivery: every error here is swallowed.

An event line (private to this module and tracefile.py): KIND, then TAB KEY=VALUE per
field, VALUE in JSON (encode below), so the assembler splices values without parsing
them and no program loads the json module (it imports re: milliseconds per start).
Never a secret, never message content: callers pass facts (names, codes, results).
"""

import posix

VARIABLE = b"QREMOTE_TRACE_FD"
CONTROL = b"control/tracedir"
MAX_EVENTS = 1 << 20  # bytes of events a delivery may leave in its memfd; later ones are dropped
MAX_STRING = 2048     # characters of one string value (a server's text, a DNS record)
LOW_FD = 8            # the memfd stays off 0-2 (stdio) and 6-7 (the connection)


def _inherited():
    value = posix.environ.get(VARIABLE)
    return int(value) if value is not None and value.isdigit() and int(value) >= LOW_FD else None


FD = _inherited()  # None: no tracing


def event(kind, **fields):
    """Append one event; a no-op without tracing."""
    if FD is None:
        return
    try:
        data = ("%s%s\n" % (kind, "".join("\t%s=%s" % (k, encode(v)) for k, v in fields.items()))).encode(
            "utf-8", "replace")
        if posix.lseek(FD, 0, 2) + len(data) <= MAX_EVENTS:  # 2: SEEK_END
            posix.write(FD, data)
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


# --- qmail-remote's hooks ---

def begin(fresh, host, sender, recipients):
    """qmail-remote at the start (in the qmail home): a fresh delivery starts a trace when
    control/tracedir names a directory; a resumed one goes on with the inherited memfd."""
    global FD
    if not fresh:
        return
    FD = None
    posix.environ.pop(VARIABLE, None)  # never write to a descriptor someone else named
    directory = _tracedir()
    if not directory:
        return
    import time

    try:
        fd = posix.memfd_create("qremote-trace", 0)  # flags 0: not close-on-exec
        low = []
        while fd < LOW_FD:
            low.append(fd)
            fd = posix.dup(fd)
        for extra in low:
            posix.close(extra)
        posix.set_inheritable(fd, True)
        posix.write(fd, b"begin\tdir=%s\twall=%r\tmono=%r\n" % (
            directory.hex().encode(), time.time(), time.monotonic()))
    except OSError:
        return
    FD = fd
    posix.environ[VARIABLE] = b"%d" % fd  # os.environ's data: the chain's environment
    event("delivery", host=host, sender_domain=_domain(sender),
          recipient_domains=sorted({_domain(r) for r in recipients}), recipients=len(recipients))


def _tracedir():
    """control/tracedir's first line, or None (absent, unreadable, odd: no trace, no Z)."""
    try:
        fd = posix.open(CONTROL, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
    except OSError:
        return None
    try:
        line = posix.read(fd, 4097).split(b"\n", 1)[0].rstrip(b" \t\r")
    except OSError:
        return None
    finally:
        posix.close(fd)
    if len(line) > 4096 or any(c < 32 or c == 127 for c in line):
        return None
    return line


def _domain(address):
    return address.rpartition(b"@")[2].lower() if b"@" in address else b""


def route(chosen, lookup):
    """The route kind and what DNS gave: lookup.answers when the resolver keeps them
    ([(name, type, status, ad, [records])]), else the targets themselves."""
    if FD is None:
        return
    if chosen is None:
        kind = "mx"
    elif (getattr(chosen, "where", None) or "").startswith("authsenders"):
        kind = "authsenders"
    elif getattr(chosen, "protocol", "smtp") in ("qmtp", "qmtps"):
        kind = "qmtproutes"
    else:
        kind = "smtproutes"
    event("route", route=kind)
    answers = getattr(lookup, "answers", None)
    if answers is not None:
        for name, rdtype, status, ad, records in answers:
            event("dns", name=name, type=rdtype, status=status, ad=bool(ad), records=list(records))
        return
    found = {}
    for target in getattr(lookup, "targets", lookup):
        found.setdefault((target.name, "AAAA" if ":" in target.ip else "A"), []).append(target.ip)
    for (name, rdtype), ips in found.items():
        event("dns", name=name.rstrip(b"."), type=rdtype, status="ok", ad=False, records=ips, source="targets")


def attempt(target, failed):
    """A connect to target: connected (failed None) or why not."""
    if FD is not None:
        import time

        event("attempt", ip=target.ip, name=target.name.rstrip(b"."), port=target.port,
              protocol=getattr(target, "protocol", "smtp"), t=time.monotonic() - _start(),
              result=failed or "connected", failure=None)


def result(text, failure=None):
    """What became of the last attempt (text: bytes or str, its first line), and its
    RFC 8460 result-type when it is a TLS failure."""
    if FD is not None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        event("result", result=text.split("\n", 1)[0], failure=failure)


def _start():
    """The delivery's time.monotonic() start, from the memfd's first line."""
    try:
        head = posix.pread(FD, 512, 0).split(b"\n", 1)[0]
        return float(head.rpartition(b"\tmono=")[2])
    except (OSError, ValueError):
        return 0.0


# --- tlsc-io's hooks ---

# tlsc.KINDS -> RFC 8460 result-type (section 4.3); None: nothing to report to the domain
RESULT_TYPES = {"verify": "certificate-not-trusted", "name": "certificate-host-mismatch",
                "depth": "certificate-not-trusted", "dane": "validation-failure", "pin": "validation-failure",
                "timeout": "validation-failure", "closed": "validation-failure", "handshake": "validation-failure",
                "local": None}


def result_type(kind, text=""):
    if kind == "verify" and "expired" in text:
        return "certificate-expired"
    return RESULT_TYPES.get(kind, "validation-failure")


def tls_failed(kind, text):
    result("tls failed: %s: %s" % (kind, text), result_type(kind, text))


def tls_done(env):
    """After a handshake: the facts PROG gets in SSL_* (env: bytes -> bytes)."""
    if FD is not None:
        event("tls", version=env.get(b"SSL_PROTOCOL"), cipher=env.get(b"SSL_CIPHER"),
              verified=env.get(b"SSL_PEER_VERIFIED") == b"1", by=env.get(b"SSL_PEER_VERIFIED_BY"),
              sni=env.get(b"SSL_TLS_SNI_SERVERNAME"))
        result("tls")
