"""package/install into a scratch qmail tree: layout, control/ untouched, an existing binary
kept, a path that is not a qmail home refused, and the installed chain runnable by an
unprivileged user (qmail-rspawn runs it as qmailr)."""

import os
import pathlib
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import TOP
from tests.support.chain import Home, decode_reports

INSTALL = os.path.join(TOP, "package", "install")


STOCK_GID = 4242  # a group like qmail's, which root owns nothing else of


@pytest.fixture(scope="module")
def tree():
    # Not under pytest's tmp_path: that is mode 0700, and the point is that others can run it.
    home = pathlib.Path(tempfile.mkdtemp(prefix="qremote-tree-"))
    os.chmod(home, 0o755)
    os.makedirs(home / "control")
    (home / "control" / "me").write_text("keep.example\n")
    os.makedirs(home / "bin")
    (home / "bin" / "qmail-remote").write_bytes(b"\x7fELF stock binary")
    os.chmod(home / "bin" / "qmail-remote", 0o711)  # stock's mode, and its group is qmail's
    if os.geteuid() == 0:
        os.chown(home / "bin" / "qmail-remote", 0, STOCK_GID)
    os.makedirs(home / "man" / "man8")
    (home / "man" / "man8" / "qmail-remote.8").write_text(".TH qmail-remote 8\n(stock)\n")
    for _ in range(2):  # installing twice is an upgrade: must work the same
        # no --create: control/ makes it a qmail home
        subprocess.run([sys.executable, INSTALL, "--qmailhome", str(home)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield home
    shutil.rmtree(home)


def test_layout(tree):
    for name in ("qmail-remote", "qmail-remote-io", "qmail-remote-qmtp"):
        path = tree / "bin" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        first = path.read_text().split("\n")[0]
        assert first.startswith("#!/") and first.endswith(" -IS")
    assert (tree / "run" / "qmail-remote").is_dir()
    assert (tree / "run" / "qmail-remote" / "mta-sts").is_dir()  # MTA-STS policy cache
    memory = tree / "run" / "qmail-remote" / "tlsmemory"  # control/tlsmemory's hosts: qmailr's alone
    assert memory.is_dir() and stat.S_IMODE(memory.stat().st_mode) == 0o700
    anchors = tree / "run" / "qmail-remote" / "dane-ta"  # tlsc-io's verified DANE-TA anchors: qmailr's alone
    assert anchors.is_dir() and stat.S_IMODE(anchors.stat().st_mode) == 0o700
    link = tree / "lib" / "qremote"
    assert link.is_symlink() and (link / "qremote" / "programs" / "qmail_remote.py").exists()
    assert len([n for n in os.listdir(tree / "lib") if n.startswith("qremote-")]) == 2  # new + previous


def test_bundle_holds_cryptography_for_dane_ta(tree):
    """tlsc-io verifies a DANE-TA chain with cryptography: it must be in the bundle, loadable by
    the commands' interpreter with their -IS (no site-packages to fall back on)."""
    link = tree / "lib" / "qremote"
    assert (link / "cryptography" / "x509" / "verification.py").exists()
    python = (tree / "bin" / "tlsc-io").read_text().split("\n")[0][2:].split()[0]
    subprocess.run([python, "-IS", "-c", "import sys; sys.path.insert(0, %r); "
                    "from cryptography.x509.verification import PolicyBuilder" % str(link)], check=True)


def test_bundle_leaves_out_what_no_delivery_imports(tree):
    """Every delivery program reads the whole bundle: the admin commands' modules and the
    MTA-STS fetch stay out of it, and the admin commands still run (from sys.path)."""
    import marshal
    link = tree / "lib" / "qremote"
    bundle, = [n for n in os.listdir(link) if n.endswith(".bundle")]
    _, namespace = marshal.loads((link / bundle).read_bytes())
    modules = set(namespace["TABLE"])
    assert {"qremote.programs.qmail_remote", "qremote.tlsrule", "qremote.mtasts.cache"} <= modules
    assert modules.isdisjoint({"qremote.tlsrpt", "qremote.mtasts.fetch", "qremote.programs.qmail_tlsrpt",
                               "qremote.programs.qmail_mta_sts", "qremote.programs.qmail_tlsmemory"})
    env = dict(os.environ, QMAILHOME=str(tree))
    for command in ("qmail-mta-sts", "qmail-tlsmemory"):
        done = subprocess.run([str(tree / "bin" / command), "list"], env=env, capture_output=True)
        assert done.returncode == 0 and done.stderr == b"", (command, done)


def test_man_pages_where_qmail_puts_its_own(tree):
    man8 = tree / "man" / "man8"
    for name in ("qmail-remote", "qmail-remote-io", "qmail-remote-qmtp", "tlsc-io", "qmail-tcpto6",
                 "qmail-tcpok6", "qmail-remote-route", "qmail-tlsrpt", "qmail-mta-sts", "qmail-tlsmemory"):
        page = man8 / (name + ".8")
        assert page.read_text() == (pathlib.Path(TOP) / "doc" / "man" / (name + ".8")).read_text()
        assert stat.S_IMODE(page.stat().st_mode) == 0o644
    assert (man8 / "qmail-remote.8.orig").read_text() == ".TH qmail-remote 8\n(stock)\n"
    assert sorted(os.listdir(man8)) == sorted([n + ".8" for n in ("qmail-remote", "qmail-remote-io", "qmail-remote-qmtp",
                                                                   "tlsc-io", "qmail-tcpto6", "qmail-tcpok6",
                                                                  "qmail-remote-route", "qmail-tlsrpt", "qmail-mta-sts", "qmail-tlsmemory")]
                                               + ["qmail-remote.8.orig"])  # not one .orig of ours


def install_into(path, *options):
    return subprocess.run([sys.executable, INSTALL, "--qmailhome", str(path)] + list(options),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)


@pytest.mark.parametrize("case", ["absent", "empty", "other tree"])
def test_a_path_that_is_no_qmail_home_is_refused(tmp_path, case):
    target = tmp_path / "absent" if case == "absent" else tmp_path  # "absent": a mistyped path
    if case == "other tree":  # a bin/ alone is no qmail home: /usr/local has one
        for name in ("bin", "etc"):
            (tmp_path / name).mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    done = install_into(target)
    assert done.returncode != 0
    assert b"is not a qmail home" in done.stderr and b"--create" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing created


@pytest.mark.parametrize("sign", ["queue", "bin/qmail-send"])
def test_queue_or_qmail_send_make_a_qmail_home(tmp_path, sign):
    """control/ is covered by the tree above; the other two signs, without a full install
    (--python with a nonexistent interpreter stops install right after the home check)."""
    os.makedirs(tmp_path / os.path.dirname(sign), exist_ok=True)
    if sign == "queue":
        (tmp_path / "queue").mkdir()
    else:
        (tmp_path / sign).write_bytes(b"")
    done = install_into(tmp_path, "--python", str(tmp_path / "no-python"))
    assert b"is not a qmail home" not in done.stderr and b"cannot run" in done.stderr, done.stderr


def test_control_untouched_and_stock_binary_kept(tree):
    assert (tree / "control" / "me").read_text() == "keep.example\n"
    assert os.listdir(tree / "control") == ["me"]
    kept = tree / "bin" / "qmail-remote.orig"
    assert kept.read_bytes() == b"\x7fELF stock binary"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o711
    if os.geteuid() == 0:
        assert kept.stat().st_gid == STOCK_GID  # as it was: stock's is root:qmail


def test_qmailhome_default_is_baked_in(tree):
    paths = tree / "lib" / "qremote" / "qremote" / "paths.py"
    assert "DEFAULT_QMAILHOME = %r" % str(tree) in paths.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
def test_runs_as_an_unprivileged_user(tree, server):
    nobody = pwd.getpwnam("nobody")
    s = server()
    home = Home(tree / "home", str(tree / "bin"))
    home.route("example.org:127.0.0.1:%d" % s.port)
    for top, dirs, files in os.walk(home.path):
        os.chmod(top, 0o755)
        for name in files:
            os.chmod(os.path.join(top, name), 0o644)
    os.chown(os.path.join(home.path, "run", "qmail-remote"), nobody.pw_uid, nobody.pw_gid)
    message = home.message_file(b"Subject: x\n\nas nobody\n")
    os.chmod(message, 0o644)
    with open(message, "rb") as fd0:
        done = subprocess.run(["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
                               "--clear-groups", str(tree / "bin" / "qmail-remote"), "example.org", "a@b",
                               "c@example.org"], stdin=fd0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=home.env(), timeout=60)
    assert decode_reports(done.stdout)[-1][0] == "K", done.stdout
    assert os.path.exists(os.path.join(home.path, "run", "qmail-remote", "smtproutes.cdb"))


def test_home_as_long_as_the_default_is_baked_in_too():
    # pip compiles paths.py before the home is written into it: with a home of the same
    # length as /var/qmail, within one second, only a forced recompile leaves no stale .pyc
    # (without it this fails when pip's compile and the rewrite share a second: often, not always)
    for _ in range(20):
        home = "/tmp/q" + os.urandom(2).hex()  # 10 characters, as "/var/qmail"
        try:
            os.mkdir(home)
            break
        except FileExistsError:
            continue
    try:
        subprocess.run([sys.executable, INSTALL, "--create", "--qmailhome", home],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(home, "bin", "qmail-remote")) as command:
            interpreter = command.readline()[2:].split()[0]  # "#!/usr/bin/python3 -IS"
        lib = os.path.realpath(os.path.join(home, "lib", "qremote"))
        baked = subprocess.run([interpreter, "-I", "-S", "-c",
                                "import sys; sys.path.insert(0, %r); import qremote.paths as p; "
                                "print(p.DEFAULT_QMAILHOME, end='')" % lib], capture_output=True, text=True)
        assert baked.stdout == home, baked
    finally:
        shutil.rmtree(home)
