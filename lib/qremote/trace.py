"""The per-delivery trace's hooks (doc/trace.html): what each program of the chain calls.

control/tracedir names a directory. qmail-remote, at the start of a delivery (begin),
creates a memfd and passes its number down the chain in QREMOTE_TRACE_FD: the
descriptor survives every exec, tlsc-io's failure continuation (qmail-remote again,
resumed) included, and its offset is shared, so each program's event lines follow the
last one. The report writer (report.py), the one place every K, Z or D goes through,
has tracefile.finish assemble them into one JSON line in TRACEDIR/YYYY-MM-DD.jsonl.

Every program loads this module, so it is kept small and each hook returns at its first
test without tracing: everything else (the encoder, the assembler) is in tracefile.py,
loaded only when tracing. Never a secret, never message content: callers pass facts
(names, codes, results). A trace is never worth a delivery: errors are swallowed.
"""

import posix

VARIABLE = b"QREMOTE_TRACE_FD"
LOW_FD = 8  # the memfd stays off 0-2 (stdio) and 6-7 (the connection)


def _inherited():
    value = posix.environ.get(VARIABLE)
    return int(value) if value is not None and value.isdigit() and int(value) >= LOW_FD else None


FD = _inherited()  # None: no tracing


def event(kind, **fields):
    """Append one event (kind: a word; fields: JSON-able values); a no-op without tracing."""
    if FD is not None:
        from . import tracefile
        tracefile.event(FD, kind, fields)


def begin(fresh, host, sender, recipients):
    """qmail-remote at the start (in the qmail home): a fresh delivery starts a trace when
    control/tracedir names a directory; a resumed one goes on with the inherited memfd.
    Without control/tracedir this costs one failed open()."""
    global FD
    if not fresh:
        return
    FD = None
    posix.environ.pop(VARIABLE, None)  # never write to a descriptor someone else named
    try:
        fd = posix.open(b"control/tracedir", posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
    except OSError:
        return
    from . import tracefile
    FD = tracefile.begin(fd, host, sender, recipients)


def route(chosen, lookup):
    """qmail-remote: the route (routes.MX is None) and what DNS gave (a Lookup with its
    answers, or the targets)."""
    if FD is not None:
        from . import tracefile
        tracefile.route(FD, chosen, lookup)


def attempt(target, failed):
    """qmail-remote: a connect to target, connected (failed None) or why not."""
    if FD is not None:
        from . import tracefile
        tracefile.attempt(FD, target, failed)


def result(text, failure=None):
    """What became of the last attempt (text: bytes or str, its first line), and its
    RFC 8460 result-type when it is a TLS failure."""
    if FD is not None:
        from . import tracefile
        tracefile.result(FD, text, failure)


def tls_done(env):
    """tlsc-io after a handshake: the facts PROG gets in SSL_* (env: bytes -> bytes)."""
    if FD is not None:
        from . import tracefile
        tracefile.tls_done(FD, env)


def tls_failed(kind, text):
    """tlsc-io after a failed handshake: tlsc.KINDS' kind and its text."""
    if FD is not None:
        from . import tracefile
        tracefile.result(FD, "tls failed: %s: %s" % (kind, text), tracefile.result_type(kind, text))
