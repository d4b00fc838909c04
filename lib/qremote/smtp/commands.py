"""SMTP command builder: arguments in, wire bytes out.

Rule: no command ever carries a CR, LF or NUL from its arguments; one would end the
command early and let the rest run as a command of its own (injection). The check is
here, at the one place commands are made, so no caller can forget it.
"""


class UnsafeArgument(ValueError):
    """An argument holds a byte that would break the command line."""


def _checked(arg):
    if b"\r" in arg or b"\n" in arg or b"\0" in arg:
        raise UnsafeArgument(arg)
    return arg


def ehlo(name):
    return b"EHLO " + _checked(name) + b"\r\n"


def helo(name):
    return b"HELO " + _checked(name) + b"\r\n"


def mail(sender, size=None, eightbit=False, smtputf8=False):
    """MAIL FROM with the ESMTP parameters the caller decided to use."""
    line = b"MAIL FROM:<" + _checked(sender) + b">"
    if size is not None:
        line += b" SIZE=%d" % size
    if eightbit:
        line += b" BODY=8BITMIME"
    if smtputf8:
        line += b" SMTPUTF8"
    return line + b"\r\n"


def rcpt(recipient):
    return b"RCPT TO:<" + _checked(recipient) + b">\r\n"


DATA = b"DATA\r\n"
QUIT = b"QUIT\r\n"
STARTTLS = b"STARTTLS\r\n"
END_OF_DATA = b".\r\n"
