"""MTA-STS against real servers on loopback: the policy host (HTTPS with a test CA given as
control/mtastsanchors, tests/support/stsserver.py), its name resolved by the DNS stub
(tests/support/dnsserver.py, $DNSCACHEIP) through qremote's resolver, and policy_for's
cache in a scratch qmail home's run/qmail-remote/mta-sts, shared by several processes.

The policy host listens on a free port (fetch's and policy_for's `port`), so no root."""

import json
import os
import subprocess
import sys
import time

import pytest

from qremote import mtasts
from qremote.mtasts import cache, fetch
from tests.support.dnsserver import DNSServer
from tests.support.stsserver import STSServer

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOMAIN = "example.com"
HOST = "mta-sts.example.com"
POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n"
TXT = [b"v=STSv1; id=one;"]
NOW = 1_800_000_000


@pytest.fixture
def sts_home(tmp_path, monkeypatch, pki):
    """A qmail home as the working directory: control/mtastsanchors = the test CA."""
    os.makedirs(tmp_path / "run" / "qmail-remote")
    os.makedirs(tmp_path / "control")
    with open(pki.ca_file, "rb") as ca, open(tmp_path / "control" / "mtastsanchors", "wb") as anchors:
        anchors.write(ca.read())
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def dns(monkeypatch):
    server = DNSServer()
    server.add(HOST, "A", "127.0.0.1")
    monkeypatch.setenv("DNSCACHEIP", server.address())
    yield server
    server.stop()


@pytest.fixture
def https(pki):
    servers = []

    def start(*names):
        server = STSServer(*pki.server(*(names or (HOST,))))
        server.policy = POLICY
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


def failure(port, timeout=10):
    with pytest.raises(fetch.Failed) as raised:
        fetch.fetch(DOMAIN, timeout, port)
    return raised.value.args[0]


# --- fetch ----------------------------------------------------------------------------------

def test_a_good_policy_is_fetched_with_sni_and_host(sts_home, dns, https):
    server = https()
    assert fetch.fetch(DOMAIN, 10, server.port) == POLICY
    assert server.requests == [("GET", "/.well-known/mta-sts.txt", "%s:%d" % (HOST, server.port), HOST)]
    assert dns.asked(HOST, "A")  # our resolver, through $DNSCACHEIP


def test_text_plain_with_parameters_is_accepted(sts_home, dns, https):
    server = https()
    server.headers = {"Content-Type": "Text/Plain; charset=utf-8"}
    assert fetch.fetch(DOMAIN, 10, server.port) == POLICY


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_refused(sts_home, dns, https, status):
    server = https()
    server.status = status
    server.headers = {"Content-Type": "text/plain", "Location": "https://mta-sts.example.com/elsewhere"}
    assert failure(server.port) == "HTTP %d: redirect refused" % status
    assert server.count() == 1  # not followed


def test_a_404_is_a_failure(sts_home, dns, https):
    server = https()
    server.status = 404
    assert failure(server.port) == "HTTP 404"


@pytest.mark.parametrize("length", [True, False])
def test_a_body_over_64_kib_is_refused(sts_home, dns, https, length):
    server = https()
    server.policy = POLICY + b"x: " + b"y" * 65536 + b"\r\n"
    if not length:  # no Content-Length: the body itself is counted
        server.headers = {"Content-Type": "text/plain", "Content-Length": "-"}
    assert failure(server.port) == "policy larger than 64 KiB"


def test_exactly_64_kib_is_accepted(sts_home, dns, https):
    server = https()
    server.policy = POLICY + b"x: " + b"y" * (65536 - len(POLICY) - 5) + b"\r\n"
    assert len(server.policy) == 65536
    assert fetch.fetch(DOMAIN, 10, server.port) == server.policy


@pytest.mark.parametrize("media", ["text/html", "application/octet-stream", None])
def test_another_content_type_is_refused(sts_home, dns, https, media):
    server = https()
    server.headers = {"Content-Type": media} if media else {}
    assert failure(server.port) == "Content-Type %s refused" % (media or "missing")


