"""TLS for tlsc-io: context.py builds the client context and names what the handshake
learned or why it failed; relay.py drives the handshake and then relays bytes.

Both use the stdlib ssl module's C half, _ssl, directly: `import ssl` costs about
27 ms of start-up (enum, socket, re, base64...), `import _ssl` about 6 ms, and
tlsc-io runs once per encrypted delivery. Only _SSLContext, MemoryBIO, _wrap_bio and
the exception classes are used, the same calls ssl.SSLContext and ssl.SSLObject make.
"""
