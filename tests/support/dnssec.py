"""A real DNSSEC setup on loopback for the DANE tests: nsd serving zones signed with
ldns-signzone, and unbound validating them from one trust anchor (the lab's "test." zone),
started and stopped by the test, as private instances in a temp directory. Needs root
(both listen on port 53: unbound follows delegations to port 53) and a private network
namespace (tests/run's advice); without root or a program, DnssecLab.skip_reason() says why
and the test skips.

    from tests.support.dnssec import DnssecLab, tlsa_data
    with DnssecLab(tmp_path) as lab:                  # nothing runs yet
        zone = lab.zone("secure.test")                # signed, DS in "test.": secure
        zone.add("@", "MX", "10 mx")                  # names relative to the zone, or absolute.
        zone.add("mx", "A", "127.0.0.25")
        zone.add("_25._tcp.mx", "TLSA", "3 1 1 " + tlsa_data(cert_pem, 1, 1))
        lab.zone("plain.test", signed=False)          # delegated without DS: insecure
        lab.zone("bogus.test", bogus="expired")       # or "wrong-key": validation fails, SERVFAIL
        lab.servfail_tlsa("mx2.secure.test")          # _tcp.mx2.secure.test: a subzone that is bogus
        lab.start()                                   # writes, signs, (re)starts nsd and unbound
        env DNSCACHEIP=lab.resolver                   # "127.0.54.2@53": the validating resolver
        lab.start()                                   # again after adding: a restart, cache empty

For the DANE chain tests, one line per case (SMTP servers on 127.0.0.x:25; ee/ta the
tlsa_data of the server's certificate (3 1 1) or of its CA (2 0 1)):
        lab.mail_domain("ee.test", "127.0.0.31", ["3 1 1 " + ee])       # DANE-EE match
        lab.mail_domain("ta.test", "127.0.0.32", ["2 0 1 " + ta])       # DANE-TA, chain to the CA
        lab.mail_domain("mismatch.test", "127.0.0.33", ["3 1 1 " + "00" * 32])
        lab.mail_domain("notls.test", "127.0.0.34", ["3 1 1 " + ee])    # server without STARTTLS
        lab.mail_domain("notlsa.test", "127.0.0.35")                    # secure, no TLSA: "none"
        lab.mail_domain("plain.test", "127.0.0.36", ["3 1 1 " + ee], signed=False)  # "insecure"
        lab.mail_domain("bogus.test", "127.0.0.37", bogus="expired")    # MX SERVFAIL: Z
        lab.mail_domain("lame.test", "127.0.0.38")
        lab.servfail_tlsa("mx.lame.test")                               # TLSA SERVFAIL: "failed"

Zones live under "test."; a zone's parent is the longest other lab zone it is under ("test."
for the rest), and gets its NS (ns.test., 127.0.54.1 by default) and, for a signed zone, its
DS. Keys are ECDSAP256SHA256 (a KSK and a ZSK per zone), made once per lab. Kinds:
  signed (default)      validated: unbound sets AD
  signed=False          unsigned and delegated without DS (NSEC proves it): insecure, no AD
  bogus="expired"       signed with signatures that expired in 2020: SERVFAIL
  bogus="wrong-key"     the parent's DS is another key's: SERVFAIL
  servfail_tlsa(host)   "_tcp.<host>" delegated with a DS but served unsigned: every
                        _PORT._tcp.<host> query SERVFAILs, while <host>'s own records resolve.
lab.logs() gives unbound's and nsd's logs (unbound says why it found data bogus).
"""

import hashlib
import os
import shutil
import subprocess
import time

PROGRAMS = ("nsd", "unbound", "ldns-keygen", "ldns-signzone")
LAB_ROOT = "test"


def tlsa_data(certificate, selector, mtype):
    """The hex association data of a certificate (PEM or DER bytes, or a path): selector 0 the
    whole certificate, 1 its SubjectPublicKeyInfo; mtype 0 full, 1 SHA-256, 2 SHA-512."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    if isinstance(certificate, str):
        with open(certificate, "rb") as source:
            certificate = source.read()
    if certificate.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(certificate)
    else:
        cert = x509.load_der_x509_certificate(certificate)
    if selector == 0:
        data = cert.public_bytes(serialization.Encoding.DER)
    else:
        data = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return data.hex()


def _absolute(name, origin):
    if name == "@":
        return origin
    if name.endswith("."):
        return name
    return "%s.%s" % (name, origin)


class Zone:
    """One zone's records (text, zone-file syntax) and kind."""

    def __init__(self, lab, name, signed=True, bogus=None, fake_ds=False):
        self.lab = lab
        self.name = name.rstrip(".") + "."
        self.signed = signed or bogus is not None
        self.bogus = bogus
        self.fake_ds = fake_ds    # DS in the parent, zone served unsigned: bogus
        self.records = []         # (absolute owner, type, rdata text)
        self.keys = None          # (ksk base, zsk base) paths
        self.stranger_keys = None  # bogus="wrong-key": what really signs it

    def add(self, owner, rdtype, *values):
        """Records of owner (relative to the zone, "@", or absolute with a final dot). A name in
        rdata is relative to the zone unless it ends with a dot, as in a zone file."""
        for value in values:
            self.records.append((_absolute(owner, self.name), rdtype.upper(), value))
        return self

    def text(self, delegations):
        lines = ["$ORIGIN %s" % self.name, "$TTL 60",
                 "@ IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 60" % (LAB_ROOT, LAB_ROOT),
                 "@ IN NS ns.%s." % LAB_ROOT]
        lines += ["%s IN %s %s" % (owner, rdtype, value) for owner, rdtype, value in self.records + delegations]
        return "\n".join(lines) + "\n"