def test_a_slow_server_is_bounded(sts_home, dns, https):
    server = https()
    server.trickle = 0.2  # a byte every 200 ms: each read is quick, the whole is not
    start = time.monotonic()
    assert "timed out" in failure(server.port, timeout=1.5)
    assert time.monotonic() - start < 3


def test_a_silent_server_is_bounded(sts_home, dns, https):
    server = https()
    server.mode = "stall"
    start = time.monotonic()
    assert failure(server.port, timeout=1.0) == "TLS: timed out"
    assert time.monotonic() - start < 2.5


def test_a_certificate_for_another_name_is_refused(sts_home, dns, https):
    server = https("mail.example.com")
    assert failure(server.port).startswith("certificate: Hostname mismatch")
    assert server.count() == 0


def test_a_certificate_from_an_untrusted_ca_is_refused(sts_home, dns, pki):
    with STSServer(*pki.untrusted(HOST)) as server:
        server.policy = POLICY
        assert failure(server.port).startswith("certificate: unable to get local issuer")
        assert server.count() == 0


def test_without_anchors_the_system_store_is_used(sts_home, dns, https):
    os.unlink("control/mtastsanchors")
    server = https()
    assert failure(server.port).startswith("certificate: ")  # the test CA is in no system store


def test_no_such_host(sts_home, dns, https):
    server = https()
    dns.records.clear()
    assert failure(server.port) == "DNS: no such host"


def test_connection_refused(sts_home, dns, https):
    server = https()
    port = server.port
    server.stop()
    assert failure(port) == "connect to 127.0.0.1: Connection refused"


# --- policy_for: the cache, the id, the failures ---------------------------------------------

def test_fetched_then_cached(sts_home, dns, https):
    server = https()
    policy, event = mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)
    assert event == "fetched" and policy.mode == "enforce" and policy.id == "one" and policy.fetched_at == NOW
    assert policy.matches(b"mail.example.com.") and not policy.matches(b"evil.example.org")
    again, event = mtasts.policy_for(DOMAIN.upper() + ".", TXT, NOW + 100, 10, server.port)
    assert event == "cached" and again.mx == policy.mx
    assert server.count() == 1
    entry = os.path.join("run/qmail-remote/mta-sts", DOMAIN)
    assert os.stat(entry).st_mode & 0o777 == 0o644
    assert sorted(os.listdir("run/qmail-remote/mta-sts")) == [DOMAIN, DOMAIN + "=lock"]  # no temporary left


def test_expiry_by_max_age(sts_home, dns, https):
    server = https()
    mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)
    assert mtasts.policy_for(DOMAIN, TXT, NOW + 43199, 10, server.port)[1] == "cached"
    # without a record (so no refresh), good until fetched_at + max_age
    assert mtasts.policy_for(DOMAIN, [], NOW + 86399, 10, server.port)[1] == "no record, cached used"
    assert mtasts.policy_for(DOMAIN, [], NOW + 86400, 10, server.port) == (None, "no record")
    policy, event = mtasts.policy_for(DOMAIN, TXT, NOW + 86400, 10, server.port)
    assert event == "fetched" and policy.fetched_at == NOW + 86400 and server.count() == 2


def test_an_expired_policy_is_not_used_when_the_fetch_fails(sts_home, dns, https):
    server = https()
    mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)
    server.status = 500
    assert mtasts.policy_for(DOMAIN, TXT, NOW + 86400, 10, server.port) == (None, "fetch failed: HTTP 500")
    # no TXT record and only an expired policy: nothing
    assert mtasts.policy_for(DOMAIN, [], NOW + 86400, 10, server.port) == (None, "no record")


