"""tlsc-io [options] -- [CONTINUATION...] PROG...: a TLS client relay (doc/tlsc-io.html).

Handshake on fds 6/7, then fork twice: the grandchild relays between the TLS
connection and a socketpair, and this process (its pid kept) execs PROG with fds 6
and 7 on the cleartext end and SSL_* in the environment. A failed handshake execs
the failure continuation with TLSC_FAILURE instead, or exits 111 without one.
With -R (in a delivery) a failure that leaves nothing to run ends in a Z report on
fd 1 instead of a message on fd 2 and exit 100 or 111, which qmail-rspawn would turn
into a bounce or an empty deferral.
"""

import posix as os  # the C functions os re-exports, without os.py (about 1 ms per start)
import sys

from .. import tlsc, trace
from ..options import fsdecode
from ..tlsc import FATAL_EXIT, USAGE_EXIT

_report = False  # -R: set once the command line says so


HELP = """usage: %s
A TLS client relay: the handshake on fds 6/7, then PROG runs with the cleartext on
fds 6/7; a failed handshake runs the first N words after -- instead (doc/tlsc-io.html).
  -k, --name=NAME               the server's name: SNI, and what -v checks
  -a, --anchors=FILE|DIR/       trust anchors
  -c, --cert=FILE, -y, --key=FILE  a client certificate and its key
  -v, --verify                  require a certificate valid for NAME
  -m, --name-check=dn|dn*|ca    verify, with that name check (dn: no wildcard; ca: none)
  -N, --also-name=NAME          another name the certificate may carry (repeatable)
  -s, --system-anchors          add OpenSSL's default trust store
  -d, --depth=N                 at most N intermediate certificates
  -C, --ciphers=LIST            OpenSSL cipher list (TLS 1.2 and older)
  -n, --anonymous               allow anonymous (aNULL) suites
  -f, --fingerprint=HEX         pin the certificate's SHA-1/224/256/512 digest (repeatable)
  -D, --tlsa="U S M HEX"        a DANE TLSA record, usage 2 or 3 (repeatable)
  -p, --password-ref=domaincerts:LINE:HEX  the key's password, from control/domaincerts
  -t, --handshake-timeout=SECONDS  (default 60)
  -T, --timeout=SECONDS         idle relay (default 1200)
  -6, --fdr=FD, -7, --fdw=FD    the connection on other descriptors
  -F, --on-failure=N            the failure continuation's length
  -R, --report                  in a delivery: failures end in a Z report on fd 1
""" % tlsc.USAGE


def main():
    if sys.argv[1:2] == ["--help"]:  # for people: qmail-remote never passes it
        os.write(1, HELP.encode())
        return
    global _report
    _report = tlsc.wants_report(sys.argv)
    # before OpenSSL is loaded: it reads OPENSSL_CONF and friends when it starts
    for name in [name for name in os.environ if tlsc.openssl_variable(name)]:
        os.unsetenv(name)  # posix.environ (bytes keys) is a copy: the C environment too
        del os.environ[name]
    try:
        run(sys.argv)
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001 - a traceback helps nobody in a mail chain
        die("internal error: %s: %s" % (type(error).__name__, error))


def die(text, code=FATAL_EXIT):  # never returns
    if _report:
        from .. import failures
        from ..report import Reporter

        Reporter(1).failure(failures.TLSCFailed(("usage: " if code == USAGE_EXIT else "") + text))
        os._exit(0)
    try:
        os.write(2, ("tlsc-io: %s: %s\n" % ("usage" if code == USAGE_EXIT else "fatal", text))
                 .encode("utf-8", "replace"))
    except OSError:
        pass
    os._exit(code)


