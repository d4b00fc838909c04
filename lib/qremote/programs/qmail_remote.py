"""qmail-remote host sender recip...: find the server, connect, greet, EHLO, exec on.

Reads like stock's main(): usage, home, control files, route, addresses, targets,
loop protection, then the connection loop. The first server that answers the
greeting and EHLO (or HELO) gets the rest of the delivery: this process execs
qmail-remote-io with the connection on fds 6 and 7, or, when the STARTTLS policy
(plan.py, doc/starttls.html) says TLS and the server said 220 to STARTTLS,
tlsc-io, which does the handshake and execs qmail-remote-io over the TLS relay.
A server that fails the greeting or EHLO+HELO (or drops or stalls there) is left
with QUIT and the next address is tried; when none is left, or the opening's
deadline (control/timeoutopening) has passed, the plan says what to report.

The decisions are elsewhere: smtp/opening.py runs the greeting, EHLO and STARTTLS
exchange, plan.py chooses the addresses and what a server without TLS means. This
module only moves bytes and execs.

A target qmtproutes made QMTP (routes.py) has no opening: once connected, this
process execs qmail-remote-qmtp on fds 6 and 7 at once, or for QMTPS (implicit TLS)
tlsc-io, which execs qmail-remote-qmtp inside TLS. QMTP has no STARTTLS: when the
policy wants TLS, a plain QMTP target counts as a server without it (plan.py).

When tlsc-io's handshake fails it execs its failure continuation: this program
again, as `qmail-remote --qremote-resume=STATE host sender recip...` with
TLSC_FAILURE in the environment. STATE is the plan (plan.py), so the loop goes on
where it stood: no DNS, no smtproutes, no loop protection, no control files again.
"""

import os
import sys
import time

from .. import addresses, chainargv, connect, control, failures, paths, report, tcpto, trace
from ..candidates import QMTP, QMTPS, SMTPS
from ..plan import CLEAR, Plan
from ..smtp.opening import BROKEN, NO_TLS, TLS, Opening
from ..wire import Channel, Dropped, converse, quit

PROGRAM = "qmail-remote"
STS_CACHE = "run/qmail-remote/mta-sts/"  # mtasts.cache.DIRECTORY: one file per policy domain


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
    trace.begin(state is None, host, sender, recipients)  # before the control files: their Z is traced too
    controls = control.Controls.load()
    addresses.envelope(sender, recipients)  # refuse CR/LF/NUL before any connection
    plan = first_plan(host, sender, controls) if state is None else resumed_plan(state)

    backoff = tcpto.Backoff()
    while plan.remaining(time.monotonic()) > 0:
        group = plan.next_group()
        if not group:
            break
        group = [a for a in group if not backoff.skip(a.target.ip, a.target.family) and not qmtp_skipped(a, plan)]
        sock, attempt = connect_one(group, plan, controls, backoff)
        if sock is None:
            continue
        if trace.FD is not None:  # which policy decided the TLS of the server the delivery went to
            trace.event("policy", decided_by=plan.rule_of(attempt).origin)
        protocol = attempt.target.protocol
        if protocol == QMTP:
            hand_over_qmtp(sock, attempt, controls, sender, recipients)
        elif protocol in (QMTPS, SMTPS):
            start_tls(sock, attempt, plan, controls, host, sender, recipients)
        else:
            try_server(sock, attempt, plan, controls, host, sender, recipients)
    raise plan.exhausted(time.monotonic()) or failures.NoConnection()


