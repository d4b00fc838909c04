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
IP is used in report texts only. SENDER and RECIPIENTs are as qmail-remote got them:
qmail-remote-io checks and quotes them itself, so it can be run by hand.

Only the standard library's cheapest modules here: argparse costs ~10 ms a process.
"""

import os

from . import failures

IO = "qmail-remote-io"


class IOOptions:
    __slots__ = ("timeout", "capabilities", "fdr", "fdw", "greeting", "ehlo",
                 "ip", "sender", "recipients")

    def __init__(self):
        self.timeout = 1200
        self.capabilities = ""
        self.fdr, self.fdw = 6, 7
        self.greeting = False
        self.ehlo = None
        self.ip = self.sender = None
        self.recipients = []


def build_io(path, timeout, capabilities, ip, sender, recipients):
    """qmail-remote-io's argv as qmail-remote execs it (bytes; addresses raw)."""
    return [path.encode(), b"-t", b"%d" % timeout, b"-c", capabilities.encode(), b"--",
            ip.encode(), sender] + list(recipients)


_IO_VALUED = {"-t": "timeout", "--timeout": "timeout", "-c": "capabilities",
              "--capabilities": "capabilities", "-6": "fdr", "--fdr": "fdr",
              "-7": "fdw", "--fdw": "fdw", "-h": "ehlo", "--ehlo": "ehlo"}
_IO_NUMERIC = ("timeout", "fdr", "fdw")


def parse_io(argv):
    """IOOptions from sys.argv; UsageIO on anything malformed."""
    options = IOOptions()
    args = [os.fsencode(a) for a in argv[1:]]
    i = 0
    while i < len(args):
        arg = args[i].decode("utf-8", "surrogateescape")
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
        if name in ("-g", "--greeting") and not value:
            options.greeting = True
            i += 1
            continue
        field = _IO_VALUED.get(name)
        if field is None:
            raise failures.UsageIO(IO, "unknown option %s" % name)
        if not value and not eq:
            i += 1
            if i >= len(args):
                raise failures.UsageIO(IO, "option %s needs a value" % name)
            value = args[i].decode("utf-8", "surrogateescape")
        if field in _IO_NUMERIC:
            if not value.isdigit():
                raise failures.UsageIO(IO, "option %s needs a number" % name)
            value = int(value)
        elif field == "ehlo":
            value = os.fsencode(value)
        setattr(options, field, value)
        i += 1
    rest = args[i:]
    if len(rest) < 3:
        raise failures.UsageIO(IO, "usage: qmail-remote-io [options] -- ip sender recipient...")
    options.ip = rest[0]
    options.sender = rest[1]
    options.recipients = rest[2:]
    return options
