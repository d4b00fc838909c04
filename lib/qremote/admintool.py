"""What the admin tools (qmail-tcpto6, qmail-tcpok6) share: stock's manners.

A failure is one line "PREFIX unable to ...: reason", exit 111; never a traceback.
These tools are run by an admin, not by qmail-rspawn: no report stream.
"""

import os


class Fatal(Exception):
    pass


def step(text, call, *args):
    """call(*args); an OSError becomes Fatal("text: reason")."""
    try:
        return call(*args)
    except OSError as error:
        raise Fatal(b"%s: %s\n" % (text, (error.strerror or str(error)).encode())) from None


def write_all(fd, data):
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


def run(body, prefix, error_fd):
    """Exit with body()'s bytes written on stdout (0), or prefix + the failure on error_fd (111)."""
    try:
        write_all(1, body())
        os._exit(0)
    except Fatal as fatal:
        text = fatal.args[0]
    except BaseException as error:  # noqa: BLE001 - an admin tool still never shows a traceback
        text = b"internal error: %s\n" % type(error).__name__.encode()
    write_all(error_fd, prefix + text)
    os._exit(111)