class DnssecLab:
    def __init__(self, directory, ns_ip="127.0.54.1", resolver_ip="127.0.54.2"):
        self.directory = os.path.join(str(directory), "dnssec-lab")
        os.makedirs(self.directory, exist_ok=True)
        self.ns_ip, self.resolver_ip = ns_ip, resolver_ip
        self.resolver = "%s@53" % resolver_ip
        self.zones = {}
        self.processes = {}
        self.root = self.zone(LAB_ROOT)
        self.root.add("ns", "A", ns_ip)

    @staticmethod
    def skip_reason():
        """Why the lab cannot run here (a pytest.skip text), or None."""
        if os.geteuid() != 0:
            return "the DNSSEC lab needs root (nsd and unbound on port 53, in a namespace)"
        missing = [p for p in PROGRAMS if shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
                   is None]
        return "not installed: %s" % ", ".join(missing) if missing else None

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.stop()

    # --- zones ---
    def zone(self, name, signed=True, bogus=None):
        """The lab zone name (made on first use; kind as the module docstring says)."""
        key = name.rstrip(".").lower() + "."
        if key not in self.zones:
            if key != LAB_ROOT + "." and not key.endswith("." + LAB_ROOT + "."):
                raise ValueError("lab zones live under %s." % LAB_ROOT)
            self.zones[key] = Zone(self, key, signed, bogus)
        return self.zones[key]

    def mail_domain(self, domain, ip, tlsa=(), mx="mx", port=25, signed=True, bogus=None):
        """A zone domain whose one MX host <mx>.<domain> has address ip (A, or AAAA when it holds
        a colon) and the TLSA records tlsa ("U S M HEX" texts) at _PORT._tcp.<mx>.<domain>;
        returns the Zone, for more records."""
        zone = self.zone(domain, signed=signed, bogus=bogus)
        zone.add("@", "MX", "10 " + mx)
        zone.add(mx, "AAAA" if ":" in ip else "A", ip)
        if tlsa:
            zone.add("_%d._tcp.%s" % (port, mx), "TLSA", *tlsa)
        return zone

    def servfail_tlsa(self, host, port=25):
        """Make _PORT._tcp.<host> SERVFAIL (a bogus "_tcp.<host>" subzone holding a TLSA record)."""
        sub = self.zone("_tcp." + host.rstrip("."), signed=False)
        sub.fake_ds = True
        sub.add("_%d" % port, "TLSA", "3 1 1 " + "00" * 32)
        return sub

    def _parent(self, zone):
        candidates = [z for z in self.zones.values() if z is not zone and zone.name.endswith("." + z.name)]
        return max(candidates, key=lambda z: len(z.name), default=None)

    # --- files ---
    def _path(self, *parts):
        return os.path.join(self.directory, *parts)

    def _run(self, argv):
        done = subprocess.run(argv, cwd=self.directory, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError("%s: %s" % (" ".join(argv), done.stderr.strip() or done.stdout.strip()))
        return done.stdout.strip()

    def _new_keys(self, name):
        ksk = self._run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", name])
        zsk = self._run(["ldns-keygen", "-a", "ECDSAP256SHA256", name])
        return self._path(ksk), self._path(zsk)

    def _keys(self, zone):
        """The zone's keys: their DS goes into the parent."""
        if zone.keys is None:
            zone.keys = self._new_keys(zone.name)
        return zone.keys

    def _signing_keys(self, zone):
        """What signs the zone: its own keys, or for bogus="wrong-key" others of the same name,
        which the parent's DS does not vouch for."""
        if zone.bogus != "wrong-key":
            return self._keys(zone)
        if zone.stranger_keys is None:
            zone.stranger_keys = self._new_keys(zone.name)
        return zone.stranger_keys

    def _ds(self, zone):
        with open(self._keys(zone)[0] + ".ds") as ds:
            owner, _class, _type, rdata = ds.read().split(None, 3)
        return rdata.strip()

    def _write_zones(self):
        """Zone files, children first (their DS go into their parents), signed as needed."""
        delegations = {name: [] for name in self.zones}
        for zone in self.zones.values():
            parent = self._parent(zone)
            if parent is None:
                continue
            delegations[parent.name].append((zone.name, "NS", "ns.%s." % LAB_ROOT))
            if zone.signed or zone.fake_ds:
                # wrong-key: the DS is of the lab's key, the zone is signed with a stranger's
                delegations[parent.name].append((zone.name, "DS", self._ds(zone)))
        files = []
        for zone in self.zones.values():
            plain = self._path(zone.name + "zone")
            with open(plain, "w") as out:
                out.write(zone.text(delegations[zone.name]))
            if not zone.signed:
                files.append((zone.name, plain))
                continue
            argv = ["ldns-signzone", "-o", zone.name, "-f", plain + ".signed"]
            if zone.bogus == "expired":
                argv += ["-i", "20200101000000", "-e", "20200201000000"]
            self._run(argv + [plain] + list(self._signing_keys(zone)))
            files.append((zone.name, plain + ".signed"))
        return files

    def _write_config(self, files):
        with open(self._path("nsd.conf"), "w") as conf:
            conf.write("server:\n  ip-address: %s\n  port: 53\n  do-ip6: no\n  username: \"\"\n"
                       "  chroot: \"\"\n  zonesdir: \"%s\"\n  database: \"\"\n  pidfile: \"%s\"\n"
                       "  logfile: \"%s\"\n  xfrdfile: \"%s\"\n  zonelistfile: \"%s\"\n  xfrdir: \"%s\"\n"
                       "  verbosity: 2\n  server-count: 1\n  reuseport: no\n  hide-version: yes\n"
                       "remote-control:\n  control-enable: no\n" % (
                           self.ns_ip, self.directory, self._path("nsd.pid"), self._path("nsd.log"),
                           self._path("xfrd.state"), self._path("zone.list"), self.directory))
            for name, path in files:
                conf.write("zone:\n  name: \"%s\"\n  zonefile: \"%s\"\n" % (name, path))
        with open(self._path("anchor"), "w") as anchor:
            anchor.write("%s. IN DS %s\n" % (LAB_ROOT, self._ds(self.root)))
        with open(self._path("unbound.conf"), "w") as conf:
            conf.write("server:\n  interface: %s\n  port: 53\n  do-ip6: no\n  interface-automatic: no\n"
                       "  username: \"\"\n  chroot: \"\"\n  directory: \"%s\"\n  pidfile: \"%s\"\n"
                       "  use-syslog: no\n  logfile: \"%s\"\n  verbosity: 1\n  val-log-level: 2\n"
                       "  num-threads: 1\n  so-reuseport: no\n  do-not-query-localhost: no\n"
                       "  module-config: \"validator iterator\"\n  qname-minimisation: no\n"
                       "  local-zone: \"%s.\" nodefault\n  trust-anchor-file: \"%s\"\n"
                       "  access-control: 127.0.0.0/8 allow\n  prefetch: no\n"
                       "stub-zone:\n  name: \"%s.\"\n  stub-addr: %s@53\n" % (
                           self.resolver_ip, self.directory, self._path("unbound.pid"),
                           self._path("unbound.log"), LAB_ROOT, self._path("anchor"), LAB_ROOT, self.ns_ip))

    # --- processes ---
    def start(self):
        """Write and sign every zone and (re)start nsd then unbound; returns when both answer."""
        self.stop()
        self._write_config(self._write_zones())
        for log in ("nsd.log", "unbound.log"):
            open(self._path(log), "w").close()
        self.processes["nsd"] = subprocess.Popen(["nsd", "-d", "-c", self._path("nsd.conf")],
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(self.ns_ip, LAB_ROOT + ".", "nsd")
        self.processes["unbound"] = subprocess.Popen(["unbound", "-d", "-c", self._path("unbound.conf")],
                                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(self.resolver_ip, "ns.%s." % LAB_ROOT, "unbound")
        return self

    def _wait(self, ip, name, which, timeout=15.0):
        import dns.exception
        import dns.message
        import dns.query
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            if self.processes[which].poll() is not None:
                raise RuntimeError("%s exited: %s" % (which, self.logs()))
            try:
                dns.query.udp(dns.message.make_query(name, "SOA" if which == "nsd" else "A"), ip, timeout=0.3)
                return
            except (OSError, dns.exception.DNSException):  # not listening yet
                time.sleep(0.05)
        raise RuntimeError("%s does not answer on %s: %s" % (which, ip, self.logs()))

    def stop(self):
        for which in ("unbound", "nsd"):
            process = self.processes.pop(which, None)
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def logs(self):
        text = []
        for log in ("nsd.log", "unbound.log"):
            try:
                with open(self._path(log)) as source:
                    text.append("--- %s\n%s" % (log, source.read()[-4000:]))
            except OSError:
                pass
        return "\n".join(text)

    def query(self, name, rdtype):
        """dnspython's answer from the lab's resolver (for checks in tests): (rcode, AD, [rdata texts])."""
        import dns.flags
        import dns.message
        import dns.query
        import dns.rcode
        import dns.rdatatype
        response = dns.query.udp(dns.message.make_query(name, rdtype, want_dnssec=False,
                                                        flags=dns.flags.RD | dns.flags.AD),
                                 self.resolver_ip, timeout=10)
        records = [rd.to_text() for rrset in response.answer for rd in rrset if rrset.rdtype ==
                   dns.rdatatype.from_text(rdtype)]
        return dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AD), records

