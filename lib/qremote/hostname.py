"""A host name as DNS and TLS want it: ASCII, each U-label turned into its A-label (xn--).

The one IDNA encoder of qremote: the DNS query for a domain or relay, the TLS server
name (SNI) and the name tlsc-io checks the certificate against all come from here, so
they can never disagree. It is IDNA 2008 (RFC 5891) with the UTS #46 mapping,
non-transitional, from the `idna` package (a declared dependency). Python's own
"idna" codec is IDNA 2003, which maps "ß" to "ss" and final sigma to sigma:
"straße.de" would become "strasse.de", another domain, and the mail would go there.
A name that IDNA 2008 refuses is refused (InvalidName), never encoded the 2003 way.

`import idna` costs start-up time (about 15 ms of CPU: re, unicodedata, its tables),
so it is imported only for a name that is not ASCII.
"""


class InvalidName(ValueError):
    """A non-ASCII host name that IDNA 2008 refuses; str(error) says why."""


def to_ascii(host):
    """host (str) -> the ASCII name (str): as is when ASCII, else its A-labels
    (lower-cased by the mapping, a final dot kept); InvalidName when it cannot be one."""
    if host.isascii():
        return host
    import idna
    try:
        return idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError) as error:  # IDNAError is a UnicodeError
        raise InvalidName("%r is not a valid internationalised host name: %s" % (host, error)) from None
