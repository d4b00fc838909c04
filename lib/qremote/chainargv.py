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
IP is used in report texts only. SENDER and RECIPIENTs are as qmail-remote got them:
qmail-remote-io checks and quotes them itself, so it can be run by hand.

Only the standard library's cheapest modules here: argparse costs ~10 ms a process.
"""

import os

from . import failures
from .options import BadOption, scan

IO = "qmail-remote-io"


class IOOptions:
    __slots__ = ("timeout", "capabilities", "fdr", "fdw", "greeting", "ehlo", "note",
                 "ip", "sender", "recipients")

    def __init__(self):
        self.timeout = 1200
        self.capabilities = ""
        self.fdr, self.fdw = 6, 7
        self.greeting = False
        self.ehlo = None
        self.note = b""
        self.ip = self.sender = None
        self.recipients = []


def build_io(path, timeout, ip, sender, recipients, capabilities=None, ehlo=None, note=b""):
    """qmail-remote-io's argv as qmail-remote execs it (bytes; addresses raw).

    capabilities: what the cleartext EHLO offered; ehlo: the name to say EHLO with
    instead (after a TLS handshake, RFC 3207 wants EHLO again).
    """
    argv = [path.encode(), b"-t", b"%d" % timeout]
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
              "-n": "note", "--note": "note"}
_IO_NUMERIC = ("timeout", "fdr", "fdw")
_IO_FLAGS = {"-g": "greeting", "--greeting": "greeting"}


def parse_io(argv):
    """IOOptions from sys.argv; UsageIO on anything malformed."""
    options = IOOptions()
    try:
        found, rest = scan([os.fsencode(a) for a in argv[1:]], _IO_FLAGS, _IO_VALUED, _IO_NUMERIC)
    except BadOption as error:
        raise failures.UsageIO(IO, str(error)) from None
    for field, value in found.items():
        setattr(options, field, os.fsencode(value) if field in ("ehlo", "note") else value)
    if len(rest) < 3:
        raise failures.UsageIO(IO, "usage: qmail-remote-io [options] [--] ip sender recip [recip ...]")
    options.ip = rest[0]
    options.sender = rest[1]
    options.recipients = rest[2:]
    return options


# --- qmail-remote's internal resume option ---
#
# qmail-remote --qremote-resume=STATE host sender recip...   (TLSC_FAILURE in the environment)
#
# tlsc-io execs this when a TLS handshake fails (its failure continuation), so that the
# connection loop goes on where it stood, without DNS. STATE is the tlspolicy.Plan:
#   PASS ; ATTEMPTS ; LATER ; REASONS ; LAST
# ATTEMPTS: comma-separated ip/port/pref/hex(name)/flags/hex(note), flags "c" = cleartext,
# "r" = the reconnection after a failed handshake;
# LATER: ip/port/pref/hex(name); REASONS: hex(ip)/hex(why); LAST: hex(letter + text) of the
# last failure of a server before TLS, or empty. The first attempt is the one
# whose handshake failed. Only this exact prefix in argv[1] is recognised: no domain
# can start with it, and stock's argv shape stays otherwise untouched.

RESUME = "--qremote-resume="


def _target_fields(target):
    return "%s/%d/%d/%s" % (target.ip, target.port, target.pref, target.name.hex())


def _target_from(fields):
    from .candidates import Target, normal_ip

    ip, port, pref, name = fields[:4]
    found = normal_ip(ip)
    if found is None:
        raise ValueError("bad address %r" % ip)
    return Target(found[0], found[1], int(port), int(pref), bytes.fromhex(name))


def encode_resume(plan):
    attempts = ",".join("%s/%s/%s" % (_target_fields(a.target), ("c" if a.cleartext else "") + (
        "r" if a.retry else ""), a.note.hex()) for a in plan.todo)
    later = ",".join(_target_fields(t) for t in plan.later)
    reasons = ",".join("%s/%s" % (ip.hex(), why.hex()) for ip, why in plan.reasons)
    failure = plan.last_failure
    last = (failure.letter + failure.text()).hex() if failure is not None else ""
    return RESUME + ";".join(["%d" % plan.pass_no, attempts, later, reasons, last])


def take_resume(argv):
    """(STATE or None, argv without the resume option)."""
    if len(argv) > 1 and argv[1].startswith(RESUME):
        return argv[1][len(RESUME):], [argv[0]] + argv[2:]
    return None, argv


def decode_resume(state, policy):
    """The Plan encoded in STATE; raises ValueError when it is malformed."""
    from .tlspolicy import Attempt, Plan

    from .failures import Remembered

    pass_no, attempts, later, reasons, last = state.split(";")
    todo = []
    for item in filter(None, attempts.split(",")):
        fields = item.split("/")
        if len(fields) != 6 or fields[4] not in ("", "c", "r", "cr"):
            raise ValueError("bad attempt %r" % item)
        todo.append(Attempt(_target_from(fields), cleartext="c" in fields[4], note=bytes.fromhex(fields[5]),
                            retry="r" in fields[4]))
    if not todo:
        raise ValueError("no attempt: the first one is the one whose handshake failed")
    kept = [_target_from(item.split("/")) for item in filter(None, later.split(","))]
    why = [tuple(bytes.fromhex(x) for x in item.split("/")) for item in filter(None, reasons.split(","))]
    last = bytes.fromhex(last)
    if last and last[:1] not in (b"D", b"Z"):
        raise ValueError("bad last failure")
    remembered = Remembered(last[:1], last[1:]) if last else None
    return Plan(policy, todo, kept, why, int(pass_no), remembered)