def first_plan(host, sender, controls):
    """The route (authsenders, smtproutes' !@, qmtproutes, smtproutes), domainips, DNS and
    loop protection: every target to try, in order, and the route's facts for the chain."""
    from .. import ipme, resolve, routes
    from ..candidates import apply_prefme

    route = routes.route_for(host, sender)
    routed = route is not routes.MX
    # MTA-STS (doc/mta-sts.html) is for deliveries by MX only; its TXT goes beside the MX query
    sts_on = not routed and control.switch("mtasts")
    # DANE (doc/dane.html) acts only on answers a validating resolver marked secure (AD):
    # without one, nothing changes
    lookup = resolve.lookup_for(host, route, controls.timeoutdns, dane=control.switch("dane"), sts=sts_on)
    trace.route(route, lookup)
    targets = resolve.require_some(lookup.targets)
    # a routed delivery skips loop protection (stock): do not ask the kernel for nothing
    targets = apply_prefme(targets, () if routed else ipme.my_addresses(), routed=routed)
    localip, helohost = routes.domainips_for(sender)
    policy = control.tls_policy()
    sts, fetched = sts_policy(host, lookup.sts) if sts_on else (None, None)
    targets, rules = tls_rules(policy, targets, host, sender, routed, lookup, sts, tls_memory())
    if trace.FD is not None and not routed:
        trace_policy(host, policy, targets, rules, lookup, fetched)
    return Plan(policy, targets, time.monotonic() + controls.timeoutopening, controls.timeoutopening,
                source=(route.localip if routed else None) or localip, helohost=helohost,
                auth=route.where if routed else None, rules=rules)


