"""Envelope addresses: refusal of control bytes, and stock qmail-remote's quoting.

Stock rule (addrmangle): an address without '@' is sent as it is (so "" is the null
sender <>); otherwise it is split at the LAST '@', the domain is kept as it is, and
the local part is quoted when it is empty, starts or ends with '.', holds "..", or
holds a byte outside the atom set (letters, digits and !#$%&'*+-./=?^_`{|}~).
Quoting wraps it in double quotes with a backslash before '"' and '\\'.

An angle bracket in the local part is quoted like any non-atom byte; in the domain (or
an address without '@') it cannot be quoted, so check() refuses it (stock sends it).

Addresses arrive as bytes (os.fsencode of argv), so 8-bit bytes pass unchanged.
"""

from . import failures

_ATOM = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-./=?^_`{|}~")


def check(role, address):
    """Refuse an address that would carry a CR, LF or NUL into an SMTP command, or an
    angle bracket into the part mangle() sends unquoted (the domain, or an address
    without '@'): "a@b> NOTIFY=NEVER" would end the path early and add parameters."""
    if b"\r" in address or b"\n" in address or b"\0" in address:
        raise failures.BadAddress(role, address)
    unquoted = address.rpartition(b"@")[2]
    if b"<" in unquoted or b">" in unquoted:
        raise failures.BadAddress(role, address)
    return address


def _needs_quoting(local):
    return (not local or local.startswith(b".") or local.endswith(b".") or b".." in local
            or any(c not in _ATOM for c in local))


def mangle(address):
    """The form that goes between < and > in MAIL FROM and RCPT TO."""
    local, at, domain = address.rpartition(b"@")
    if not at:
        return address
    if _needs_quoting(local):
        # CR and LF, which stock also escapes here, were refused by check().
        local = b'"' + local.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return local + b"@" + domain


def envelope(sender, recipients):
    """Checked and mangled sender and recipients, or BadAddress before anything is sent."""
    return (mangle(check("sender", sender)),
            [mangle(check("recipient", r)) for r in recipients])
