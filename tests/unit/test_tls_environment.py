"""tls/context.environment: SSL_PEER_CERT_HASH without hashlib on every Python version.

hashlib adds its OpenSSL wrapper (about 2.5 ms per TLS delivery); the builtin SHA-256 is
_sha256 up to 3.11 and _sha2 from 3.12 on. A real in-memory handshake (ssl on both sides,
which imports no hashlib), in a fresh interpreter (-I -S, as the commands run)."""

import hashlib
import os
import ssl
import subprocess
import sys

from tests.conftest import TOP

HANDSHAKE = r'''
import sys
sys.path.insert(0, sys.argv[1])
import ssl
from qremote.tls import context
server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server_context.load_cert_chain(sys.argv[2], sys.argv[3])
client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
client_context.check_hostname = False
client_context.verify_mode = ssl.CERT_NONE
client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
client = client_context.wrap_bio(client_in, client_out)
server = server_context.wrap_bio(server_in, server_out, server_side=True)
for _ in range(10):
    for side in (client, server):
        try:
            side.do_handshake()
        except ssl.SSLWantReadError:
            pass
    server_in.write(client_out.read())
    client_in.write(server_out.read())
before = "hashlib" in sys.modules or "_hashlib" in sys.modules
env = context.environment(client._sslobj, None, False)
after = "hashlib" in sys.modules or "_hashlib" in sys.modules
print(env[b"SSL_PEER_CERT_HASH"].decode(), before, after)
'''


def test_peer_certificate_hash_without_hashlib(pki):
    certfile, keyfile = pki.server("127.0.0.1")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", HANDSHAKE, os.path.join(TOP, "lib"), certfile, keyfile],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with open(certfile) as pem:
        der = ssl.PEM_cert_to_DER_cert(pem.read())
    assert done.stdout.split() == ["SHA256:" + hashlib.sha256(der).hexdigest(), "False", "False"]
