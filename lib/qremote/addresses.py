"""Envelope addresses: refusal of control bytes, and stock qmail-remote's quoting.

Stock rule (addrmangle): an address without '@' is sent as it is (so "" is the null
sender <>); otherwise it is split at the LAST '@', the domain is kept as it is, and
the local part is quoted when it is empty, starts or ends with '.', holds "..", or
holds a byte outside the atom set (letters, digits and !#$%&'*+-./=?^_`{|}~).
Quoting wraps it in double quotes with a backslash before '"' and '\\'.

One change from stock: RFC 6531 adds UTF-8 non-ASCII characters to atext, so a local
part that is valid UTF-8 and a dot-string otherwise (only atom bytes besides its UTF-8
characters, dots well placed) is sent unquoted: "jürgen"@x would keep its quotes in
the envelope (Exim does). Such an address needs SMTPUTF8, which the transaction asks
for (or refuses to send without). A local part with bytes that are not valid UTF-8
(Latin-1, say) is still quoted as stock did: it is no RFC 6531 address either way, and
quoted it at least reaches the servers that took it from stock.

An angle bracket in the local part is quoted like any non-atom byte; in the domain (or
an address without '@') it cannot be quoted, so check() refuses it (stock sends it).

Addresses arrive as bytes (os.fsencode of argv), so 8-bit bytes pass unchanged.
"""

from . import failures

_ATOM = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-./=?^_`{|}~"


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
    if not local or local.startswith(b".") or local.endswith(b".") or b".." in local:
        return True
    others = local.translate(None, _ATOM)  # the bytes outside the atom set
    if not others:
        return False
    if any(c < 0x80 for c in others):
        return True
    try:
        local.decode("utf-8")  # strict: no overlong form, no surrogate, nothing cut short
    except UnicodeDecodeError:
        return True
    return False


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
