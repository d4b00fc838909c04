"""The one writer of the report stream on fd 1 (qmail-rspawn reads it).

Rules of this module:
1. A report is one letter, its text, one NUL. Recipient reports (r, h, s) come first,
   in argv order, then exactly one message report (K, Z or D), then nothing at all.
2. Texts are sanitised here: a NUL would end the report early, so it becomes '?'.
   The last byte before the NUL is LF (added when missing), as stock does.
3. A failed write to fd 1 is ignored: the reader is gone and nobody can be told.
"""

# the C functions os re-exports, without os.py: it costs ~1 ms of CPU at every start
# (_collections_abc, posixpath, stat); a program that never imports os saves it
import posix as os

from . import failures

MAX_TEXT = 10000  # qmail-send keeps at most 10000 bytes of a report anyway


def _clean(text):
    text = text[:MAX_TEXT].replace(b"\0", b"?")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    return text


class Reporter:
    """Writes recipient and message reports to a file descriptor (fd 1)."""

    def __init__(self, fd=1):
        self.fd = fd
        self.finished = False

    def _write(self, data):
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            pass

    def recipient(self, letter, text=b""):
        if not self.finished:
            self._write(letter + _clean(text) + b"\0")

    def final(self, letter, text):
        if not self.finished:
            self.finished = True
            text = _clean(text)
            self._write(letter + text + b"\0")
            if b"QREMOTE_TRACE_FD" in os.environ:  # trace.VARIABLE: tracing (doc/trace.html)
                _trace(letter, text)

    def failure(self, failure):
        self.final(failure.letter, failure.text())


def _trace(letter, text):
    """The delivery's trace line, after its report: whatever happens here, the report
    stands and the exit status is 0."""
    try:
        from . import tracefile

        tracefile.finish(letter.decode("ascii", "replace"), text)
    except BaseException:  # noqa: BLE001 - a trace is never worth a delivery
        pass


def run_program(name, body, argv):
    """Run one program of the chain: every outcome becomes a report, exit status is 0.

    qmail-rspawn bounces the message on any non-zero exit and copies fd 2 into the
    report, so stderr is pointed at /dev/null first and no exception may escape.
    """
    reporter = Reporter(1)
    try:
        _silence_stderr()
        body(argv, reporter)
        if not reporter.finished:
            raise RuntimeError("the program ended without a message report")
    except failures.Failure as failure:
        reporter.failure(failure)
    except BaseException as error:  # noqa: BLE001 - the whole point: nothing escapes
        reporter.failure(failures.Internal(name, error))
    os._exit(0)


def _silence_stderr():
    fd = os.open("/dev/null", os.O_WRONLY)
    if fd != 2:
        os.dup2(fd, 2)
        os.close(fd)
