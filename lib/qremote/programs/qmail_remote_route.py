"""qmail-remote-route domain [sender]: which route qmail-remote would take, and why.

Prints, for mail from sender (default: none, a bounce) to domain, the rule that decides
(authsenders, smtproutes' `!@`, qmtproutes, smtproutes, or MX records) with its file and
line, then the relay, port, protocol and TLS mode, the source address, the HELO name
and the AUTH user, each with where it comes from, the way qmail-remote decides them
(doc/qmail-remote-route.html). Never the secret: only where it is (inline in the line,
or a credentials file, whose mode is checked as qmail-remote-io checks it).
No DNS and no connection: a route can be checked without sending mail.
Errors: one line on stderr, exit 111 (a control file that qmail-remote would refuse is
shown with the Z text qmail-remote would report).
"""

import os
import sys

from .. import control, failures, paths, routes
from ..admintool import Fatal, run

USAGE = b"usage: qmail-remote-route domain [sender]\n"


def keyed_lines(lines):
    """{lower-cased key: line number of the last line with it} (the last line wins)."""
    found = {}
    for number, line in lines:
        found[line.partition(b":")[0].lower()] = number
    return found


def decide(host, sender):
    """(file, line number, key, why, Route or MX), or (None, None, None, why, MX)."""
    notes = []
    if sender == b"":
        lines = control.read_lines("smtproutes") or []
        table = routes.parse(lines)
        if routes.BOUNCE_KEY in table:
            return ("smtproutes", keyed_lines(lines)[routes.BOUNCE_KEY], routes.BOUNCE_KEY,
                    "the sender is empty (a bounce): smtproutes' !@ line", table[routes.BOUNCE_KEY]), notes
    lines = control.read_lines(routes.AUTHSENDERS) or []
    table = routes.parse_authsenders(lines)
    for key in routes.sender_keys(sender):
        if key in table:
            number = keyed_lines(lines)[key]
            if table[key] is routes.MX:
                notes.append("authsenders line %d (%s) has an empty relay: authsenders does not apply"
                             % (number, describe_key(key)))
                break
            return ("authsenders", number, key, "authsenders matches the sender (%s), before any host route"
                    % describe_key(key), table[key]), notes
    for name, kind in (("qmtproutes", routes.QMTPROUTES), ("smtproutes", routes.SMTPROUTES)):
        lines = control.read_lines(name) or []
        table = routes.parse(lines, kind)
        for key in routes.candidate_keys(host.lower()):
            if key in table:
                number = keyed_lines(lines)[key]
                if table[key] is routes.MX:
                    if name == "qmtproutes":
                        notes.append("qmtproutes line %d (%s) has an empty relay: smtproutes decides"
                                     % (number, describe_key(key)))
                        break
                    return (name, number, key, "smtproutes line with an empty relay: the MX records", routes.MX), notes
                return (name, number, key, "%s matches the host (%s)" % (name, describe_key(key)), table[key]), notes
    return (None, None, None, "no route: the MX records of the domain", routes.MX), notes


def describe_key(key):
    if key == b"":
        return "the default line, empty key"
    return "key %s" % key.decode("utf-8", "replace")


PROTOCOL_TEXT = {"smtp": "SMTP", "smtps": "SMTPS (implicit TLS: the handshake right after the connect; never "
                 "cleartext)", "qmtp": "QMTP", "qmtps": "QMTPS (implicit TLS)"}


