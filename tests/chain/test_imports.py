"""Import boundaries, checked on real deliveries through the installed chain.

Each program of the chain pays for every module it imports at every delivery, and some
modules mark a boundary the design keeps (skarnet's "programs split by the libraries they
link"): the SMTP programs never carry the resolver, qmail-remote-io never TLS, an IP route
never DNS, the SMTP core no I/O at all.

How the modules are seen, with no change to the programs: an audited copy of the
installed bin directory, where each command is a small script run by the same
interpreter with the same -IS that replaces execv, execve and _exit in os and posix (a
program's only ways out but returning) with versions that first append the process's
sys.modules to a log, then runs the installed command file itself. The programs find each other beside
argv[0] (paths.sibling), so every exec of the chain lands on an audited copy too, and the
log holds what each program really loaded, lazy imports included. tlsc-io's relay, a
forked child, logs as "tlsc-io-child".
"""

import os
import subprocess
import sys

import pytest

from tests.support.net import needs_root

# The resolver, whatever its module is called this month: dns.py is becoming a package.
# A name matches a prefix when it is the prefix or a submodule of it ("dns" is dnspython).
RESOLVER = ("qremote.dns", "qremote.resolver", "dns")
# ... and, for the programs after the connection, the route-to-targets step as well
TARGETS = RESOLVER + ("qremote.resolve",)
# SMTP AUTH's modules: only qmail-remote-io of a delivery with AUTH may load them
AUTH = ("hashlib", "_hashlib", "hmac", "qremote.smtp.auth", "qremote.scramcache", "qremote.credentials")
TLS = ("ssl", "_ssl")
# tlsc-io's checks beyond OpenSSL's (-D, -f, -N, -p): never loaded for plain STARTTLS
TLS_CHECKS = ("qremote.tls.dane", "cryptography", "qremote.credentials", "hashlib", "_hashlib")
# what the SMTP core (lib/qremote/smtp: sans-IO) must never load
IO = ("socket", "_socket", "ssl", "_ssl", "selectors", "select")

AUDIT = r'''#!%(python)s -IS
# audited copy of %(installed)s for tests/chain/test_imports.py
import os, sys
def _dump(how, name=%(name)r, log=%(log)r, pid=os.getpid()):
    who = name if os.getpid() == pid else name + "-child"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(fd, ("%%s %%s %%s\n" %% (who, how, " ".join(sorted(sys.modules)))).encode())
    os.close(fd)
def _hooked(real, how):
    def hook(*args):
        _dump(how)
        return real(*args)
    return hook
_ways_out = _hooked(os.execv, "exec"), _hooked(os.execve, "exec"), _hooked(os._exit, "exit")
import posix  # some modules call posix directly (os.py costs start-up time)
os.execv, os.execve, os._exit = posix.execv, posix.execve, posix._exit = _ways_out
with open(%(installed)r) as _command:
    _code = compile(_command.read(), %(installed)r, "exec")
try:
    exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
finally:
    _dump("return")
'''


