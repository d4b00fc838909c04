"""The one sanitiser of foreign text (a server's line, OpenSSL's words, a control file's
content) inside our own sentences, and stock's outsafe() for names. No imports: tlsc-io
uses it without the report table (failures.py)."""

MAX_TEXT = 300  # bytes of one foreign line in a sentence: a line, not a document


def safe_name(name):
    """Stock's outsafe(): every byte outside 33..126 becomes '?'."""
    if isinstance(name, str):
        name = name.encode("utf-8", "replace")
    return bytes(c if 33 <= c <= 126 else 63 for c in name)


def safe_text(text, limit=MAX_TEXT):
    """One line of printable ASCII, at most limit bytes: every other byte becomes '?'.
    str (OpenSSL's words, an strerror) or bytes (a server's line)."""
    if isinstance(text, str):
        text = text.encode("utf-8", "replace")
    return bytes(c if 32 <= c <= 126 else 63 for c in text[:limit])
