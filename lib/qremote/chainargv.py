"""argv is the only interface between the programs of the chain: built and parsed here.

qmail-remote-io [options] [--] IP SENDER RECIPIENT...
  -t, --timeout=SECONDS      timeoutremote for each reply and each write (1200)
  -c, --capabilities=LIST    what the server's EHLO offered, comma-separated, as
                             PIPELINING,SIZE=10240000,8BITMIME,SMTPUTF8 (none: HELO)
  -6, --fdr=FD               read the SMTP connection from FD (6)
  -7, --fdw=FD               write the SMTP connection to FD (7)
  -g, --greeting             first read the server's 220 greeting (a fresh connection)
  -h, --ehlo=NAME            say EHLO NAME (HELO if refused) and use what it offers
                             instead of --capabilities
  -n, --note=TEXT            add "(TEXT)" to the K report (qmail-remote says why the
                             message went in cleartext although TLS was wanted)
  -A, --auth=REFERENCE       SMTP AUTH with the credentials of a route line: NAME:LINE:HEX,
                             NAME smtproutes or authsenders, LINE its line number, HEX the
                             line with its password field emptied (routes.reference). Never
                             the secret: qmail-remote-io reads the line itself, just before
                             AUTH, and refuses it if it no longer matches (credentials.py)
IP is used in report texts only. SENDER and RECIPIENTs are as qmail-remote got them:
qmail-remote-io checks and quotes them itself, so it can be run by hand.

qmail-remote-qmtp [options] [--] IP SENDER RECIPIENT...
  -t, -6, -7, -n              as qmail-remote-io's (QMTP has no greeting, no EHLO)

Only the standard library's cheapest modules here: argparse costs ~10 ms a process.
"""

from . import failures
from .options import BadOption, fsencode, scan

IO = "qmail-remote-io"
QMTP = "qmail-remote-qmtp"


class IOOptions:
    __slots__ = ("timeout", "capabilities", "fdr", "fdw", "greeting", "ehlo", "note", "auth",
                 "ip", "sender", "recipients")

    def __init__(self):
        self.timeout = 1200
        self.capabilities = ""
        self.fdr, self.fdw = 6, 7
        self.greeting = False
        self.ehlo = None
        self.note = b""
        self.auth = None
        self.ip = self.sender = None
        self.recipients = []


def build_io(path, timeout, ip, sender, recipients, capabilities=None, ehlo=None, note=b"", greeting=False,
             auth=None):
    """qmail-remote-io's argv as qmail-remote execs it (bytes; addresses raw).

    capabilities: what the cleartext EHLO offered; ehlo: the name to say EHLO with
    instead (after a TLS handshake, RFC 3207 wants EHLO again); greeting: read the
    greeting first (SMTPS: it comes inside TLS); auth: the credentials reference.
    """
    argv = [path.encode(), b"-t", b"%d" % timeout]
    if greeting:
        argv.append(b"-g")
    if auth is not None:
        argv += [b"-A", auth.encode()]
    if ehlo is not None:
        argv += [b"-h", ehlo]
    else:
        argv += [b"-c", capabilities.encode()]
    if note:
        argv += [b"-n", note]
    return argv + [b"--", ip.encode(), sender] + list(recipients)


_IO_VALUED = {"-t": "timeout", "--timeout": "timeout", "-c": "capabilities",
              "--capabilities": "capabilities", "-6": "fdr", "--fdr": "fdr",
              "-7": "fdw", "--fdw": "fdw", "-h": "ehlo", "--ehlo": "ehlo",
              "-n": "note", "--note": "note", "-A": "auth", "--auth": "auth"}
_IO_NUMERIC = ("timeout", "fdr", "fdw")
_IO_FLAGS = {"-g": "greeting", "--greeting": "greeting"}


def parse_io(argv, program=IO, flags=_IO_FLAGS, valued=_IO_VALUED):
    """IOOptions from sys.argv; UsageIO on anything malformed."""
    options = IOOptions()
    try:
        found, rest = scan([fsencode(a) for a in argv[1:]], flags, valued, _IO_NUMERIC)
    except BadOption as error:
        raise failures.UsageIO(program, str(error)) from None
    for field, value in found.items():
        setattr(options, field, fsencode(value) if field in ("ehlo", "note") else value)
    if len(rest) < 3:
        raise failures.UsageIO(program, "usage: %s [options] [--] ip sender recip [recip ...]" % program)
    options.ip = rest[0]
    options.sender = rest[1]
    options.recipients = rest[2:]
    return options


def build_qmtp(path, timeout, ip, sender, recipients, note=b""):
    """qmail-remote-qmtp's argv as qmail-remote execs it (bytes; addresses raw)."""
    argv = [path.encode(), b"-t", b"%d" % timeout]
    if note:
        argv += [b"-n", note]
    return argv + [b"--", ip.encode(), sender] + list(recipients)


_QMTP_VALUED = {k: v for k, v in _IO_VALUED.items() if v in ("timeout", "fdr", "fdw", "note")}


def parse_qmtp(argv):
    """IOOptions (greeting, ehlo, capabilities unused) from qmail-remote-qmtp's argv."""
    return parse_io(argv, QMTP, {}, _QMTP_VALUED)


# --- qmail-remote's internal resume option ---
#
# qmail-remote --qremote-resume=STATE host sender recip...   (TLSC_FAILURE in the environment)
#
# tlsc-io execs this when a TLS handshake fails (its failure continuation), so that the
# connection loop goes on where it stood, without DNS. STATE is the plan's own codec
# (plan.Plan.dump/load). Only this exact prefix in argv[1] is recognised: no domain
# can start with it, and stock's argv shape stays otherwise untouched.

RESUME = "--qremote-resume="


def take_resume(argv):
    """(STATE or None, argv without the resume option)."""
    if len(argv) > 1 and argv[1].startswith(RESUME):
        return argv[1][len(RESUME):], [argv[0]] + argv[2:]
    return None, argv