def matches(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def forbidden(modules, prefixes):
    return sorted(m for m in modules if matches(m, prefixes))


@pytest.fixture(scope="session")
def audited(installed, tmp_path_factory):
    """(bin directory of audited commands, their log file)."""
    where = tmp_path_factory.mktemp("audited")
    bindir, log = str(where / "bin"), str(where / "modules.log")
    os.makedirs(bindir)
    for name in os.listdir(installed):
        installed_path = os.path.join(installed, name)
        with open(installed_path) as command:
            first = command.readline()
        if not first.startswith("#!"):
            continue  # a kept C binary (qmail-remote.orig)
        path = os.path.join(bindir, name)
        with open(path, "w") as out:
            out.write(AUDIT % {"python": first[2:].split()[0], "installed": installed_path, "name": name,
                               "log": log})
        os.chmod(path, 0o755)
    return bindir, log


@pytest.fixture
def audit(audited, tmp_path):
    """A Home whose chain is the audited one; loaded() -> {program: set of modules} of the last run."""
    from tests.support.chain import Home
    bindir, log = audited

    class Audit(Home):
        def remote(self, *args, **kw):
            if os.path.exists(log):
                os.unlink(log)
            return super().remote(*args, **kw)

        def loaded(self):
            seen = {}
            with open(log) as lines:
                for line in lines:
                    who, _, names = line.rstrip("\n").split(" ", 2)
                    seen.setdefault(who, set()).update(names.split())
            return seen
    return Audit(tmp_path / "qmail", bindir)


MSG = b"Subject: imports\n\nhello\n"


def delivered(raw, ip):
    assert raw.startswith(b"r\0K" + ip.encode() + b" accepted message."), raw


def check_after_connection(loaded, tls):
    """What every delivery must show for the programs after qmail-remote."""
    assert "qmail-remote-io" in loaded, loaded.keys()
    assert forbidden(loaded["qmail-remote-io"], TARGETS) == []
    assert forbidden(loaded["qmail-remote-io"], TLS) == []
    if tls:
        assert "tlsc-io" in loaded, loaded.keys()
        assert forbidden(loaded["tlsc-io"], TARGETS) == []
        assert "_ssl" in loaded["tlsc-io"]  # the audit sees lazy imports: it would see a forbidden one
        assert forbidden(loaded.get("tlsc-io-child", set()), TARGETS) == []
        assert forbidden(loaded["tlsc-io"] | loaded.get("tlsc-io-child", set()), TLS_CHECKS) == []
    else:
        assert "tlsc-io" not in loaded


def tls_setup(home, pki, strictness=0):
    home.control("trustanchors", pki.ca_file + "\n")
    home.control("tlsstrictness", "%d\n" % strictness)


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "starttls"])
def test_ip_route_loads_no_resolver(audit, server, pki, tls):
    s = server(tls_cert=pki.server("127.0.0.1") if tls else None)
    audit.route("example.org:127.0.0.1:%d" % s.port)
    if tls:
        tls_setup(audit, pki, 2)
    _, raw = audit.remote("example.org", "s@src.example", "r@example.org", message=MSG)
    delivered(raw, "127.0.0.1")
    loaded = audit.loaded()
    assert forbidden(loaded["qmail-remote"], RESOLVER) == []
    assert forbidden(loaded["qmail-remote"], TLS) == []  # the handshake is tlsc-io's
    for program, modules in loaded.items():  # no AUTH route: no AUTH module anywhere
        assert forbidden(modules, AUTH) == [], program
    check_after_connection(loaded, tls)
    assert s.wait_sessions()[0].tls is tls


@pytest.fixture
def dns_stub():
    from tests.support.dnsserver import DNSServer
    stub = DNSServer()
    yield stub
    stub.stop()


@needs_root
@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "starttls"])
def test_mx_delivery_keeps_the_resolver_in_qmail_remote(audit, server, pki, dns_stub, tls):
    ip = "127.0.8.2"
    try:
        s = server(host=ip, port=25, tls_cert=pki.server("a.mx.test") if tls else None)
    except OSError as error:
        pytest.skip("cannot listen on %s:25: %s" % (ip, error))
    dns_stub.add("mx.test", "MX", "10 a.mx.test.").add("a.mx.test", "A", ip)
    if tls:
        tls_setup(audit, pki, 2)
    _, raw = audit.remote("mx.test", "s@src.example", "r@mx.test", message=MSG, DNSCACHEIP=dns_stub.address())
    delivered(raw, ip)
    loaded = audit.loaded()
    # the one program that resolves did load the resolver: the audit sees it when it is there
    assert forbidden(loaded["qmail-remote"], RESOLVER), sorted(loaded["qmail-remote"])
    # no _mta-sts TXT record, nothing cached: MTA-STS is not even loaded
    assert forbidden(loaded["qmail-remote"], MTASTS) == []
    check_after_connection(loaded, tls)
    assert s.wait_sessions()[0].tls is tls


MTASTS = ("qremote.mtasts",)
HTTPS_CLIENT = ("qremote.mtasts.fetch", "ssl", "_ssl", "http.client", "http")


