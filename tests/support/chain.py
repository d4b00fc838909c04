"""Run the installed chain against a scratch qmail home, and decode its report stream."""

import os
import subprocess
import time


def decode_reports(output):
    """[(letter, text)] from qmail-remote's stdout; every report must end with NUL."""
    assert output.endswith(b"\0"), "report stream does not end with NUL: %r" % output
    return [(chunk[:1].decode(), chunk[1:]) for chunk in output[:-1].split(b"\0")]


class Home:
    """A scratch QMAILHOME: control files, the run directory, a message."""

    def __init__(self, path, bindir):
        self.path = str(path)
        self.bindir = bindir
        os.makedirs(os.path.join(self.path, "control"), exist_ok=True)
        os.makedirs(os.path.join(self.path, "run", "qmail-remote"), exist_ok=True)
        os.makedirs(os.path.join(self.path, "queue", "lock"), exist_ok=True)
        self.control("me", "me.example\n")

    def control(self, name, content):
        path = os.path.join(self.path, "control", name)
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(path, mode) as out:
            out.write(content)
        return path

    def route(self, *lines):
        # smtproutes' cache compares a stamp that includes the mtime in ns: force a change
        path = self.control("smtproutes", "".join(line + "\n" for line in lines))
        now = time.time_ns()
        os.utime(path, ns=(now, now))

    def message_file(self, content, name="message"):
        path = os.path.join(self.path, name)
        with open(path, "wb") as out:
            out.write(content)
        return path

    def env(self, **extra):
        env = {"PATH": "/usr/bin:/bin", "QMAILHOME": self.path}
        env.update(extra)
        return env

    def run(self, program, args, message=b"Subject: test\n\nhello\n", timeout=60, stdin=None, **env):
        """Run a chain program; returns (raw stdout, exit status)."""
        argv = [os.path.join(self.bindir, program)] + [os.fsencode(a) if isinstance(a, str) else a for a in args]
        if stdin is None:
            stdin_path = self.message_file(message)
            with open(stdin_path, "rb") as fd0:
                done = subprocess.run(argv, stdin=fd0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      env=self.env(**env), timeout=timeout)
        else:
            done = subprocess.run(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=self.env(**env), timeout=timeout)
        return done.stdout, done.returncode

    def by_hand(self, program, sock, args, message=b"Subject: x\n\nby hand\n"):
        """Run a program of the chain by hand with sock as fds 6 and 7 (as tcpclient gives
        them); returns its raw stdout (it must exit 0)."""
        fd = sock.fileno()

        def onto_6_and_7():  # before close_fds: pass_fds keeps 6 and 7 open in the child
            os.dup2(fd, 6)
            os.dup2(fd, 7)

        with open(self.message_file(message), "rb") as fd0:
            done = subprocess.run([os.path.join(self.bindir, program)] + args, stdin=fd0, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, pass_fds=(fd, 6, 7), preexec_fn=onto_6_and_7,
                                  env=self.env(), timeout=60)
        assert done.returncode == 0, (program, done.returncode, done.stdout)
        return done.stdout

    def remote(self, host, sender, *recipients, **kw):
        """qmail-remote host sender recipients...: (reports, raw stdout)."""
        out, status = self.run("qmail-remote", [host, sender] + list(recipients), **kw)
        assert status == 0, "qmail-remote exited %d: %r" % (status, out)
        return decode_reports(out), out
