"""Certificates for the TLS tests, generated with trustme (no file is committed).

PKI(directory) makes, once:
  ca_file        PEM bundle of the trusted CA (control/trustanchors as a file)
  ca_dir         a directory of OpenSSL-hashed copies of it, path ending in "/"
                 (control/trustanchors as a directory)
  other_ca_file  a CA nobody trusts
and on demand (each call writes a fresh pair; returns (certfile, keyfile)):
  server(*names)            signed by the trusted CA
  untrusted(*names)         signed by the other CA
  expired(*names)           signed by the trusted CA, valid until yesterday
  odd_subject(*names, unit=) signed by the trusted CA, with that organizationalUnitName
  client(name)              a client certificate signed by the trusted CA
  intermediate(*names)      signed by an intermediate CA of the trusted CA (the chain
                            file: leaf, intermediate)
  encrypted_client(name, password)  a client certificate and its key encrypted with password
The chain files hold the leaf then the CA, as a server sends them.
"""

import datetime
import itertools
import os
import subprocess

import trustme


class PKI:
    def __init__(self, directory):
        self.directory = str(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._ca = trustme.CA(organization_name="qremote tests trusted CA")
        self._other = trustme.CA(organization_name="qremote tests untrusted CA")
        self._serial = itertools.count(1)
        self.ca_file = self._path("ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)
        self.other_ca_file = self._path("other-ca.pem")
        self._other.cert_pem.write_to_path(self.other_ca_file)
        self.ca_dir = self._hashed_dir(self.ca_file)
        self._intermediate = None

    def _path(self, name):
        return os.path.join(self.directory, name)

    def _hashed_dir(self, pem):
        """A CApath directory: the certificate under "<subject hash>.0", as c_rehash names it."""
        directory = self._path("ca.d")
        os.makedirs(directory, exist_ok=True)
        subject_hash = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", pem], check=True,
                                      capture_output=True, text=True).stdout.strip()
        with open(pem, "rb") as source, open(os.path.join(directory, subject_hash + ".0"), "wb") as copy:
            copy.write(source.read())
        return directory + "/"

    def _write(self, leaf, label):
        number = next(self._serial)
        certfile, keyfile = self._path("%s-%d.crt" % (label, number)), self._path("%s-%d.key" % (label, number))
        with open(certfile, "wb") as out:
            for blob in leaf.cert_chain_pems:
                out.write(blob.bytes())
        leaf.private_key_pem.write_to_path(keyfile)
        return certfile, keyfile

    def server(self, *names):
        return self._write(self._ca.issue_cert(*names), "server")

    def untrusted(self, *names):
        return self._write(self._other.issue_cert(*names), "untrusted")

    def expired(self, *names):
        now = datetime.datetime.now(datetime.timezone.utc)
        leaf = self._ca.issue_cert(*names, not_before=now - datetime.timedelta(days=30),
                                   not_after=now - datetime.timedelta(days=1))
        return self._write(leaf, "expired")

    def odd_subject(self, *names, unit):
        """Signed by the trusted CA, with organizationalUnitName `unit` (any length)."""
        return self._write(self._ca.issue_cert(*names, organization_unit_name=unit), "odd")

    def client(self, name="client.test"):
        return self._write(self._ca.issue_cert(name), "client")

    def intermediate(self, *names):
        if self._intermediate is None:
            self._intermediate = self._ca.create_child_ca()
        return self._write(self._intermediate.issue_cert(*names), "intermediate")

    def encrypted_client(self, name, password):
        """(certfile, keyfile) with the key in PKCS#8 PEM encrypted with password (bytes)."""
        from cryptography.hazmat.primitives import serialization

        certfile, keyfile = self.client(name)
        with open(keyfile, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        with open(keyfile, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(password)))
        return certfile, keyfile
