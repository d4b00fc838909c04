"""Where things are: the qmail home, its control and run directories, the next program.

The qmail home is DEFAULT_QMAILHOME unless the environment variable QMAILHOME says
otherwise (tests, hand debugging). package/install rewrites the DEFAULT_QMAILHOME
line of the installed copy from conf/qmailhome, as qmail's conf-qmail does.
All other paths are relative to the home: qmail-remote chdirs there first, as stock.
"""

import os
import sys

DEFAULT_QMAILHOME = "/var/qmail"

CONTROL = "control"
RUN = "run/qmail-remote"  # qremote's own state: smtproutes.cdb, its lock, tcpto6
TCPTO = "queue/lock/tcpto"  # stock qmail's IPv4 tcpto, shared with qmail-tcpto


def qmailhome():
    return os.environ.get("QMAILHOME") or DEFAULT_QMAILHOME


# Resolved once, at import: qmail-remote chdirs to the qmail home before it execs the next
# program, which would turn a relative argv[0] ("./qmail-remote") into a wrong path. realpath,
# not abspath: the siblings are beside the real file, so a symlink to an installed command
# (how admins swap /var/qmail/bin/qmail-remote) finds its own chain.
_BINDIR = os.path.dirname(os.path.realpath(sys.argv[0]))


def sibling(program):
    """The path of another program of the chain: it is installed beside this one.

    The kernel hands a script the path it was run by as argv[0] (a full one when
    qmail-rspawn found it through PATH), so the chain never depends on PATH or on a
    compiled-in directory that may differ from where the programs really are.
    """
    return os.path.join(_BINDIR, program)
