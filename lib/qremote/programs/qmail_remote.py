"""qmail-remote host sender recip...: find the server, connect, greet, EHLO, exec on.

Reads like stock's main(): usage, home, control files, route, addresses, targets,
loop protection, then the connection loop. The first server that answers the
greeting and EHLO (or HELO) gets the rest of the delivery: this process execs
qmail-remote-io with the connection on fds 6 and 7. A server that fails the
greeting or EHLO+HELO (or drops or stalls there) is left with QUIT and the next
address is tried; when none is left, the last such failure is the report.
"""

import os
import sys

from .. import addresses, chainargv, connect, control, failures, paths, report, resolve, routes, session, tcpto
from ..candidates import apply_prefme
from ..wire import Channel

PROGRAM = "qmail-remote"


def main():
    report.run_program(PROGRAM, deliver, sys.argv)


def deliver(argv, reporter):
    if len(argv) < 4:
        raise failures.Usage()
    host, sender, recipients = os.fsencode(argv[1]), os.fsencode(argv[2]), [os.fsencode(a) for a in argv[3:]]
    try:
        os.chdir(paths.qmailhome())
    except OSError:
        raise failures.NoHome() from None
    controls = control.Controls.load()
    route = routes.route_for(host)
    addresses.envelope(sender, recipients)  # refuse CR/LF/NUL before any connection
    targets = resolve.require_some(resolve.targets_for(host, route, controls.timeoutdns))
    from .. import ipme
    targets = apply_prefme(targets, ipme.my_addresses(), routed=route is not routes.MX)

    backoff = tcpto.Backoff()
    last_failure = None
    for group in resolve.groups(targets):
        group = [t for t in group if not backoff.skip(t.ip, t.family)]
        sock, target = connect.race(connect.interleave(group), controls.timeoutconnect,
                                    lambda t, error, timed_out: backoff.record(t.ip, t.family, timed_out))
        if sock is None:
            continue
        channel = Channel(sock.fileno(), sock.fileno(), controls.timeoutremote, sock=sock)
        try:
            session.greeting(channel, target.ip.encode())
            capabilities = session.hello(channel, target.ip.encode(), controls.helohost)
        except (failures.GreetingFailed, failures.HeloRejected) as failure:
            session.quit(channel)
            sock.close()
            last_failure = failure
            continue
        except failures.ConnectionDied as failure:
            sock.close()
            last_failure = failure
            continue
        hand_over(sock, target, capabilities, controls, sender, recipients)
    raise last_failure or failures.NoConnection()


def hand_over(sock, target, capabilities, controls, sender, recipients):
    """Exec qmail-remote-io with the connection as fds 6 (read) and 7 (write)."""
    fd = sock.fileno()
    for wanted in (6, 7):
        if fd != wanted:
            os.dup2(fd, wanted)
        os.set_inheritable(wanted, True)
    path = paths.sibling(chainargv.IO)
    argv = chainargv.build_io(path, controls.timeoutremote, target.ip, sender, recipients,
                              capabilities=capabilities.to_arg())
    try:
        os.execv(path, argv)
    except OSError as error:
        raise failures.ChainBroken(path.encode(), error.strerror) from None
