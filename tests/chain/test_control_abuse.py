"""Control files and the run directory in every bad shape: missing, unreadable, empty,
binary, huge, a directory, CRLF, trailing blanks, a damaged smtproutes.cdb, a run
directory that cannot be written. Each gives the documented result (control.py,
routes.py) and a clear text: never a traceback, never a hang."""

import os
import pathlib
import pwd
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import TOP
from tests.support.chain import Home, decode_reports

UNREADABLE = b"Unable to read control files: control/%s: %s. (#4.3.0)\n"
INVALID = b"Invalid control file control/%s: %s. (#4.3.0)\n"
NO_NAME = b"Unable to read control files: neither control/helohost nor control/me gives a name. (#4.3.0)\n"
ROOT = os.geteuid() == 0


def routed(home, server, extra=""):
    s = server()
    home.route(extra + "example.org:127.0.0.1:%d" % s.port)
    return s


def deliver(home, host="example.org"):
    reports, raw = home.remote(host, "s@src.example", "a@example.org", timeout=60)
    assert b"Traceback" not in raw and b"internal error" not in raw, raw
    return reports


def only_report(home, host="example.org"):
    reports = deliver(home, host)
    assert len(reports) == 1, reports
    return reports[0]


def delivered(reports):
    return reports[-1][0] == "K" and b"accepted message." in reports[-1][1]


# --- missing ---

def test_missing_me_with_helohost(home, server):
    s = routed(home, server)
    os.unlink(os.path.join(home.path, "control", "me"))
    home.control("helohost", "helo.example\n")
    assert delivered(deliver(home))
    assert s.wait_sessions()[0].commands[0] == b"EHLO helo.example"


def test_missing_control_directory(home):
    shutil.rmtree(os.path.join(home.path, "control"))
    assert only_report(home) == ("Z", NO_NAME)


# --- empty ---

@pytest.mark.parametrize("name", ["timeoutremote", "timeoutconnect", "timeoutdns", "helohost"])
def test_empty_file_means_the_default(home, server, name):
    s = routed(home, server)
    home.control(name, "")
    assert delivered(deliver(home))
    assert s.wait_sessions()[0].commands[0] == b"EHLO me.example"


def test_empty_me_and_no_helohost(home):
    home.control("me", "")
    assert only_report(home) == ("Z", NO_NAME)


def test_only_blank_lines_and_comments_in_smtproutes_is_no_route(home):
    """No route: the literal goes by its own address (no DNS needed), and is refused as mine."""
    home.control("smtproutes", "\n# nothing\n   \n")
    assert only_report(home, "[127.0.0.1]")[0] == "D"  # AmbiguousMX: it is my own address


# --- binary, huge ---

@pytest.mark.parametrize("name, content, text", [
    ("me", b"me\x00\xff\x01.example\n", INVALID % (b"me", b"it holds a control character")),
    ("helohost", b"\x1b[31mred\n", INVALID % (b"helohost", b"it holds a control character")),
    ("helohost", b"me.example\rRSET\n", INVALID % (b"helohost", b"it holds a control character")),
    ("me", b"me.example\x00RSET\n", INVALID % (b"me", b"it holds a control character")),
    ("timeoutremote", b"\xff\xfe\n", INVALID % (b"timeoutremote", b"'????' is not a number of seconds")),
    ("timeoutconnect", b"-5\n", INVALID % (b"timeoutconnect", b"'-5' is not a number of seconds")),
    ("timeoutremote", b"\xd9\xa3\n", INVALID % (b"timeoutremote", b"'????' is not a number of seconds")),
    ("smtproutes", b"\x00\x01\xff\n", INVALID % (b"smtproutes", b"it holds a control character")),
    ("smtproutes", b"\xff\xfe\xfd\n", INVALID % (b"smtproutes", b"line 1: no ':' between domain and relay")),
])
def test_binary_content(home, name, content, text):
    home.control(name, content)
    assert only_report(home) == ("Z", text)


@pytest.mark.parametrize("name", ["me", "helohost", "timeoutremote", "smtproutes"])
def test_huge_file_is_refused(home, name):
    home.control(name, "x" * (2 << 20) + "\n")
    assert only_report(home) == ("Z", INVALID % (name.encode(), b"larger than 1048576 bytes"))


