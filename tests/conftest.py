"""Shared fixtures: the chain installed once per test session by package/install (the
production layout: the commands in QMAILHOME/bin run with -I -S), a scratch qmail home
per test, and a scripted SMTP server."""

import os
import subprocess
import sys

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "lib"))
sys.path.insert(0, TOP)

from tests.support.chain import Home  # noqa: E402
from tests.support.smtpserver import SMTPServer  # noqa: E402


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """A qmail tree with qremote installed by package/install; returns its bin directory.

    The commands run with the interpreter running the tests, so a run on another Python
    version (PYTHON=... tests/run) tests the chain on it too; unchecked: it may be one
    only root can run (pyenv's under /root), and these tests need no other user."""
    home = tmp_path_factory.mktemp("installed")
    subprocess.run([sys.executable, os.path.join(TOP, "package", "install"), "--create", "--qmailhome", str(home),
                    "--python", os.path.realpath(sys.executable), "--unchecked-python"],
                   check=True, stdout=subprocess.DEVNULL)
    return os.path.join(str(home), "bin")


@pytest.fixture
def home(tmp_path, installed):
    return Home(tmp_path / "qmail", installed)


@pytest.fixture
def server():
    servers = []

    def start(**replies):
        s = SMTPServer(**replies)
        servers.append(s)
        return s
    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """Generated certificates: see tests/support/certs.py."""
    from tests.support.certs import PKI
    return PKI(tmp_path_factory.mktemp("pki"))