def test_a_new_id_fetches_and_a_failed_refresh_keeps_the_cached_policy(sts_home, dns, https):
    server = https()
    mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)
    server.policy = POLICY.replace(b"enforce", b"testing")
    policy, event = mtasts.policy_for(DOMAIN, [b"v=STSv1; id=two"], NOW + 10, 10, server.port)
    assert (policy.mode, policy.id, event) == ("testing", "two", "fetched")
    server.status = 404
    policy, event = mtasts.policy_for(DOMAIN, [b"v=STSv1; id=three"], NOW + 20, 10, server.port)
    assert (policy.mode, policy.id, event) == ("testing", "two", "fetch failed: HTTP 404, cached used")
    # within RETRY the same id is not fetched again; after it, it is
    assert mtasts.policy_for(DOMAIN, [b"v=STSv1; id=three"], NOW + 30, 10, server.port)[1] == (
        "fetch failed: HTTP 404, cached used")
    assert server.count() == 3
    server.status = 200
    policy, event = mtasts.policy_for(DOMAIN, [b"v=STSv1; id=three"], NOW + 20 + mtasts.RETRY, 10, server.port)
    assert (policy.id, event) == ("three", "fetched") and server.count() == 4


def test_an_invalid_policy_is_a_failed_fetch(sts_home, dns, https):
    server = https()
    server.policy = POLICY.replace(b"mode: enforce\r\n", b"")
    assert mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port) == (None, "fetch failed: invalid policy: mode missing")


@pytest.mark.parametrize("txt, event", [
    (None, "cached"), ("failed", "TXT lookup failed, cached used"), ([], "no record, cached used"),
    ([b"v=STSv1; id=a", b"v=STSv1; id=b"], "invalid record: 2 STSv1 records, cached used"),
    ([b"v=STSv1; id=a-b"], "invalid record: bad id, cached used"),
])
def test_without_a_usable_record_the_cached_policy_is_used(sts_home, dns, https, txt, event):
    server = https()
    mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)
    policy, got = mtasts.policy_for(DOMAIN, txt, NOW + 10, 10, server.port)
    assert got == event and policy.id == "one" and server.count() == 1


@pytest.mark.parametrize("txt, event", [
    (None, "not looked up"), ("failed", "TXT lookup failed"), ([], "no record"), ([b"v=spf1 -all"], "no record"),
])
def test_without_record_or_cache_no_policy_and_no_fetch(sts_home, dns, https, txt, event):
    server = https()
    assert mtasts.policy_for(DOMAIN, txt, NOW, 10, server.port) == (None, event)
    assert server.count() == 0


def test_a_planted_symlink_is_never_followed(sts_home, dns, https):
    server = https()
    os.makedirs("run/qmail-remote/mta-sts")
    target = sts_home / "elsewhere"
    good = cache.encode(cache.Entry(mtasts.policy.parse_policy(POLICY, "one", NOW)))
    target.write_bytes(good)
    os.symlink(str(target), "run/qmail-remote/mta-sts/" + DOMAIN)
    policy, event = mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)
    assert event == "fetched"                       # the link was not read as a cache entry
    assert not os.path.islink("run/qmail-remote/mta-sts/" + DOMAIN)  # replaced by rename
    assert target.read_bytes() == good              # ... and its target never written


def test_a_symlinked_cache_directory_means_no_cache(sts_home, dns, https):
    server = https()
    os.makedirs(sts_home / "elsewhere")
    os.symlink(str(sts_home / "elsewhere"), "run/qmail-remote/mta-sts")
    assert mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)[1] == "fetched"
    assert os.listdir(sts_home / "elsewhere") == []


def test_a_fifo_planted_as_entry_does_not_hang(sts_home, dns, https):
    server = https()
    os.makedirs("run/qmail-remote/mta-sts")
    os.mkfifo("run/qmail-remote/mta-sts/" + DOMAIN)
    assert mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)[1] == "fetched"


CHILD = r"""
import json, sys, time
sys.path.insert(0, %(lib)r)
from qremote import mtasts
policy, event = mtasts.policy_for(%(domain)r, [b"v=STSv1; id=one"], %(now)d, %(timeout)r, %(port)d)
print(json.dumps([policy and policy.mode, event, sorted(sys.modules)]))
"""


def children(n, port, timeout=10, now=NOW):
    code = CHILD % {"lib": os.path.join(TOP, "lib"), "domain": DOMAIN, "now": now, "timeout": timeout, "port": port}
    procs = [subprocess.Popen([sys.executable, "-I", "-S", "-c", code], stdout=subprocess.PIPE) for _ in range(n)]
    return [json.loads(p.communicate(timeout=60)[0]) for p in procs]