def test_large_valid_smtproutes_works(home, server):
    lines = "".join("d%d.example:[127.0.0.9]:25\n" % i for i in range(30000))  # ~ 800 KB
    s = routed(home, server, extra=lines)
    assert os.path.getsize(os.path.join(home.path, "control", "smtproutes")) > 700000
    assert delivered(deliver(home))
    assert s.wait_sessions()


# --- not a regular file ---

@pytest.mark.parametrize("name", ["me", "timeoutremote", "smtproutes"])
def test_directory_instead_of_a_file(home, name):
    path = os.path.join(home.path, "control", name)
    if os.path.exists(path):
        os.unlink(path)
    os.mkdir(path)
    assert only_report(home) == ("Z", UNREADABLE % (name.encode(), b"Is a directory"))


@pytest.mark.parametrize("name", ["timeoutremote", "helohost", "smtproutes"])
def test_fifo_instead_of_a_control_file_does_not_hang(home, server, name):
    s = routed(home, server)
    path = os.path.join(home.path, "control", name)
    if os.path.exists(path):
        os.unlink(path)
    os.mkfifo(path)
    # opened non-blocking: a FIFO without a writer reads as an empty file (or, better, is
    # refused as not a regular file), never a hang
    if name == "smtproutes":  # empty: no route, so a literal goes to its own address (no DNS)
        letter, text = only_report(home, "[127.0.0.1]")
        assert (letter, b"Although I'm listed" in text) == ("D", True) or \
            (letter, b"control/smtproutes" in text) == ("Z", True), text
    else:
        reports = deliver(home)
        if not delivered(reports):
            assert reports == [("Z", reports[0][1])] and b"control/" + name.encode() in reports[0][1], reports
        else:
            assert s.wait_sessions()


# --- CRLF and trailing blanks ---

def test_crlf_everywhere(home, server):
    s = server()
    home.control("me", "me.example\r\n")
    home.control("helohost", "helo.example\r\n")
    home.control("timeoutremote", "30\r\n")
    home.control("timeoutconnect", "30\r\n")
    home.control("smtproutes", "# comment\r\n\r\nexample.org:127.0.0.1:%d\r\n" % s.port)
    assert delivered(deliver(home))
    assert s.wait_sessions()[0].commands[0] == b"EHLO helo.example"


def test_trailing_blanks_everywhere(home, server):
    s = server()
    home.control("helohost", "helo.example \t \n")
    home.control("timeoutremote", "30  \t\n")
    home.control("smtproutes", "example.org:127.0.0.1:%d \t \n" % s.port)
    assert delivered(deliver(home))
    assert s.wait_sessions()[0].commands[0] == b"EHLO helo.example"


# --- smtproutes.cdb damaged ---

def cdb_path(home):
    return os.path.join(home.path, "run", "qmail-remote", "smtproutes.cdb")


def assert_sound_cdb(home, port):
    sys.path.insert(0, os.path.join(TOP, "lib"))
    from cdblib import Reader
    with open(cdb_path(home), "rb") as f:
        reader = Reader(f.read())
    assert reader.get(b"example.org") == b"127.0.0.1\0%d" % port


