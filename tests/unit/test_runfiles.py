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