def explain(host, sender):
    out = []

    def say(field, text):
        out.append("%-9s %s" % (field + ":", text))

    (name, number, key, why, route), notes = decide(host, sender)
    say("domain", host.decode("utf-8", "replace"))
    say("sender", sender.decode("utf-8", "replace") or "<> (a bounce)")
    say("rule", ("control/%s line %d: %s" % (name, number, why)) if name else why)
    for note in notes:
        say("note", note)
    policy = control.tls_policy()
    if route is routes.MX:
        say("relay", "the MX records of %s (DNS, not looked up here)" % host.decode("utf-8", "replace"))
        say("port", "25")
        say("protocol", "SMTP")
    else:
        say("relay", route.relay.decode("utf-8", "replace"))
        say("port", "%d" % route.port)
        say("protocol", PROTOCOL_TEXT[route.protocol])
    smtps = route is not routes.MX and route.protocol in ("smtps", "qmtps")
    auth = route is not routes.MX and route.where is not None
    if smtps:
        say("tls", "implicit%s" % (", certificate verified (tlsstrictness 2)" if policy.verify else
                                   ", certificate not verified (tlsstrictness %d)" % policy.strictness))
    elif route is not routes.MX and route.protocol == "qmtp":
        say("tls", "none (QMTP has no STARTTLS)")
    elif policy.wanted:
        say("tls", "STARTTLS, control/tlsstrictness %d (doc/starttls.html)" % policy.strictness)
    elif auth:
        say("tls", "STARTTLS when offered (a route with AUTH); no control/trustanchors: not verified")
    else:
        say("tls", "none (no control/trustanchors)")
    localip, helohost = routes.domainips_for(sender)
    if route is not routes.MX and route.localip:
        say("source", "%s (the route's localip)" % route.localip)
    elif localip:
        say("source", "%s (control/domainips, for %s)" % (localip, domain_of(sender)))
    else:
        outgoing = control.outgoing_addresses()
        say("source", ", ".join(sorted(outgoing.values())) + " (control/outgoingip)" if outgoing
            else "the kernel's choice")
    if helohost:
        say("helo", "%s (control/domainips, for %s)" % (helohost.decode("utf-8", "replace"), domain_of(sender)))
    else:
        helo = control.read_line("helohost")
        say("helo", "%s (control/%s)" % ((helo or control.read_line("me") or b"(none!)").decode("utf-8", "replace"),
                                         "helohost" if helo else "me"))
    if auth:
        say("auth", "user %s" % route.user.decode("utf-8", "replace"))
        say("secret", secret_place(name, number))
        options = set(route.options.split(b","))
        if b"xoauth2" in options:
            say("mechs", "XOAUTH2 only (a bearer token), only inside TLS")
        else:
            say("mechs", "the strongest both offer: SCRAM-SHA-256, CRAM-MD5, PLAIN, LOGIN; PLAIN and LOGIN "
                "only inside TLS" + (" (here also in cleartext: the cleartext option)"
                                     if b"cleartext" in options else ""))
    elif route is not routes.MX and route.protocol.startswith("smtp"):
        say("auth", "none")
    return ("\n".join(out) + "\n").encode("utf-8", "replace")


def domain_of(sender):
    return (sender.rpartition(b"@")[2].lower() or b"*").decode("utf-8", "replace")


def secret_place(name, number):
    """Where the secret is, never what it is."""
    line = dict(control.read_lines(name))[number]
    field = line.partition(b":")[2].partition(b"|")[2].split(b"|")[1]
    if not field.startswith(b"file:"):
        return ("inline in control/%s line %d (anyone who can read that file can read it: a credentials "
                "file is safer, doc/auth.html)" % (name, number))
    path = field[5:]
    shown = path.decode("utf-8", "replace")
    try:
        st = os.stat(path)
    except OSError as error:
        return "credentials file %s: UNUSABLE, %s" % (shown, error.strerror)
    if st.st_mode & 0o007:
        return "credentials file %s: UNUSABLE, mode %o lets every user read it" % (shown, st.st_mode & 0o777)
    return "credentials file %s (mode %o)" % (shown, st.st_mode & 0o777)


def main():
    argv = [os.fsencode(a) for a in sys.argv[1:]]
    if not 1 <= len(argv) <= 2 or argv[0].startswith(b"-"):
        os.write(2, USAGE)
        os._exit(100)

    def body():
        try:
            os.chdir(paths.qmailhome())
        except OSError as error:
            raise Fatal(b"unable to chdir to the qmail home: %s\n" % error.strerror.encode()) from None
        try:
            return explain(argv[0], argv[1] if len(argv) > 1 else b"")
        except failures.Failure as failure:
            raise Fatal(failure.text()) from None
    run(body, b"qmail-remote-route: fatal: ", 2)
