"""The opening of an SMTP session, shared by qmail-remote and qmail-remote-io:
greeting, EHLO with the HELO fallback, and the QUIT that ends every session.
"""

from . import failures
from .smtp import commands
from .smtp.ehlo import Capabilities
from .smtp.reply import ReplyTooLong
from .wire import Dropped


def exchange(channel, ip, command):
    """Send a command (or nothing) and read its reply; a drop is a ConnectionDied."""
    try:
        if command:
            channel.send(command)
        return channel.read_reply()
    except Dropped as error:
        raise failures.ConnectionDied(ip, why=str(error).encode()) from None
    except ReplyTooLong:
        raise failures.ReplyTooLong(ip) from None


def greeting(channel, ip):
    reply = exchange(channel, ip, b"")
    if reply.code != 220:
        raise failures.GreetingFailed(ip, reply)
    return reply


def hello(channel, ip, helohost):
    """EHLO, or HELO when EHLO is refused; the server's capabilities (none after HELO)."""
    reply = exchange(channel, ip, commands.ehlo(helohost))
    if reply.code == 250:
        return Capabilities.from_ehlo(reply)
    reply = exchange(channel, ip, commands.helo(helohost))
    if reply.code != 250:
        raise failures.HeloRejected(ip, reply)
    return Capabilities()


def quit(channel):
    """Say QUIT and do not wait for the reply (as stock: the outcome is already known)."""
    try:
        channel.send(commands.QUIT)
    except Dropped:
        pass