def damage_truncate_half(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def damage_empty(path):
    open(path, "wb").close()


def damage_noise(path):
    with open(path, "wb") as f:
        f.write(os.urandom(5000))


def damage_zeros(path):
    with open(path, "wb") as f:
        f.write(b"\0" * 2048)


def damage_pointers_past_the_end(path):
    with open(path, "r+b") as f:
        f.write(b"\xff\xff\xff\x7f\xff\x00\x00\x00" * 256)


def damage_hostile_value(path):
    """A cdb with the right stamp whose route for the host does not decode."""
    from cdblib import Reader, Writer
    with open(path, "rb") as f:
        reader = Reader(f.read())
    items = [(k, reader.get(k)) for k in reader.keys()]
    with open(path, "wb") as f:
        writer = Writer(f)
        for key, value in items:
            writer.put(key, b"127.0.0.1\0not-a-port" if key == b"example.org" else value)
        writer.finalize()


@pytest.mark.parametrize("damage", [damage_truncate_half, damage_empty, damage_noise, damage_zeros,
                                    damage_pointers_past_the_end, damage_hostile_value])
def test_damaged_cdb_is_rebuilt(home, server, damage):
    s = routed(home, server)
    assert delivered(deliver(home))
    sys.path.insert(0, os.path.join(TOP, "lib"))
    damage(cdb_path(home))
    assert delivered(deliver(home))
    assert len(s.wait_sessions(2)) == 2
    assert_sound_cdb(home, s.port)


STAMP_KEY = b"\0qremote-smtproutes-stamp"  # routes._STAMP_KEY


from qremote.cdbread import djb_hash  # noqa: E402 (the same hash the cdb uses)


def slots_of(data, key):
    """(hash of key, position of the first slot of its hash table, slot count)."""
    h = djb_hash(key)
    table, count = struct.unpack_from("<LL", data, (h & 255) * 8)
    return h, table, count


def damage_full_table(key):
    """Every slot of key's hash table taken by a record of another hash: no empty slot
    ends the probe (pure-cdb's Reader looped forever on it)."""
    def damage(path):
        with open(path, "r+b") as f:
            h, table, count = slots_of(f.read(), key)
            assert count, "no hash table for %r" % key
            f.seek(table)
            f.write(struct.pack("<LL", h ^ 0x100, 2048) * count)
    return damage


def damage_record_pointer(where):
    """The right stamp, but example.org's slot points at (or past) the end of the file
    (pure-cdb: "unpack requires a buffer of 8 bytes")."""
    def damage(path):
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            data = f.read()
            h, table, count = slots_of(data, b"example.org")
            for slot in range(table, table + 8 * count, 8):
                if struct.unpack_from("<L", data, slot)[0] == h:
                    f.seek(slot + 4)
                    f.write(struct.pack("<L", where(size)))
                    return
            raise AssertionError("example.org is not in the cdb")
    return damage


@pytest.mark.parametrize("damage", [damage_full_table(b"example.org"), damage_full_table(STAMP_KEY),
                                    damage_record_pointer(lambda size: size - 4),
                                    damage_record_pointer(lambda size: 0xFFFFFFF0)],
                         ids=["full-table-host", "full-table-stamp", "record-at-end", "record-past-end"])
def test_inconsistent_cdb_is_rebuilt_not_trusted(home, server, damage):
    s = routed(home, server)
    assert delivered(deliver(home))
    damage(cdb_path(home))
    # the timeout is a hang guard (the delivery takes a fraction of a second), not a speed check
    reports, raw = home.remote("example.org", "s@src.example", "a@example.org", timeout=30)
    assert b"internal error" not in raw and delivered(reports), raw
    assert len(s.wait_sessions(2)) == 2  # the route from the text
    assert_sound_cdb(home, s.port)


@pytest.mark.parametrize("kind", ["directory", "fifo", "devzero"])
def test_not_a_file_in_place_of_the_cdb(home, server, kind):
    s = routed(home, server)
    path = cdb_path(home)
    if kind == "directory":
        os.mkdir(path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink("/dev/zero", path)
    reports = deliver(home)  # the text serves; a FIFO must not hang the open()
    assert delivered(reports), reports
    assert s.wait_sessions()


# --- links planted in the run directory ---

def test_a_symlink_as_the_lock_is_not_followed(home, server):
    s = routed(home, server)
    victim = os.path.join(home.path, "victim")
    lock = os.path.join(home.path, "run", "qmail-remote", "smtproutes.lock")
    os.symlink(victim, lock)
    assert delivered(deliver(home))
    assert s.wait_sessions()
    assert not os.path.lexists(victim) and os.path.islink(lock)


def test_a_fifo_as_the_lock_does_not_hang(home, server):
    s = routed(home, server)
    os.mkfifo(os.path.join(home.path, "run", "qmail-remote", "smtproutes.lock"))
    # the timeout is a hang guard: opening a FIFO to write waits for a reader
    reports, raw = home.remote("example.org", "s@src.example", "a@example.org", timeout=30)
    assert delivered(reports), raw
    assert s.wait_sessions()


def test_a_symlink_as_the_temporary_file_is_not_written_through(home, server):
    s = routed(home, server)
    victim = home.message_file(b"precious\n", "victim")
    message = home.message_file(b"Subject: x\n\nlinks\n")
    # plant the link under the name the delivery will use (it holds its pid), then exec it
    plant = 'ln -s "$1" run/qmail-remote/smtproutes.cdb.tmp$$ && exec "$2" example.org s@src.example a@example.org'
    with open(message, "rb") as fd0:
        done = subprocess.run(["sh", "-c", plant, "sh", victim, os.path.join(home.bindir, "qmail-remote")],
                              cwd=home.path, stdin=fd0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=home.env(), timeout=60)
    assert done.returncode == 0 and delivered(decode_reports(done.stdout)), done.stdout
    with open(victim, "rb") as f:
        assert f.read() == b"precious\n"
    assert not os.path.islink(cdb_path(home))
    assert_sound_cdb(home, s.port)
    assert [n for n in os.listdir(os.path.join(home.path, "run", "qmail-remote")) if ".tmp" in n] == []


# --- as an unprivileged user: unreadable files, a run directory not ours ---

@pytest.fixture(scope="module")
def tree():
    """The chain installed where an unprivileged user can run it (pytest's tmp is 0700)."""
    if not ROOT:
        pytest.skip("switching to an unprivileged user needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    top = pathlib.Path(tempfile.mkdtemp(prefix="qremote-abuse-"))
    os.chmod(top, 0o755)
    subprocess.run([sys.executable, os.path.join(TOP, "package", "install"), "--create", "--qmailhome", str(top)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield top
    shutil.rmtree(top)


@pytest.fixture
def nobody_home(tree, request):
    nobody = pwd.getpwnam("nobody")
    home = Home(tree / ("home-" + request.node.name.replace("/", "_")), str(tree / "bin"))
    for top, _, files in os.walk(home.path):
        os.chmod(top, 0o755)
        for name in files:
            os.chmod(os.path.join(top, name), 0o644)
    os.chown(os.path.join(home.path, "run", "qmail-remote"), nobody.pw_uid, nobody.pw_gid)
    home.nobody = nobody
    yield home
    shutil.rmtree(home.path, ignore_errors=True)


def as_nobody(home, host="example.org", groups=()):
    message = home.message_file(b"Subject: x\n\nas nobody\n")
    os.chmod(message, 0o644)
    groups = "--groups=" + ",".join(map(str, groups)) if groups else "--clear-groups"
    with open(message, "rb") as fd0:
        done = subprocess.run(["setpriv", "--reuid=%d" % home.nobody.pw_uid, "--regid=%d" % home.nobody.pw_gid,
                               groups, os.path.join(home.bindir, "qmail-remote"), host, "s@src.example",
                               "a@example.org"], stdin=fd0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=home.env(), timeout=60)
    assert done.returncode == 0 and b"Traceback" not in done.stdout, done.stdout
    return decode_reports(done.stdout)


def route_world_readable(home, port):
    home.route("example.org:127.0.0.1:%d" % port)
    os.chmod(os.path.join(home.path, "control", "smtproutes"), 0o644)


@pytest.mark.parametrize("name", ["me", "timeoutremote", "timeoutconnect", "helohost", "smtproutes"])
def test_unreadable_control_file(nobody_home, server, name):
    s = server()
    route_world_readable(nobody_home, s.port)
    path = nobody_home.control(name, "30\n" if name.startswith("timeout") else "x.example\n") \
        if name != "smtproutes" else os.path.join(nobody_home.path, "control", "smtproutes")
    os.chmod(path, 0)
    assert as_nobody(nobody_home) == [("Z", UNREADABLE % (name.encode(), b"Permission denied"))]


def test_smtproutes_made_unreadable_is_noticed_with_a_current_cdb(nobody_home, server):
    s = server()
    route_world_readable(nobody_home, s.port)
    assert delivered(as_nobody(nobody_home))
    os.chmod(os.path.join(nobody_home.path, "control", "smtproutes"), 0)
    assert as_nobody(nobody_home) == [("Z", UNREADABLE % (b"smtproutes", b"Permission denied"))]


SOME_GROUP = 4242  # any group nobody is not in


def test_smtproutes_no_longer_readable_through_a_group_is_noticed(nobody_home, server):
    """Nothing about the file changes, not even its ctime, so the cdb stays current; but
    the user lost the group that let it read the file: a Z, as without the cache."""
    s = server()
    path = os.path.join(nobody_home.path, "control", "smtproutes")
    nobody_home.route("example.org:127.0.0.1:%d" % s.port)
    os.chown(path, 0, SOME_GROUP)
    os.chmod(path, 0o640)
    assert delivered(as_nobody(nobody_home, groups=[SOME_GROUP]))
    assert as_nobody(nobody_home) == [("Z", UNREADABLE % (b"smtproutes", b"Permission denied"))]


def test_a_root_run_leaves_the_cache_to_the_run_directory_owner(nobody_home, server):
    """By hand as root, then as the owner of the run directory: the owner can still
    rebuild the cache (a root-owned lock used to make it parse the text, silently)."""
    old, new = server(), server()
    run = os.path.join(nobody_home.path, "run", "qmail-remote")
    route_world_readable(nobody_home, old.port)
    assert delivered(deliver(nobody_home))  # as root
    owners = {name: (os.lstat(os.path.join(run, name)).st_uid, os.lstat(os.path.join(run, name)).st_gid)
              for name in os.listdir(run)}
    mine = (nobody_home.nobody.pw_uid, nobody_home.nobody.pw_gid)
    assert owners == {"smtproutes.cdb": mine, "smtproutes.lock": mine}
    route_world_readable(nobody_home, new.port)
    assert delivered(as_nobody(nobody_home))
    assert_sound_cdb(nobody_home, new.port)  # rebuilt by the unprivileged run
    inode = os.stat(cdb_path(nobody_home)).st_ino
    assert delivered(as_nobody(nobody_home))
    assert os.stat(cdb_path(nobody_home)).st_ino == inode  # and used as it is
    assert len(old.sessions) == 1 and len(new.wait_sessions(2)) == 2


def test_unsearchable_control_directory(nobody_home):
    os.chmod(os.path.join(nobody_home.path, "control"), 0o700)
    assert as_nobody(nobody_home) == [("Z", UNREADABLE % (b"me", b"Permission denied"))]


def test_run_directory_not_writable_delivers_without_the_cache(nobody_home, server):
    s = server()
    run = os.path.join(nobody_home.path, "run", "qmail-remote")
    os.chown(run, 0, 0)
    route_world_readable(nobody_home, s.port)
    reports = as_nobody(nobody_home)
    assert delivered(reports), reports
    assert os.listdir(run) == []


def test_run_directory_not_writable_ignores_a_stale_cdb(nobody_home, server):
    """A cdb left from an older smtproutes must not send mail to the old route."""
    old, new = server(), server()
    route_world_readable(nobody_home, old.port)
    assert delivered(as_nobody(nobody_home))
    run = os.path.join(nobody_home.path, "run", "qmail-remote")
    os.chown(run, 0, 0)
    for name in os.listdir(run):
        os.chown(os.path.join(run, name), 0, 0)
    route_world_readable(nobody_home, new.port)
    assert delivered(as_nobody(nobody_home))
    assert len(old.sessions) == 1 and len(new.wait_sessions()) == 1


def test_run_directory_is_a_file(nobody_home, server):
    s = server()
    run = os.path.join(nobody_home.path, "run", "qmail-remote")
    os.rmdir(run)
    with open(run, "w") as f:
        f.write("not a directory\n")
    route_world_readable(nobody_home, s.port)
    assert delivered(as_nobody(nobody_home))


def test_unreadable_cdb_is_bypassed(nobody_home, server):
    s = server()
    route_world_readable(nobody_home, s.port)
    assert delivered(as_nobody(nobody_home))
    cdb = os.path.join(nobody_home.path, "run", "qmail-remote", "smtproutes.cdb")
    os.chown(cdb, 0, 0)
    os.chmod(cdb, 0)
    os.chown(os.path.join(nobody_home.path, "run", "qmail-remote"), 0, 0)
    assert delivered(as_nobody(nobody_home))
    assert len(s.wait_sessions(2)) == 2


def test_refused_port_text_is_clear(home):
    """Not a control file, but the neighbour of a bad route: the port is closed."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    home.route("example.org:127.0.0.1:%d" % probe.getsockname()[1])
    try:
        assert only_report(home) == ("Z", b"Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n")
    finally:
        probe.close()


def test_modes_unchanged_for_others(home):
    """Nothing here writes control/: a delivery leaves control files as they were."""
    before = {n: os.stat(os.path.join(home.path, "control", n)) for n in os.listdir(os.path.join(home.path, "control"))}
    deliver(home, "[127.0.0.1]")
    after = {n: os.stat(os.path.join(home.path, "control", n)) for n in os.listdir(os.path.join(home.path, "control"))}
    assert {n: (stat.S_IMODE(s.st_mode), s.st_mtime_ns) for n, s in before.items()} == \
        {n: (stat.S_IMODE(s.st_mode), s.st_mtime_ns) for n, s in after.items()}
