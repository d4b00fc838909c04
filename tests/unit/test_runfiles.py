"""The files qremote writes in run/qmail-remote are never reached through a link planted
there: tcpto6 is opened with O_NOFOLLOW (its IPv4 neighbour is stock's file, stock's way)."""

import socket

from qremote import tcpto


def test_a_symlink_as_tcpto6_is_not_written_through(tmp_path):
    v4 = tmp_path / "tcpto"
    v4.write_bytes(bytes(1024))
    victim = tmp_path / "victim"
    victim.write_bytes(bytes(2048))
    (tmp_path / "tcpto6").symlink_to(victim)
    backoff = tcpto.Backoff(str(v4), str(tmp_path / "tcpto6"), clock=lambda: 1_700_000_000, pid=0)
    assert backoff.skip("2001:db8::1", socket.AF_INET6) is False
    backoff.record("2001:db8::1", socket.AF_INET6, True)
    assert victim.read_bytes() == bytes(2048)


def test_tcpto6_itself_is_still_written(tmp_path):
    v4, v6 = tmp_path / "tcpto", tmp_path / "tcpto6"
    v4.write_bytes(bytes(1024))
    v6.write_bytes(bytes(2048))
    tcpto.Backoff(str(v4), str(v6), clock=lambda: 1_700_000_000, pid=0).record("2001:db8::1", socket.AF_INET6, True)
    assert v6.read_bytes()[16] == 1


def test_qmail_tcpok6_never_zeroes_a_symlinks_target(tmp_path, monkeypatch):
    """qmail-tcpok6 is run by hand, as root: a tcpto6 link planted by whoever can write
    run/qmail-remote must not make it zero the file the link points to."""
    import pytest

    from qremote.admintool import Fatal
    from qremote.programs import qmail_tcpok6, qmail_tcpto6

    run = tmp_path / "run" / "qmail-remote"
    run.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (run / "tcpto6").symlink_to(victim)
    monkeypatch.setenv("QMAILHOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # both chdir to the qmail home; this puts the cwd back
    with pytest.raises(Fatal, match="Too many levels of symbolic links"):
        qmail_tcpok6.clear()
    with pytest.raises(Fatal, match="Too many levels of symbolic links"):
        qmail_tcpto6.show()
    assert victim.read_bytes() == b"precious\n"