@needs_root
def test_mx_delivery_with_a_cached_mta_sts_policy_loads_no_https_client(audit, server, pki, dns_stub):
    """The first delivery fetches the policy (it loads the HTTPS client); the second finds
    it cached: qmail-remote loads qremote.mtasts, never its fetch, ssl or http.client."""
    from tests.support.stsserver import STSServer
    ip, policy_ip = "127.0.8.3", "127.0.8.4"
    try:
        s = server(host=ip, port=25, tls_cert=pki.server("a.sts.test"))
        sts = STSServer(*pki.server("mta-sts.sts.test"), host=policy_ip, port=443)
    except OSError as error:
        pytest.skip("cannot listen on port 25 or 443: %s" % error)
    try:
        sts.policy = b"version: STSv1\nmode: enforce\nmx: a.sts.test\nmax_age: 86400\n"
        dns_stub.add("sts.test", "MX", "10 a.sts.test.").add("a.sts.test", "A", ip)
        dns_stub.add("_mta-sts.sts.test", "TXT", '"v=STSv1; id=1;"').add("mta-sts.sts.test", "A", policy_ip)
        with open(pki.ca_file) as ca:
            audit.control("mtastsanchors", ca.read())
        tls_setup(audit, pki, 0)
        for fetched in (True, False):
            _, raw = audit.remote("sts.test", "s@src.example", "r@sts.test", message=MSG,
                                  DNSCACHEIP=dns_stub.address())
            delivered(raw, ip)
            loaded = audit.loaded()["qmail-remote"]
            assert forbidden(loaded, MTASTS)  # the audit sees it when it is there
            assert bool(forbidden(loaded, HTTPS_CLIENT)) is fetched, forbidden(loaded, HTTPS_CLIENT)
        assert sts.count() == 1
        check_after_connection(audit.loaded(), True)
    finally:
        sts.stop()


def smtp_modules():
    from tests.conftest import TOP
    smtp = os.path.join(TOP, "lib", "qremote", "smtp")
    return sorted(name[:-3] for name in os.listdir(smtp) if name.endswith(".py") and name != "__init__.py")


@pytest.mark.parametrize("module", smtp_modules())
def test_smtp_core_does_no_io(module):
    """Each module of the sans-IO SMTP core, imported alone in a fresh -I -S interpreter."""
    from tests.conftest import TOP
    code = ("import sys; sys.path.insert(0, %r); import qremote.smtp.%s; print(' '.join(sys.modules))"
            % (os.path.join(TOP, "lib"), module))
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert "qremote.smtp." + module in loaded
    assert forbidden(loaded, IO + RESOLVER) == []


def test_commands_import_qremote_from_the_bundle(installed):
    """package/install's bundle is what the installed commands import qremote from, and it
    holds the installed paths.py (the qmail home baked in), not the source's."""
    path = os.path.join(installed, "qmail-remote-io")
    with open(path) as command:
        first = command.readline()
        text = command.read()
    assert text.rstrip().endswith("\nmain()")
    probe = text.rstrip()[:-len("main()")] + (
        "import qremote.paths\n"
        "print(qremote.paths.DEFAULT_QMAILHOME)\n"
        "loaders = [m.__spec__.loader for n, m in sys.modules.items() if n.split('.')[0] == 'qremote']\n"
        "print(' '.join(sorted({getattr(l, '__name__', type(l).__name__) for l in loaders})))\n")
    done = subprocess.run([first[2:].split()[0], "-I", "-S", "-c", probe], capture_output=True, text=True,
                          check=True)
    home, loaders = done.stdout.split("\n")[:2]
    assert home == os.path.dirname(installed)
    assert loaders == "QremoteBundle"


@pytest.mark.parametrize("tls", [False, True], ids=["qmtp", "qmtps"])
def test_qmtp_program_loads_no_resolver_and_no_tls(audit, pki, tls):
    """qmail-remote-qmtp, like qmail-remote-io: no resolver, no TLS (tlsc-io's), and
    qmail-remote-io is not run at all."""
    from tests.support.qmtpserver import SpecQMTP
    with SpecQMTP(tls_cert=pki.server("127.0.0.1") if tls else None) as s:
        audit.control("qmtproutes", "example.org:127.0.0.1;%s%d\n" % ("s" if tls else "", s.port))
        _, raw = audit.remote("example.org", "s@src.example", "r@example.org", message=MSG)
        assert raw.startswith(b"r\0K127.0.0.1 accepted message over QMTP%s." % (b"S" if tls else b"")), raw
    loaded = audit.loaded()
    assert forbidden(loaded["qmail-remote"], RESOLVER + TLS) == []
    assert forbidden(loaded["qmail-remote-qmtp"], TARGETS + TLS) == []
    assert "qmail-remote-io" not in loaded
    assert ("tlsc-io" in loaded) is tls


