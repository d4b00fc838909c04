"""package/install into a scratch qmail tree: layout, control/ untouched, an existing binary
kept, and the installed chain runnable by an unprivileged user (qmail-rspawn runs it as qmailr)."""

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


@pytest.fixture(scope="module")
def tree():
    # Not under pytest's tmp_path: that is mode 0700, and the point is that others can run it.
    home = pathlib.Path(tempfile.mkdtemp(prefix="qremote-tree-"))
    os.chmod(home, 0o755)
    os.makedirs(home / "control")
    (home / "control" / "me").write_text("keep.example\n")
    os.makedirs(home / "bin")
    (home / "bin" / "qmail-remote").write_bytes(b"\x7fELF stock binary")
    for _ in range(2):  # installing twice is an upgrade: must work the same
        subprocess.run([sys.executable, os.path.join(TOP, "package", "install"), "--qmailhome", str(home)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield home
    shutil.rmtree(home)


def test_layout(tree):
    for name in ("qmail-remote", "qmail-remote-io"):
        path = tree / "bin" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        first = path.read_text().split("\n")[0]
        assert first.startswith("#!/") and first.endswith(" -IS")
    assert (tree / "run" / "qmail-remote").is_dir()
    link = tree / "lib" / "qremote"
    assert link.is_symlink() and (link / "qremote" / "programs" / "qmail_remote.py").exists()
    assert len([n for n in os.listdir(tree / "lib") if n.startswith("qremote-")]) == 2  # new + previous


def test_control_untouched_and_stock_binary_kept(tree):
    assert (tree / "control" / "me").read_text() == "keep.example\n"
    assert os.listdir(tree / "control") == ["me"]
    assert (tree / "bin" / "qmail-remote.orig").read_bytes() == b"\x7fELF stock binary"


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
        subprocess.run([sys.executable, os.path.join(TOP, "package", "install"), "--qmailhome", home],
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
