"""TLS-RPT (RFC 8460), sans-IO: trace lines in, aggregate reports, TXT records and mail out.

qmail-tlsrpt (programs/qmail_tlsrpt.py) does the reading, the DNS and the delivery; this
module only turns bytes and dicts into other bytes and dicts, so each rule is tested alone.

The trace schema is doc/trace.html's (version 1). A line is used when it is a JSON object
with "v" 1 and a "time"; parse_line reads the fields doc/tlsrpt.html lists and maps to the
report. Anything else that is wrong with a line makes it "malformed": it is
counted and skipped, never fatal, since the trace is written by many deliveries at once and
an admin may have edited it.
"""

import datetime
import gzip
import hashlib
import ipaddress
import json
import re

# RFC 8460 4.3: every result-type a report may carry
RESULT_TYPES = frozenset([
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure",                       # 4.3.1 negotiation
    "tlsa-invalid", "dnssec-invalid", "dane-required",                      # 4.3.2.1 DANE
    "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",   # 4.3.2.2 MTA-STS
])
POLICY_TYPES = ("sts", "tlsa", "no-policy-found")
MEDIA_TYPE = "application/tlsrpt+gzip"

MAX_LINE = 1 << 20       # the writer caps a line at 64 KiB; anything far larger is not a trace line
MAX_TEXT = 256           # failure-reason-code and policy strings are cut here
DOMAIN = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


class Malformed(ValueError):
    pass


def domain_name(value):
    """A host or domain name, lower-cased, without the final dot; Malformed if it is not one.
    Strict: it goes into file names and mail headers."""
    if not isinstance(value, str):
        raise Malformed("not a name")
    name = value.lower()
    name = name[:-1] if name.endswith(".") else name
    if not DOMAIN.match(name):
        raise Malformed("not a domain name: %r" % value[:80])
    return name


def _text(value, what):
    if not isinstance(value, str):
        raise Malformed("%s is not a string" % what)
    # printable only: these strings go into a JSON report read by other programs
    return "".join(c if c.isprintable() else "?" for c in value[:MAX_TEXT])


def _optional_ip(value):
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise Malformed("not an IP address: %r" % str(value)[:80]) from None


def parse_time(value):
    """The trace's "time" (RFC 3339, UTC, "Z") as an aware datetime; Malformed otherwise."""
    if not isinstance(value, str) or not value.endswith("Z"):
        raise Malformed("time is not a UTC timestamp")
    try:
        moment = datetime.datetime.fromisoformat(value[:-1])
    except ValueError:
        raise Malformed("time is not a UTC timestamp") from None
    if moment.tzinfo is not None:
        raise Malformed("time is not a UTC timestamp")
    return moment.replace(tzinfo=datetime.timezone.utc)


class Session:
    """One delivery's share of a report: its policy, successes and failures."""

    __slots__ = ("day", "policy", "successes", "failures")

    def __init__(self, day, policy, successes, failures):
        self.day = day            # datetime.date (UTC)
        self.policy = policy      # (type, (strings...), domain, (mx...))
        self.successes = successes
        self.failures = failures  # [(result-type, sending ip, mx name, mx ip, reason code)]


