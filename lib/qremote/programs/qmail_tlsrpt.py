"""qmail-tlsrpt: RFC 8460 aggregate TLS reports from qremote's delivery trace.

  qmail-tlsrpt [--day YYYY-MM-DD] [--tracedir DIR] [--out DIR] [--send] [options]

Reads TRACEDIR/*.jsonl (control/tracedir by default) for one UTC day (yesterday by
default), builds one report per policy domain (lib/qremote/tlsrpt.py), then:
  --out DIR   writes each as DIR/SUBMITTER!DOMAIN!BEGIN!END!ID.json.gz (RFC 8460 5.3)
  --send      looks up _smtp._tls.DOMAIN TXT and delivers to each rua: mailto: through
              qmail-inject, https: by POST
  neither     prints the reports (JSON) on stdout
One line per action on stdout; problems on stderr, and then exit 111 (cron mails both).
An admin command, run by cron: not on a delivery's path, so dnspython is fine here.
Details: doc/tlsrpt.html.
"""

import argparse
import datetime
import os
import sys

from .. import control, failures, paths, tlsrpt

TIMEOUT = 60


def say(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Run:
    def __init__(self):
        self.problems = 0

    def problem(self, text):
        self.problems += 1
        sys.stderr.write("qmail-tlsrpt: " + text + "\n")
        sys.stderr.flush()


def day_argument(text):
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a date YYYY-MM-DD: %r" % text) from None


def arguments(argv):
    parser = argparse.ArgumentParser(prog="qmail-tlsrpt", description="RFC 8460 TLS reports from qremote's trace.")
    parser.add_argument("--day", type=day_argument, help="the UTC day to report (default: yesterday)")
    parser.add_argument("--tracedir", help="the trace directory (default: control/tracedir)")
    parser.add_argument("--out", help="write the reports (.json.gz) into this directory")
    parser.add_argument("--send", action="store_true", help="deliver each report to its domain's rua")
    parser.add_argument("--org", help="organization-name (default: control/me)")
    parser.add_argument("--submitter", help="the reporting domain (default: control/me)")
    parser.add_argument("--contact", help="contact-info (default: postmaster@SUBMITTER)")
    parser.add_argument("--from", dest="sender", help="From: and envelope sender (default: postmaster@SUBMITTER)")
    parser.add_argument("--inject", help="qmail-inject to use (default: QMAILHOME/bin/qmail-inject)")
    parser.add_argument("--anchors", help="PEM trust anchors for https: (default: the system's)")
    parser.add_argument("--timeout", type=int, default=TIMEOUT, help="seconds per DNS lookup or POST")
    return parser.parse_args(argv)


def read_trace(tracedir, day, run):
    """The sessions of `day`, from the files of that day and the days beside it (a delivery
    that starts before midnight is written after it; a writer's clock may lag)."""
    lines = []
    for offset in (-1, 0, 1):
        name = (day + datetime.timedelta(days=offset)).isoformat() + ".jsonl"
        path = os.path.join(tracedir, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        except OSError as error:
            run.problem("unable to open %s: %s" % (path, error.strerror))
            continue
        with os.fdopen(fd, "rb") as trace:
            lines.extend(bounded_lines(trace))
    return tlsrpt.read_sessions(lines, day)


def bounded_lines(trace):
    """The lines of a file; a line longer than tlsrpt.MAX_LINE comes out as one too-long
    line (counted malformed) without being held whole."""
    while True:
        line = trace.readline(tlsrpt.MAX_LINE + 1)
        if not line:
            return
        if len(line) > tlsrpt.MAX_LINE and not line.endswith(b"\n"):
            while True:  # skip the rest of it
                rest = trace.readline(tlsrpt.MAX_LINE)
                if not rest or rest.endswith(b"\n"):
                    break
        yield line


# --- DNS (dnspython: an admin command; qremote's own resolver serves deliveries) -------------

def resolver(timeout):
    import dns.nameserver
    import dns.resolver
    servers = os.environ.get("DNSCACHEIP", "").split()
    if not servers:  # /etc/resolv.conf, as everything else on the machine
        made = dns.resolver.Resolver()
    else:  # $DNSCACHEIP, as qmail-remote reads it: "ip" or "ip@port", space-separated
        made = dns.resolver.Resolver(configure=False)
        made.nameservers = [dns.nameserver.Do53Nameserver(ip, int(port) if port else 53)
                            for ip, _, port in (word.rpartition("@") if "@" in word else (word, "", "")
                                                for word in servers)]
    made.lifetime = timeout
    return made


def txt_values(dns_resolver, name):
    """The TXT values of name (each record's strings joined), [] if none; a text on failure."""
    import dns.exception
    import dns.resolver
    try:
        answer = dns_resolver.resolve(name + ".", "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as error:
        return "lookup of %s TXT failed: %s" % (name, error.__class__.__name__)
    return [b"".join(record.strings) for record in answer]


def rua_of(dns_resolver, domain):
    """[(scheme, destination)] for a domain, or a text saying why there is none."""
    values = txt_values(dns_resolver, "_smtp._tls." + domain)
    if isinstance(values, str):
        return values
    record = tlsrpt.select_record(values)
    if record is None:
        return "no TLSRPT record (_smtp._tls.%s has %d v=TLSRPTv1 records, not 1)" % (
            domain, sum(v.startswith(tlsrpt.VERSION) for v in values))
    try:
        uris = tlsrpt.parse_record(record)
    except tlsrpt.BadRecord as error:
        return "invalid TLSRPT record: %s" % error
    return [tlsrpt.destination(uri) for uri in uris]


# --- delivery ---------------------------------------------------------------------------------

def send_mail(inject, sender, address, message, timeout):
    import subprocess
    try:
        done = subprocess.run([inject, "-f", sender, address], input=message, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as error:
        return "unable to run %s: %s" % (inject, getattr(error, "strerror", None) or error)
    if done.returncode != 0:
        return "%s exited %d: %s" % (inject, done.returncode, done.stdout.decode("latin-1").strip()[:200])
    return None


def post(uri, gz, anchors, timeout):
    import http.client
    import ssl
    import urllib.parse
    parts = urllib.parse.urlsplit(uri)
    try:
        context = ssl.create_default_context(cafile=anchors)  # verified, with the host name
        connection = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout,
                                                 context=context)
        try:
            path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
            connection.request("POST", path, body=gz, headers={"Content-Type": tlsrpt.MEDIA_TYPE})
            response = connection.getresponse()
            response.read(65536)
        finally:
            connection.close()
    except (OSError, ValueError, http.client.HTTPException, ssl.SSLError) as error:
        return "POST to %s failed: %s" % (uri, error)
    if not 200 <= response.status < 300:  # no redirect is followed: a report goes where the domain said
        return "POST to %s: HTTP %d %s" % (uri, response.status, response.reason)
    return None


def write_file(directory, name, data):
    temp = os.path.join(directory, "." + name + ".tmp")
    with open(temp, "wb") as out:
        out.write(data)
    os.chmod(temp, 0o644)
    os.rename(temp, os.path.join(directory, name))


def main(argv=None):
    args = arguments(sys.argv[1:] if argv is None else argv)
    run = Run()
    try:
        status = report(args, run)
    except failures.Failure as failure:  # a control file qmail-remote would refuse too
        run.problem(failure.text().decode("latin-1").strip())
        status = 111
    except OSError as error:
        run.problem("%s: %s" % (getattr(error, "filename", "") or "", error.strerror or error))
        status = 111
    except Exception as error:  # noqa: BLE001 - an admin tool says what broke, never a traceback
        run.problem("internal error: %s: %s" % (type(error).__name__, str(error)[:200]))
        status = 111
    sys.exit(status if status else (111 if run.problems else 0))


def control_text(name):
    value = control.read_line(name)
    return value.decode("utf-8", "replace") if value else None


def report(args, run):
    # paths from the command line are the caller's, before the chdir to the qmail home
    out = os.path.abspath(args.out) if args.out else None
    tracedir = os.path.abspath(args.tracedir) if args.tracedir else None
    anchors = os.path.abspath(args.anchors) if args.anchors else None
    inject = os.path.abspath(args.inject) if args.inject else os.path.join(paths.qmailhome(), "bin", "qmail-inject")
    os.chdir(paths.qmailhome())
    if tracedir is None:
        tracedir = control_text("tracedir")
        if not tracedir:
            run.problem("no trace directory: control/tracedir is empty or absent, and no --tracedir")
            return 111
    me = control_text("me")
    submitter = args.submitter or me
    if not submitter:
        run.problem("no submitter: control/me is empty or absent, and no --submitter")
        return 111
    try:
        submitter = tlsrpt.domain_name(submitter)
    except tlsrpt.Malformed:
        run.problem("the submitter %r is not a domain name" % submitter)
        return 111
    sender = args.sender or "postmaster@" + submitter
    organization = args.org or me or submitter
    contact = args.contact or "postmaster@" + submitter
    day = args.day or (datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=1))

    sessions, malformed = read_trace(tracedir, day, run)
    if malformed:
        say("skipped %d malformed trace line%s" % (malformed, "" if malformed == 1 else "s"))
    reports = tlsrpt.build_reports(sessions, day, organization, contact, submitter)
    if not reports:
        say("no TLS sessions to report for %s" % day.isoformat())
    try:
        dns_resolver = resolver(args.timeout) if args.send and reports else None
    except ValueError:
        run.problem("$DNSCACHEIP holds %r, not IP addresses (or ip@port)" % os.environ.get("DNSCACHEIP", "")[:80])
        return 111
    except Exception as error:  # noqa: BLE001 - dnspython's: no resolv.conf, no nameserver in it
        run.problem("no resolver: %s" % (str(error)[:200] or type(error).__name__))
        return 111
    now = datetime.datetime.now(datetime.timezone.utc)
    for domain, body in reports.items():
        unique = body["report-id"]
        name = tlsrpt.file_name(submitter, domain, day, unique)
        gz = tlsrpt.compress(body)
        counts = [sum(p["summary"][k] for p in body["policies"])
                  for k in ("total-successful-session-count", "total-failure-session-count")]
        say("%s: %d successful, %d failed sessions" % (domain, counts[0], counts[1]))
        if not args.out and not args.send:
            sys.stdout.write(tlsrpt.report_json(body).decode())
        if out:
            try:
                write_file(out, name, gz)
                say("%s: wrote %s" % (domain, os.path.join(out, name)))
            except OSError as error:
                run.problem("%s: unable to write %s: %s" % (domain, name, error.strerror))
        if not args.send:
            continue
        destinations = rua_of(dns_resolver, domain)
        if isinstance(destinations, str):
            if destinations.startswith("lookup"):  # temporary: the admin runs it again
                run.problem("%s: not sent: %s" % (domain, destinations))
            else:
                say("%s: not sent: %s" % (domain, destinations))
            continue
        for scheme, where in destinations:
            if scheme is None:
                say("%s: skipped rua %s" % (domain, where))
                continue
            if scheme == "mailto":
                from email.utils import format_datetime
                message = tlsrpt.mail(gz, name, domain, submitter, unique, sender, where, format_datetime(now),
                                      "<%s.%d@%s>" % (unique, now.timestamp() * 1e6, submitter))
                trouble = send_mail(inject, sender, where, message, args.timeout)
            else:
                trouble = post(where, gz, anchors, args.timeout)
            if trouble:
                run.problem("%s: %s" % (domain, trouble))
            else:
                say("%s: sent to %s:%s" % (domain, scheme, where) if scheme == "mailto" else
                    "%s: sent to %s" % (domain, where))
    return 0
