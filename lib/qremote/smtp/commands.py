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


def xtext(address):
    """RFC 3461 xtext, for MAIL's AUTH=<address> (RFC 4954 section 5)."""
    return b"".join(bytes((c,)) if 33 <= c <= 126 and c not in (43, 61) else b"+%02X" % c for c in address)


def mail(sender, size=None, eightbit=False, smtputf8=False, auth=None):
    """MAIL FROM with the ESMTP parameters the caller decided to use; auth: the sender
    for AUTH=<...> once authenticated (None: not authenticated, no parameter)."""
    line = b"MAIL FROM:<" + _checked(sender) + b">"
    if size is not None:
        line += b" SIZE=%d" % size
    if eightbit:
        line += b" BODY=8BITMIME"
    if smtputf8:
        line += b" SMTPUTF8"
    if auth is not None:
        line += b" AUTH=<" + xtext(_checked(auth)) + b">"
    return line + b"\r\n"


def rcpt(recipient):
    return b"RCPT TO:<" + _checked(recipient) + b">\r\n"


DATA = b"DATA\r\n"
QUIT = b"QUIT\r\n"
STARTTLS = b"STARTTLS\r\n"
END_OF_DATA = b".\r\n"