def test_qmtp_core_does_no_io():
    from tests.conftest import TOP
    code = ("import sys; sys.path.insert(0, %r); import qremote.qmtp; print(' '.join(sys.modules))"
            % os.path.join(TOP, "lib"))
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert forbidden(set(done.stdout.split()), IO + RESOLVER) == []






def test_auth_modules_only_in_qmail_remote_io(audit, server):
    """With AUTH over cleartext (a server offering only CRAM-MD5, answering everything
    with a challenge): qmail-remote routes, and qmail-remote-io alone reads the secret
    and computes the digest."""
    s = server(ehlo=b"250-mx\r\n250-AUTH CRAM-MD5\r\n250 PIPELINING\r\n", unknown=b"334 PDEyMz4=\r\n")
    audit.route("example.org:127.0.0.1;%d|alice|pw" % s.port)
    audit.remote("example.org", "s@src.example", "r@example.org", message=MSG)
    loaded = audit.loaded()
    # (routes.reference borrows credentials.secretless: the line's pinned form, no secret)
    assert forbidden(loaded["qmail-remote"], AUTH[:-1]) == []
    assert {"qremote.smtp.auth", "qremote.credentials"} <= loaded["qmail-remote-io"]
    # CRAM-MD5 with the built-in _md5, credentials read with posix: no OpenSSL (the audit
    # itself imports os, so os.py cannot be checked here)
    assert forbidden(loaded["qmail-remote-io"], ("hashlib", "_hashlib", "hmac", "qremote.control")) == []
    assert "qremote.scramcache" not in loaded["qmail-remote-io"]  # SCRAM's alone


# the trace (doc/trace.html): its assembler and any JSON module only when control/tracedir is set
TRACE_WRITER = ("qremote.tracefile",)
JSON = ("json", "_json")


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "starttls"])
def test_trace_costs_no_import_without_tracedir(audit, server, pki, tls):
    s = server(tls_cert=pki.server("127.0.0.1") if tls else None)
    audit.route("example.org:127.0.0.1:%d" % s.port)
    if tls:
        tls_setup(audit, pki, 0)
    for traced in (False, True):
        if traced:
            os.makedirs(os.path.join(audit.path, "trace"))
            audit.control("tracedir", os.path.join(audit.path, "trace") + "\n")
        _, raw = audit.remote("example.org", "s@src.example", "r@example.org", message=MSG)
        delivered(raw, "127.0.0.1")
        loaded = audit.loaded()
        for program, modules in loaded.items():
            assert forbidden(modules, JSON) == [], program  # never: the trace writes its JSON by hand
            if not program.endswith("-child"):  # tlsc-io's relay forks before the handshake's event
                assert bool(forbidden(modules, TRACE_WRITER)) is traced, program
    assert len(os.listdir(os.path.join(audit.path, "trace"))) == 1


def test_trace_module_imports_nothing_new():
    """qremote.trace (the hooks every program calls) loads no module beyond itself."""
    from tests.conftest import TOP
    code = ("import sys; sys.path.insert(0, %r); before = set(sys.modules); import qremote.trace; "
            "print(' '.join(sorted(set(sys.modules) - before)))" % os.path.join(TOP, "lib"))
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["qremote", "qremote.trace"]


@needs_root
@pytest.mark.parametrize("dane", ["1", "0"])
def test_no_validating_resolver_loads_no_tls_rules(audit, server, pki, dns_stub, dane):
    # most sites: a resolver that does not validate (no AD), or control/dane 0: every host is
    # "insecure" or "none", which decides nothing, so tlsstrictness alone speaks: the plan of
    # before, no rule per target, and tlsdest is not loaded (it was, for the "insecure" states)
    ip = "127.0.8.3"
    try:
        s = server(host=ip, port=25, tls_cert=pki.server("b.mx.test"))
    except OSError as error:
        pytest.skip("cannot listen on %s:25: %s" % (ip, error))
    dns_stub.add("mx.test", "MX", "10 b.mx.test.").add("b.mx.test", "A", ip)
    tls_setup(audit, pki, 2)
    audit.control("dane", dane + "\n")
    _, raw = audit.remote("mx.test", "s@src.example", "r@mx.test", message=MSG, DNSCACHEIP=dns_stub.address())
    delivered(raw, ip)
    loaded = audit.loaded()["qmail-remote"]
    assert "qremote.tlsdest" not in loaded, sorted(loaded)
    assert s.wait_sessions()[0].tls