def run(argv):
    try:
        options = tlsc.parse_tlsc(argv)
    except tlsc.Usage as error:
        die(str(error), USAGE_EXIT)
    from ..tls import context as tlscontext
    from ..tls.relay import TLSConnection

    env = dict(os.environ)
    for variable in tlsc.SSL_VARIABLES + (tlsc.FAILURE_VARIABLE,):
        env.pop(variable, None)
    try:
        anchors = tlscontext.kept_anchors(options)
        context = tlscontext.build(options, anchors)
        connection = TLSConnection(context, options.name, options.fdr, options.fdw)
        try:
            connection.handshake(options.handshake_timeout)
        except tlscontext.TLSFailure as failure:
            raise tlscontext.warm_failure(failure) if anchors else failure
        verified_by = tlscontext.check(connection.sslobj, options, anchors)
        clear, relay_end = _pair()
        _spawn_relay(connection, clear, relay_end, options)
    except tlscontext.TLSFailure as failure:
        fail(options, env, failure)
    except tlscontext.SSLError as error:  # e.g. a server name OpenSSL refuses: this server's problem
        fail(options, env, tlscontext.TLSFailure("handshake", tlscontext.reason(error)))
    except OSError as error:  # socketpair() or fork() failed: local resources
        fail(options, env, tlscontext.TLSFailure("local", "unable to start the relay: %s" % error.strerror))
    except Exception as error:  # noqa: BLE001 - a bug must not break the chain: the continuation goes on
        # not "local" (which defers the whole delivery): the next address, or cleartext, may do
        fail(options, env, tlscontext.TLSFailure("handshake", "internal error: %s: %s" % (type(error).__name__, error)))
    for variable, value in tlscontext.environment(connection.sslobj, options.name, options.verify,
                                                  verified_by).items():
        if value is not None:
            env[variable] = value
    trace.tls_done(env)
    # PROG's fds 6 and 7 are the cleartext end (dup2'd fds are inheritable); the network is the relay's
    os.dup2(clear, 6)
    os.dup2(clear, 7)
    for fd in {clear, options.fdr, options.fdw} - {6, 7}:
        _close(fd)
    execute(options.prog, env)


def _pair():
    from _socket import AF_UNIX, SOCK_STREAM, socketpair

    ours, theirs = socketpair(AF_UNIX, SOCK_STREAM)
    return ours.detach(), theirs.detach()


def _spawn_relay(connection, clear, relay_end, options):
    """Double fork: the relay is reparented at once, so it never becomes PROG's zombie."""
    middle = os.fork()
    if middle == 0:
        try:
            if os.fork() == 0:
                _be_relay(connection, clear, relay_end, options)
        finally:
            os._exit(0)
    os.close(relay_end)
    os.waitpid(middle, 0)


def _be_relay(connection, clear, relay_end, options):
    try:
        os.close(clear)
        # the report pipe (fd 1) and the message (fd 0) must reach EOF when PROG exits
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            if fd != null and fd not in (options.fdr, options.fdw):
                os.dup2(null, fd)
        # and nothing else PROG's parent may wait on stays open here: keep only the three sockets
        low = 3
        for keep in sorted({options.fdr, options.fdw, relay_end}):
            if keep >= low:
                os.closerange(low, keep)
                low = keep + 1
        os.closerange(low, 1 << 20)
        connection.relay(relay_end, options.timeout)
    finally:
        os._exit(0)


def fail(options, env, failure):  # never returns
    """The handshake failed: close the connection, then exec the continuation (or exit 111)."""
    line = failure.line()
    trace.tls_failed(failure.kind, failure.text)
    for fd in {options.fdr, options.fdw}:
        _close(fd)
    if not options.continuation:
        die(line.decode("ascii"))
    env[tlsc.FAILURE_VARIABLE] = line
    execute(options.continuation, env)


def execute(argv, env):  # never returns
    from _signal import SIGPIPE, SIG_DFL, signal

    signal(SIGPIPE, SIG_DFL)  # Python ignores it; PROG should get the usual default
    try:
        if b"/" in argv[0]:
            os.execve(argv[0], argv, env)
        import os as full_os  # the PATH search: only for a bare name, by hand

        full_os.execvpe(argv[0], argv, env)
    except OSError as error:
        die("unable to run %s: %s" % (fsdecode(argv[0]), error.strerror))


def _close(fd):
    try:
        os.close(fd)
    except OSError:
        pass
