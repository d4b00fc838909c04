"""The trace's one line (doc/trace.html, schema version 1): assembled from the memfd's
events by the program that writes the delivery's K, Z or D (report.py), appended to
TRACEDIR/YYYY-MM-DD.jsonl with one O_APPEND write. Loaded only when tracing.

One write with O_APPEND to a regular file is never interleaved with another (the
kernel holds the file's lock for the whole write), so concurrent deliveries each add
whole lines. A line is at most MAX_LINE bytes: the events that do not fit are dropped
(the latest of the longest kinds first) and "truncated" counts them. The file is
opened O_NOFOLLOW | O_NONBLOCK (no link followed, no wait on a FIFO) and written only
when it is a regular file. Any failure: no line, and the report is unchanged.
"""

import posix
import time

from .trace import FD, MAX_EVENTS, encode

MAX_LINE = 65536
VERSION = 1

TOP = ("delivery", "route")                                      # their fields are the line's
LISTS = {"dns": "dns", "attempt": "attempts", "reply": "replies", "qmtp": "qmtp_replies"}
OBJECTS = ("policy", "tls")                                      # merged, later fields win
ORDER = ("host", "sender_domain", "recipient_domains", "recipients", "route", "dns", "policy", "attempts",
         "tls", "replies", "qmtp_replies")
# dropped first when the line is too long
DROP = ("events", "replies", "qmtp_replies", "dns", "attempts")


def finish(letter, text):
    if FD is None:
        return
    data = posix.pread(FD, MAX_EVENTS + 1, 0)
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