def test_concurrent_deliveries_fetch_once(sts_home, dns, https):
    server = https()
    server.delay = 1.0  # all of them start while the first fetch is under way
    results = children(8, server.port)
    assert server.count() == 1
    assert all(mode == "enforce" for mode, _, _ in results)
    assert sorted(event for _, event, _ in results) == ["cached"] * 7 + ["fetched"]


def test_waiters_give_up_at_the_deadline(sts_home, dns, https):
    server = https()
    server.delay = 4.0
    start = time.monotonic()
    results = children(3, server.port, timeout=1.5)
    # the fetcher runs out of time: nobody has a policy; a waiter gives up at its deadline
    # ("lock busy") or, getting the lock just after, finds the failure recorded and does not
    # fetch again
    assert all(mode is None for mode, _, _ in results)
    assert sorted(event for _, event, _ in results)[0] == "fetch failed: HTTP: timed out"
    assert {event for _, event, _ in results} <= {"fetch failed: HTTP: timed out", "lock busy"}
    assert server.count() == 1
    assert time.monotonic() - start < 4


def test_a_cached_lookup_loads_no_https_client(sts_home, dns, https):
    server = https()
    mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)
    (mode, event, modules), = children(1, server.port)
    assert (mode, event) == ("enforce", "cached")
    assert not [m for m in modules if m in ("ssl", "_ssl", "http", "http.client", "socket", "qremote.resolver",
                                            "qremote.mtasts.fetch")]


# --- the installed qmail-mta-sts ---------------------------------------------------------------

def command(installed, home, *args, **env):
    result = subprocess.run([os.path.join(installed, "qmail-mta-sts"), *args], capture_output=True, timeout=90,
                            env={"PATH": "/usr/bin:/bin", "QMAILHOME": str(home), **env})
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_list_and_purge(installed, sts_home, dns, https):
    server = https()
    assert command(installed, sts_home, "list") == (0, "", "")  # no cache directory yet: nothing
    mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)
    mtasts.policy_for("example.org", [b"v=STSv1; id=x"], NOW, 10, server.port)  # no such host
    mtasts.policy_for("b.example", TXT, NOW, 10, server.port)
    os.unlink("run/qmail-remote/mta-sts/b.example")
    with open("run/qmail-remote/mta-sts/b.example", "wb") as damaged:
        damaged.write(b"junk")
    status, out, err = command(installed, sts_home, "list")
    assert (status, err) == (0, "")
    assert out.split("\n") == [
        "b.example damaged",
        "example.com mode=enforce id=one max_age=86400 fetched=2027-01-15T08:00:00Z "
        "expires=2027-01-16T08:00:00Z%s mx=mail.example.com,*.example.net" % (
            "(expired)" if time.time() >= NOW + 86400 else ""),
        "example.org no-policy failed=2027-01-15T08:00:00Z id=x: DNS: no such host", ""]
    assert command(installed, sts_home, "purge", "Example.COM") == (0, "", "")
    assert command(installed, sts_home, "purge", "example.com") == (0, "example.com: not cached\n", "")
    assert [line.split()[0] for line in command(installed, sts_home, "list")[1].splitlines()] == [
        "b.example", "example.org"]
    assert command(installed, sts_home, "purge", "all") == (0, "", "")
    assert os.listdir("run/qmail-remote/mta-sts") == []


@pytest.mark.parametrize("args", [[], ["list", "x"], ["purge"], ["purge", "a/b"], ["fetch"], ["fetch", ".."],
                                  ["frobnicate"]])
def test_usage(installed, sts_home, args):
    assert command(installed, sts_home, *args) == (
        100, "", "usage: qmail-mta-sts list | purge DOMAIN | purge all | fetch DOMAIN\n")


def https_on_443(pki):
    try:
        return STSServer(*pki.server(HOST), port=443)
    except OSError as error:
        pytest.skip("cannot listen on 127.0.0.1:443: %s" % error)