def parse_line(line):
    """One trace line (bytes) -> Session, or None for a delivery with nothing to report
    (a route to a relay: its sessions are not with the domain's MX hosts); Malformed."""
    if len(line) > MAX_LINE:
        raise Malformed("line too long")
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Malformed("not JSON") from None
    if not isinstance(record, dict) or record.get("v") != 1 or record.get("v") is True:
        raise Malformed("not a version 1 trace record")
    day = parse_time(record.get("time")).date()
    route = record.get("route", "mx")
    if route != "mx":
        if not isinstance(route, str):
            raise Malformed("route is not a string")
        return None
    policy = record.get("policy")
    if policy is None:
        policy = {"domain": record.get("host"), "type": "no-policy-found"}
    if not isinstance(policy, dict):
        raise Malformed("policy is not an object")
    kind = policy.get("type")
    if kind not in POLICY_TYPES:
        raise Malformed("policy type %r" % str(kind)[:40])
    domain = domain_name(policy.get("domain") if policy.get("domain") is not None else record.get("host"))
    strings = policy.get("strings") or []
    mx = policy.get("mx") or []
    if not isinstance(strings, list) or not isinstance(mx, list):
        raise Malformed("policy strings or mx is not a list")
    key = (kind, tuple(_text(s, "policy string") for s in strings), domain,
           tuple(_text(m, "policy mx") for m in mx))
    attempts = record.get("attempts") or []
    if not isinstance(attempts, list) or not all(isinstance(a, dict) for a in attempts):
        raise Malformed("attempts is not a list of objects")
    tls = record.get("tls")
    if tls is not None and not isinstance(tls, dict):
        raise Malformed("tls is not an object")
    negotiated = bool(tls and tls.get("version"))
    per_attempt = any(isinstance(a.get("tls"), bool) for a in attempts)  # the writer may say
    successes, failures, clean = 0, [], 0
    for attempt in attempts:
        failure = attempt.get("failure")
        if failure is None:
            clean += 1
            successes += attempt.get("tls") is True
            continue
        failure = _text(failure, "failure")
        result = attempt.get("result")
        reason = _text(result, "result") if result is not None else None
        if failure not in RESULT_TYPES:  # the report allows no other value: keep the words
            reason = failure + (": " + reason if reason else "")
            failure = "validation-failure"
        name = attempt.get("name")
        failures.append((failure, _optional_ip(attempt.get("local_ip")),
                         domain_name(name) if name is not None else None,
                         _optional_ip(attempt.get("ip")), reason))
    # a policy failure (qmail-remote: the MTA-STS policy could not be fetched, parsed or
    # verified) is one failure of its own beside what became of the connections
    if policy.get("failure") is not None:
        failure = _text(policy["failure"], "policy failure")
        fetch = policy.get("fetch")
        reason = _text(fetch, "policy fetch") if fetch is not None else None
        if failure not in RESULT_TYPES:
            reason, failure = failure + (": " + reason if reason else ""), "validation-failure"
        failures.append((failure, None, None, None, reason))
    # without per-attempt facts, the delivery's one "tls" object belongs to the last attempt
    # that did not fail: the connection the SMTP transaction went over
    if not per_attempt and negotiated and (clean or not attempts):
        successes += 1
    return Session(day, key, successes, failures)


def read_sessions(lines, day):
    """(sessions of that UTC day, malformed line count) from trace lines (bytes)."""
    sessions, malformed = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            session = parse_line(line)
        except Malformed:
            malformed += 1
            continue
        if session is not None and session.day == day:
            sessions.append(session)
    return sessions, malformed


def day_range(day):
    """(start, end, start, end) of a UTC day: RFC 3339 texts, then Unix seconds. The day
    ends at 23:59:59Z, as in RFC 8460's example."""
    start = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc)
    end = start + datetime.timedelta(seconds=86399)
    return (start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            int(start.timestamp()), int(end.timestamp()))


def report_id(domain, day, submitter):
    """Unique per policy domain, day and submitter, and the same when run again (a
    receiver drops the duplicate): hex only, so it fits RFC 8460 5.3's unique-id too."""
    return hashlib.sha256(("qmail-tlsrpt\0%s\0%s\0%s" % (domain, day.isoformat(), submitter)).encode()).hexdigest()[:32]


