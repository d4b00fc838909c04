"""qmail-remote host sender recip...: find the server, connect, greet, EHLO, exec on.

Reads like stock's main(): usage, home, control files, route, addresses, targets,
loop protection, then the connection loop. The first server that answers the
greeting and EHLO (or HELO) gets the rest of the delivery: this process execs
qmail-remote-io with the connection on fds 6 and 7, or, when the STARTTLS policy
(tlspolicy.py, doc/starttls.html) says TLS and the server said 220 to STARTTLS,
tlsc-io, which does the handshake and execs qmail-remote-io over the TLS relay.
A server that fails the greeting or EHLO+HELO (or drops or stalls there) is left
with QUIT and the next address is tried; when none is left, the last such failure
is the report (or, at tlsstrictness 2, why no server would do TLS).

When tlsc-io's handshake fails it execs its failure continuation: this program
again, as `qmail-remote --qremote-resume=STATE host sender recip...` with
TLSC_FAILURE in the environment. STATE is the plan of the loop (chainargv.py), so
the loop goes on where it stood: no DNS, no smtproutes, no loop protection again.
"""

import os
import sys

from .. import addresses, chainargv, connect, control, failures, paths, report, session, tcpto, tlspolicy
from ..smtp import commands
from ..wire import Channel

PROGRAM = "qmail-remote"


def main():
    report.run_program(PROGRAM, deliver, sys.argv)


def deliver(argv, reporter):
    state, argv = chainargv.take_resume(argv)
    if len(argv) < 4:
        raise failures.Usage()
    host, sender, recipients = os.fsencode(argv[1]), os.fsencode(argv[2]), [os.fsencode(a) for a in argv[3:]]
    try:
        os.chdir(paths.qmailhome())
    except OSError:
        raise failures.NoHome() from None
    controls = control.Controls.load()
    policy = control.tls_policy()
    addresses.envelope(sender, recipients)  # refuse CR/LF/NUL before any connection
    plan = first_plan(host, controls, policy) if state is None else resumed_plan(state, policy)

    backoff = tcpto.Backoff()
    while True:
        group = plan.next_group()
        if not group:
            break
        group = [a for a in group if not backoff.skip(a.target.ip, a.target.family)]
        unreachable = set()  # ids of targets that refused or timed out

        def on_result(target, error, timed_out):
            backoff.record(target.ip, target.family, timed_out)
            if error:
                unreachable.add(id(target))
        sock, target = connect.race(connect.interleave([a.target for a in group]), controls.timeoutconnect,
                                    on_result, sources=controls.outgoingip)
        if sock is None:
            continue
        attempt = next(a for a in group if a.target is target)
        plan.put_back([a for a in group if a is not attempt and id(a.target) not in unreachable])
        channel = Channel(sock.fileno(), sock.fileno(), controls.timeoutremote, sock=sock)
        ip = target.ip.encode()
        try:
            session.greeting(channel, ip)
            capabilities = session.hello(channel, ip, controls.helohost)
            decision = plan.after_ehlo(attempt, capabilities)
            if decision == tlspolicy.STARTTLS:
                reply = session.exchange(channel, ip, commands.STARTTLS)
                if reply.code == 220:
                    if channel.unread_bytes():
                        # bytes sent before our handshake would be read as if inside TLS
                        sock.close()
                        plan.handshake_failed(attempt, failures.TLS_INJECTION)
                        continue
                    start_tls(sock, attempt, plan, controls, host, sender, recipients)
                decision = plan.after_starttls_refused(attempt, reply.text)
        except (failures.GreetingFailed, failures.HeloRejected) as failure:
            session.quit(channel)
            sock.close()
            plan.last_failure = failure
            continue
        except failures.ConnectionDied as failure:
            sock.close()
            plan.last_failure = failure
            continue
        if decision == tlspolicy.SKIP:
            session.quit(channel)
            sock.close()
            continue
        hand_over(sock, target, capabilities, controls, sender, recipients, attempt.note)
    raise plan.exhausted() or failures.NoConnection()


def first_plan(host, controls, policy):
    """The route, DNS and loop protection: every target to try, in order."""
    from .. import ipme, resolve, routes
    from ..candidates import apply_prefme

    route = routes.route_for(host)
    targets = resolve.require_some(resolve.targets_for(host, route, controls.timeoutdns))
    routed = route is not routes.MX
    # a routed delivery skips loop protection (stock): do not ask the kernel for nothing
    targets = apply_prefme(targets, () if routed else ipme.my_addresses(), routed=routed)
    return tlspolicy.Plan(policy, [tlspolicy.Attempt(t) for t in targets])


def resumed_plan(state, policy):
    """The plan tlsc-io handed back, with its first attempt's handshake failure applied."""
    try:
        plan = chainargv.decode_resume(state, policy)
    except (ValueError, IndexError) as error:
        raise failures.ResumeInvalid(str(error)) from None
    reported = os.environ.pop("TLSC_FAILURE", "") or "handshake: tlsc-io gave no reason"
    kind, why = tlspolicy.handshake_failure(reported)
    if kind == "local":  # a TLS file is unusable: the same for every server, the admin must act
        raise failures.TLSLocal(reported.partition(": ")[2].encode("ascii", "replace"))
    plan.handshake_failed(plan.todo.pop(0), why)
    return plan


def chain_environment():
    """The environment for the next program: no SSL_* or TLSC_FAILURE left from elsewhere."""
    return {k: v for k, v in os.environb.items() if not (k.startswith(b"SSL_") or k == b"TLSC_FAILURE")}


def on_fds_6_and_7(sock):
    fd = sock.fileno()
    for wanted in (6, 7):
        if fd != wanted:
            os.dup2(fd, wanted)
        os.set_inheritable(wanted, True)


def run_next(path, argv):
    try:
        os.execve(path, argv, chain_environment())
    except OSError as error:
        raise failures.ChainBroken(path.encode(), error.strerror) from None


def hand_over(sock, target, capabilities, controls, sender, recipients, note=b""):
    """Exec qmail-remote-io in cleartext with the connection as fds 6 (read) and 7 (write)."""
    on_fds_6_and_7(sock)
    path = paths.sibling(chainargv.IO)
    run_next(path, chainargv.build_io(path, controls.timeoutremote, target.ip, sender, recipients,
                                      capabilities=capabilities.to_arg(), note=note))


def start_tls(sock, attempt, plan, controls, host, sender, recipients):
    """Exec tlsc-io: on success it runs qmail-remote-io (EHLO again inside TLS), on
    failure this program again with the plan, this attempt first."""
    policy = plan.policy
    plan.todo.insert(0, attempt)
    myself = paths.sibling(PROGRAM)
    continuation = [myself.encode(), chainargv.encode_resume(plan).encode(), host, sender] + recipients
    io = paths.sibling(chainargv.IO)
    prog = chainargv.build_io(io, controls.timeoutremote, attempt.target.ip, sender, recipients,
                              ehlo=controls.helohost)
    from ..tlsargv import PROGRAM as TLSC, build_tlsc

    path = paths.sibling(TLSC)
    # anchors only when verifying: below tlsstrictness 2 any certificate is taken, and
    # loading a system bundle costs tlsc-io ~50 ms of CPU for nothing
    anchors = policy.anchors if policy.verify else None
    argv = build_tlsc(path, tlspolicy.server_name(attempt.target), anchors, policy.clientcert,
                      policy.clientkey, policy.verify, controls.timeoutconnect, controls.timeoutremote,
                      continuation, prog)
    on_fds_6_and_7(sock)
    run_next(path, argv)