def test_fetch_looks_up_the_record_and_fetches(installed, sts_home, dns, pki):
    dns.add("_mta-sts." + DOMAIN, "TXT", '"v=STSv1; " "id=fromdns"')  # two strings, concatenated
    with https_on_443(pki) as server:
        server.policy = POLICY
        status, out, err = command(installed, sts_home, "fetch", DOMAIN, DNSCACHEIP=dns.address())
        assert (status, err) == (0, "")
        assert out.startswith("example.com: fetched\nexample.com mode=enforce id=fromdns max_age=86400 ")
        # fetch again: fetched again, though the cache holds this id
        out = command(installed, sts_home, "fetch", DOMAIN, DNSCACHEIP=dns.address())[1]
        assert out.startswith("example.com: fetched\n")
        assert server.count() == 2
        server.status = 404
        assert command(installed, sts_home, "fetch", DOMAIN, DNSCACHEIP=dns.address()) == (
            0, "example.com: fetch failed: HTTP 404, cached used\n" + out.split("\n", 1)[1], "")
    assert command(installed, sts_home, "fetch", "example.org", DNSCACHEIP=dns.address()) == (
        111, "", "qmail-mta-sts: fatal: example.org: no policy: no record\n")


def test_root_made_files_belong_to_the_run_directory_owner(sts_home, dns, https):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    os.chown("run/qmail-remote", 65534, 65534)
    server = https()
    mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)
    for name in ("run/qmail-remote/mta-sts", "run/qmail-remote/mta-sts/" + DOMAIN,
                 "run/qmail-remote/mta-sts/" + DOMAIN + "=lock"):
        st = os.lstat(name)
        assert (st.st_uid, st.st_gid) == (65534, 65534), name


def test_max_age_0_waiters_use_the_policy_fetched_while_they_waited(sts_home, dns, https):
    server = https()
    server.policy = POLICY.replace(b"86400", b"0")
    server.delay = 1.0
    results = children(4, server.port, now=int(time.time()))
    assert server.count() == 1
    assert sorted(event for _, event, _ in results) == ["cached"] * 3 + ["fetched"]
    # alone, a policy of max_age 0 is expired at once: fetched again
    assert mtasts.policy_for(DOMAIN, TXT, int(time.time()), 10, server.port)[1] == "fetched"


def test_the_event_holds_only_printable_ascii(sts_home, dns, https):
    server = https()
    server.headers = {"Content-Type": "text/\x01h\u00e9tml"}
    assert mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port) == (
        None, "fetch failed: Content-Type text/?h??tml refused")  # UTF-8 read as latin-1


def test_a_policy_in_use_is_refreshed_past_half_its_max_age(sts_home, dns, https):
    server = https()
    mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)
    assert mtasts.policy_for(DOMAIN, TXT, NOW + 43199, 10, server.port)[1] == "cached"
    server.status = 500
    policy, event = mtasts.policy_for(DOMAIN, TXT, NOW + 43200, 10, server.port)
    assert (policy.fetched_at, event) == (NOW, "fetch failed: HTTP 500, cached used")
    assert mtasts.policy_for(DOMAIN, TXT, NOW + 43210, 10, server.port)[1] == "cached"  # not again before RETRY
    assert server.count() == 2
    server.status = 200
    policy, event = mtasts.policy_for(DOMAIN, TXT, NOW + 43200 + mtasts.RETRY, 10, server.port)
    assert (policy.fetched_at, event) == (NOW + 43200 + mtasts.RETRY, "fetched")
    assert mtasts.policy_for(DOMAIN, TXT, NOW + 86400, 10, server.port)[1] == "cached"  # the old expiry: still good
    assert server.count() == 3


def test_a_refresh_never_waits_for_the_lock(sts_home, dns, https):
    server = https()
    mtasts.policy_for(DOMAIN, TXT, NOW, 10, server.port)
    opened = cache.open_directory()
    held = cache.lock(opened[0], None, DOMAIN, time.monotonic() + 1)
    try:
        start = time.monotonic()
        policy, event = mtasts.policy_for(DOMAIN, TXT, NOW + 50000, 10, server.port)
        assert (policy.id, event) == ("one", "cached") and time.monotonic() - start < 0.5
    finally:
        os.close(held)
        os.close(opened[0])
    assert server.count() == 1