def build_reports(sessions, day, organization, contact, submitter):
    """{policy domain: report dict} for one day (RFC 8460 section 4)."""
    by_domain = {}
    for session in sessions:
        policies = by_domain.setdefault(session.policy[2], {})
        entry = policies.setdefault(session.policy, [0, {}])
        entry[0] += session.successes
        for failure in session.failures:
            entry[1][failure] = entry[1].get(failure, 0) + 1
    start, end, _, _ = day_range(day)
    reports = {}
    for domain in sorted(by_domain):
        policies = []
        for (kind, strings, _, mx), (successes, failures) in sorted(by_domain[domain].items()):
            policy = {"policy-type": kind, "policy-domain": domain}
            if strings:
                policy["policy-string"] = list(strings)
            if mx:
                policy["mx-host"] = list(mx)
            details = []
            for (result, sending_ip, mx_name, mx_ip, reason), count in sorted(
                    failures.items(), key=lambda item: tuple("" if v is None else v for v in item[0])):
                detail = {"result-type": result}
                for field, value in (("sending-mta-ip", sending_ip), ("receiving-mx-hostname", mx_name),
                                     ("receiving-ip", mx_ip)):
                    if value is not None:
                        detail[field] = value
                detail["failed-session-count"] = count
                if reason:
                    detail["failure-reason-code"] = reason
                details.append(detail)
            entry = {"policy": policy,
                     "summary": {"total-successful-session-count": successes,
                                 "total-failure-session-count": sum(failures.values())}}
            if details:
                entry["failure-details"] = details
            policies.append(entry)
        reports[domain] = {"organization-name": organization,
                           "date-range": {"start-datetime": start, "end-datetime": end},
                           "contact-info": contact,
                           "report-id": report_id(domain, day, submitter),
                           "policies": policies}
    return reports


def report_json(report):
    return json.dumps(report, indent=1, sort_keys=False).encode() + b"\n"


def compress(report):
    """The report, gzipped; mtime 0 so that the same report is the same bytes."""
    return gzip.compress(report_json(report), mtime=0)


def file_name(submitter, domain, day, unique):
    """RFC 8460 5.3: sender "!" policy-domain "!" begin "!" end "!" unique-id ".json.gz"."""
    _, _, begin, end = day_range(day)
    return "%s!%s!%d!%d!%s.json.gz" % (submitter, domain, begin, end, unique)


# --- the _smtp._tls TXT record (RFC 8460 section 3) -----------------------------------------

VERSION = b"v=TLSRPTv1"
_DELIM = re.compile(rb"[ \t]*;[ \t]*")
_EXT_NAME = re.compile(rb"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")
_EXT_VALUE = re.compile(rb"[\x21-\x3a\x3c\x3e-\x7e]+\Z")
_URI_SPLIT = re.compile(rb"[ \t]*,[ \t]*")
# RFC 3986 URI characters, less "," "!" ";" which RFC 8460 requires encoded in a tlsrpt-uri
_URI = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#\[\]@$&'()*+=%]+\Z")
_PERCENT = re.compile(rb"%[0-9A-Fa-f]{2}")


class BadRecord(ValueError):
    pass


def select_record(values):
    """The one TLSRPT record among the TXT values of _smtp._tls.<domain> (each already its
    character-strings concatenated), or None: records not beginning with "v=TLSRPTv1"
    and a delimiter are dropped, and anything but exactly one left means no TLSRPT."""
    chosen = [v for v in values if v.startswith(VERSION) and _DELIM.match(v, len(VERSION))]
    return chosen[0] if len(chosen) == 1 else None