def sts_policy(host, txt):
    """(the MTA-STS policy of host for the TLS rules: an enforce policy, or None;
    (policy, event) of mtasts.policy_for for the trace, or None when it was not asked).
    A testing policy changes nothing (the trace says what enforce would have done)."""
    from .. import hostname

    try:
        domain = host.decode("ascii") if host.isascii() else hostname.to_ascii(host.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError, hostname.InvalidName: no such policy domain
        return None, None
    if txt == [] and not os.path.exists(STS_CACHE + domain.lower().rstrip(".")):
        return None, None  # no record and nothing cached: most domains; mtasts is not even loaded
    from .. import mtasts

    policy, event = mtasts.policy_for(domain.rstrip("."), txt, time.time(), mtasts.TIMEOUT)
    return (policy if policy is not None and policy.mode == "enforce" else None), (policy, event)


def trace_policy(host, policy, targets, rules, lookup, fetched):
    """The trace's policy object (doc/trace.html) of a delivery by MX, and an attempt,
    never connected, for each target a policy skips; only when tracing."""
    from ..tlsrule import from_policy
    from ..tracefile import policy_facts

    rules = rules or [from_policy(policy)] * len(targets)
    fields, skipped = policy_facts(host, targets, rules, getattr(lookup, "dane", None) or {}, fetched)
    trace.event("policy", **fields)
    for target, why, failure in skipped:
        trace.attempt(target, why)
        trace.result(why, failure)


def tls_memory():
    """control/tlsmemory on: a function MX name -> (level, date) it did TLS, or None
    (doc/tlsmemory.html); off (the default): None."""
    from .. import tlsmemory

    days = tlsmemory.configured_days()
    if not days:
        return None
    now = time.time()
    return lambda name: tlsmemory.remembered(name, now, days)


def tls_rules(policy, targets, host, sender, routed, lookup=None, sts=None, memory=None):
    """(targets, rules): each target's TLS rule (tlsrule.decide), with tlsdestinations'
    port and SMTPS/QMTPS override applied to the target; rules None when only
    tlsstrictness speaks (no tlsdestinations, no domaincerts: the plan of before).
    lookup: the resolver's Lookup (its .dane: {target name: Dane}), when it has one;
    sts: the MTA-STS policy of host (MX deliveries only), or None; memory: a function
    MX name -> (level, date) remembered or None (control/tlsmemory on), or None."""
    destinations, domaincerts = control.read_lines("tlsdestinations"), control.read_lines("domaincerts")
    # "insecure" (no validating resolver: most sites) and "none" decide nothing (level 2
    # goes on): only the other states make this more than tlsstrictness alone
    dane = {name: d for name, d in (getattr(lookup, "dane", None) or {}).items()
            if d.state not in ("none", "insecure")}
    if destinations is None and not domaincerts and not dane and sts is None and memory is None:
        return targets, None  # tlsstrictness alone: not even tlsdest's import
    from .. import tlsdest, tlsrule
    from ..candidates import Target

    dests = None if destinations is None else tlsdest.parse(destinations)
    sender_domain = sender.rpartition(b"@")[2]
    client = tlsdest.client_for(sender_domain, domaincerts or [])
    rules, moved = [], []
    for target in targets:
        rule = tlsrule.decide(policy, dests, host, target.name, sender_domain, dane=dane.get(target.name),
                              sts=None if routed else sts, memory=memory(target.name) if memory else None,
                              routed=routed, client=client)
        for named, path in rule.checks:
            tlsdest.check_file(named, path)
        if rule.port is not None and (rule.port, rule.protocol or target.protocol) != (target.port, target.protocol):
            target = Target(target.ip, target.family, rule.port, target.pref, target.name,
                            rule.protocol or target.protocol)
        moved.append(target)
        rules.append(rule)
    return moved, rules


def qmtp_skipped(attempt, plan):
    """A plain QMTP target when the policy wants TLS: QMTP has no STARTTLS, so it is a
    server without TLS, decided before connecting (tlsstrictness 0 goes on in cleartext)."""
    return (attempt.target.protocol == QMTP and plan.tls_wanted(attempt)
            and plan.without_tls(attempt, failures.QMTP_NO_TLS) != CLEAR)


def resumed_plan(state):
    """The plan tlsc-io handed back, with its first attempt's handshake failure applied."""
    from ..tlsc import FAILURE_VARIABLE, parse_failure

    try:
        plan = Plan.load(state)
    except (ValueError, IndexError) as error:
        raise failures.ResumeInvalid(str(error)) from None
    reported = os.environb.pop(FAILURE_VARIABLE, b"").decode("ascii", "replace")
    kind, text = parse_failure(reported or "handshake: tlsc-io gave no reason")
    if kind == "local":  # a TLS file is unusable: the same for every server, the admin must act
        raise failures.TLSLocal(text)
    plan.handshake_failed(failures.tls_reason(kind, text))
    return plan


def connect_one(group, plan, controls, backoff):
    """(socket, Attempt) of the first address of group to connect, or (None, None).
    Those the race did not try go back to the plan."""
    failed = {}  # target ip -> why it could not be reached

    def on_result(target, error, timed_out):
        backoff.record(target.ip, target.family, timed_out)
        if error:
            failed[target.ip] = "connect timed out" if timed_out else "connect failed: %s" % os.strerror(error)
            plan.unreachable(target, failed[target.ip])
        trace.attempt(target, failed.get(target.ip))

    timeout = min(controls.timeoutconnect, plan.remaining(time.monotonic()))
    sources = controls.outgoingip
    if plan.source is not None:  # the route's localip, or domainips', wins for its family
        from ..candidates import normal_ip
        address, _, ifname = plan.source.partition("%")
        ip, family = normal_ip(address)
        sources = dict(sources)
        sources[family] = ip
        if ifname:  # a link-local source needs its interface (domainips' localip%ifname)
            try:
                sources[family] = (ip, 0, 0, _socket_if_index(ifname))
            except OSError as error:
                raise failures.DomainipUnusable(plan.source, error.strerror or "no such interface") from None
    try:
        sock, target = connect.race(connect.interleave([a.target for a in group]), timeout, on_result,
                                    sources=sources)
    except failures.SourceUnusable as failure:
        if plan.source is not None and failure.address == plan.source.partition("%")[0]:
            failure.named = "its route (localip) or control/domainips"
        raise
    plan.put_back([a for a in group if a.target is not target and a.target.ip not in failed])
    if sock is None:
        return None, None
    return sock, next(a for a in group if a.target is target)


def _socket_if_index(name):
    import _socket
    return _socket.if_nametoindex(name)


def try_server(sock, attempt, plan, controls, host, sender, recipients):
    """Greeting, EHLO and maybe STARTTLS with one server: returns only when this server
    will not take the message (the plan knows why); otherwise execs the next program."""
    ip = attempt.target.ip.encode()
    channel = Channel(sock.fileno(), sock.fileno(), controls.timeoutremote, sock=sock, deadline=plan.deadline)
    opening = Opening(ip, plan.helohost or controls.helohost, starttls=plan.tls_wanted(attempt))
    try:
        converse(channel, opening)
    except Dropped as error:
        trace.result("connection died: %s" % error)
        sock.close()
        plan.server_failed(attempt, failures.ConnectionDied(ip, why=str(error).encode(), too_long=error.too_long))
        return
    except (failures.GreetingFailed, failures.HeloRejected) as failure:
        trace.result(failure.text())
        quit(channel)
        sock.close()
        plan.server_failed(attempt, failure)
        return
    if opening.outcome == TLS:
        start_tls(sock, attempt, plan, controls, host, sender, recipients)
    if opening.outcome in (BROKEN, NO_TLS):  # TLS wanted, not to be had here (RFC 8460's words)
        trace.result(opening.why, "validation-failure" if opening.outcome == BROKEN else "starttls-not-supported")
    if opening.outcome == BROKEN:
        sock.close()
        plan.broken_tls(attempt, opening.why)
        return
    if opening.outcome == NO_TLS and plan.without_tls(attempt, opening.why) != CLEAR:
        quit(channel)
        sock.close()
        return
    hand_over(sock, attempt, opening.capabilities, plan, controls, sender, recipients)


def chain_environment():
    """The environment for the next program: no SSL_* or TLSC_FAILURE left from elsewhere,
    and none of OpenSSL's variables (TLS depends on control files only)."""
    from ..tlsc import openssl_variable

    return {k: v for k, v in os.environb.items()
            if not (k.startswith(b"SSL_") or k == b"TLSC_FAILURE" or openssl_variable(k))}


def on_fds_6_and_7(sock):
    fd = sock.fileno()
    for wanted in (6, 7):
        if fd != wanted:
            os.dup2(fd, wanted)
        os.set_inheritable(wanted, True)


def run_next(path, argv):  # never returns
    try:
        os.execve(path, argv, chain_environment())
    except OSError as error:
        raise failures.ChainBroken(path.encode(), error.strerror) from None


def hand_over(sock, attempt, capabilities, plan, controls, sender, recipients):  # never returns
    """Exec qmail-remote-io in cleartext with the connection as fds 6 (read) and 7 (write)."""
    on_fds_6_and_7(sock)
    path = paths.sibling(chainargv.IO)
    run_next(path, chainargv.build_io(path, controls.timeoutremote, attempt.target.ip, sender, recipients,
                                      capabilities=capabilities.to_arg(), note=attempt.note, auth=plan.auth))


def hand_over_qmtp(sock, attempt, controls, sender, recipients):  # never returns
    """Exec qmail-remote-qmtp in cleartext with the connection as fds 6 and 7: QMTP has no
    greeting, the package goes out at once."""
    on_fds_6_and_7(sock)
    path = paths.sibling(chainargv.QMTP)
    run_next(path, chainargv.build_qmtp(path, controls.timeoutremote, attempt.target.ip, sender, recipients,
                                        note=attempt.note))


def start_tls(sock, attempt, plan, controls, host, sender, recipients):  # never returns
    """Exec tlsc-io: on success it runs qmail-remote-io (EHLO again inside TLS), or
    qmail-remote-qmtp for QMTPS (TLS from the first byte); on failure this program
    again with the plan, this attempt first."""
    from ..tlsc import PROGRAM as TLSC, build_tlsc, server_name
    from ..tlsrule import tlsc_options

    options = tlsc_options(plan.rule_of(attempt), server_name(attempt.target))
    myself = paths.sibling(PROGRAM)
    continuation = [myself.encode(), (chainargv.RESUME + plan.dump(first=attempt)).encode(), host, sender]
    if attempt.target.protocol == QMTPS:
        qmtp = paths.sibling(chainargv.QMTP)
        prog = chainargv.build_qmtp(qmtp, controls.timeoutremote, attempt.target.ip, sender, recipients)
    else:
        io = paths.sibling(chainargv.IO)
        # SMTPS: the greeting comes inside TLS; STARTTLS: EHLO again inside TLS (RFC 3207)
        prog = chainargv.build_io(io, controls.timeoutremote, attempt.target.ip, sender, recipients,
                                  ehlo=plan.helohost or controls.helohost, greeting=attempt.target.protocol == SMTPS,
                                  auth=plan.auth)
    path = paths.sibling(TLSC)
    # the handshake is part of the opening: it ends by the plan's deadline too
    handshake = max(1, min(controls.timeoutconnect, int(plan.remaining(time.monotonic()) + 0.999)))
    argv = build_tlsc(path, options.pop("name"), options.pop("anchors"), options.pop("cert"), options.pop("key"),
                      options.pop("verify"), handshake, controls.timeoutremote, continuation + recipients, prog,
                      report=True, **options)
    on_fds_6_and_7(sock)
    run_next(path, argv)