def parse_record(record):
    """A TLSRPT record -> its rua URIs (bytes, in order); BadRecord if it does not follow the
    grammar of RFC 8460 section 3 exactly (then the domain has no usable TLSRPT policy):

      tlsrpt-record = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
      field-delim = *WSP ";" *WSP;  tlsrpt-field = tlsrpt-rua / tlsrpt-extension
      tlsrpt-rua = "rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
      tlsrpt-extension = (ALPHA/DIGIT) *31(ALPHA/DIGIT/"_"/"-"/".") "=" 1*(%x21-3A/%x3C/%x3E-7E)
    """
    if not record.startswith(VERSION):
        raise BadRecord("it does not begin with v=TLSRPTv1")
    parts = _DELIM.split(record[len(VERSION):])
    if parts[0] != b"" or len(parts) < 2:
        raise BadRecord("no field after the version")
    fields = parts[1:]
    if fields[-1] == b"" and len(fields) > 1:  # the optional trailing delimiter
        fields = fields[:-1]
    uris = []
    for field in fields:
        if field.startswith(b"rua="):
            for uri in _URI_SPLIT.split(field[4:]):
                if not _URI.match(uri) or _PERCENT.sub(b"", uri).count(b"%"):
                    raise BadRecord("rua holds %s, not a URI" % _show(uri[:80]))
                uris.append(uri)
            continue
        name, equals, value = field.partition(b"=")
        if not equals or not _EXT_NAME.match(name) or not _EXT_VALUE.match(value):
            raise BadRecord("%s is not a field" % _show(field[:80]))
    if not uris:
        raise BadRecord("no rua")
    return uris


def _unquote(text):
    return _PERCENT.sub(lambda m: bytes([int(m.group()[1:], 16)]), text)


_ADDRESS = re.compile(rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]{1,64}@[A-Za-z0-9.-]{1,253}\Z")  # RFC 5322 atext


def _show(data):
    """Bytes from DNS in a message: quoted, control bytes escaped."""
    return repr(data.decode("latin-1"))


def destination(uri):
    """("mailto", address text) or ("https", uri text) for a rua URI, or (None, why)."""
    scheme, _, rest = uri.partition(b":")
    scheme = scheme.lower()
    if scheme == b"mailto":
        address = _unquote(rest.partition(b"?")[0])  # hfields (?subject=...) are not ours to set
        if not _ADDRESS.match(address) or address.startswith(b".") or b".." in address:
            return None, "mailto: %s is not one mail address" % _show(address[:80])
        local, _, host = address.rpartition(b"@")
        try:
            domain_name(host.decode())
        except Malformed:
            return None, "mailto: %s is not one mail address" % _show(address[:80])
        return "mailto", address.decode()
    if scheme == b"https":
        authority = rest[2:].split(b"/")[0].split(b"?")[0].split(b"#")[0]
        host, _, port = authority.rpartition(b":") if authority.rpartition(b":")[2].isdigit() else (authority, b"", b"")
        if not rest.startswith(b"//") or b"@" in authority or not host or (port and not 0 < int(port) < 65536):
            return None, "%s has no host, or holds a user" % _show(uri[:80])
        return "https", uri.decode()
    return None, "%s: only mailto: and https: are delivered" % _show(uri[:80])


# --- the mail (RFC 8460 section 5.3) --------------------------------------------------------

def mail(gz, name, domain, submitter, unique, sender, recipient, date, message_id):
    """The report as a MIME message (bytes, LF line ends, as qmail-inject reads them):
    multipart/report; report-type="tlsrpt", a text part, the application/tlsrpt+gzip part."""
    from email.message import EmailMessage
    from email.policy import SMTP
    # 998: the Subject stays one line (RFC 8460 gives its form; folding would be legal too)
    message = EmailMessage(policy=SMTP.clone(linesep="\n", max_line_length=998))
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = date
    message["Subject"] = "Report Domain: %s Submitter: %s Report-ID: <%s@%s>" % (domain, submitter, unique, submitter)
    message["Message-ID"] = message_id
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = submitter
    message["Auto-Submitted"] = "auto-generated"
    # RFC 8460 5.3: reports go out despite TLS failures; RFC 8689 says so to MTAs that heed it
    message["TLS-Required"] = "No"
    message.set_content("This is an aggregate TLS report (RFC 8460) from %s for %s.\n" % (submitter, domain))
    message.add_attachment(gz, maintype="application", subtype="tlsrpt+gzip", filename=name)
    message.set_type("multipart/report")
    message.set_param("report-type", "tlsrpt")
    return message.as_bytes()
