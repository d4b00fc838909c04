"""DNS for qmail-remote: a domain's MX targets, or a relay's addresses, as Targets.

Its one job: names in, an ordered list of candidates.Target out, or the stock
failure (failures.DnsSoft, DnsHard, NoAddress, NullMX); with mx_lookup/relay_lookup,
a Lookup that also holds each target's DANE state (Dane) and the MTA-STS TXT values. It is imported only by
resolve.py, and only when a name must be looked up, so a delivery to an IP literal
or an IP route loads none of it. (Named resolver, not dns, so that it never reads
like dnspython's `dns` package.)

Three layers:
  codec.py     the wire, pure: names, the question packet, the answer's records
  exchange.py  the I/O: the nameservers, Stage (UDP/TCP exchanges with deadlines)
  mx.py        the decisions: mx_lookup, relay_lookup (and mx_targets, relay_targets: their
               targets, with DANE off), order, null MX, address sharing, DANE states

Rules of this package:
1. The whole wire is read and written here: the header, the question, A/AAAA/MX/CNAME/
   TLSA/TXT rdata (int.from_bytes, inet_ntop; TLSA: usage, selector, matching type and
   the data, at least 3 octets; TXT: one or more length-prefixed strings filling the
   rdata exactly, joined into one value), and domain names (Name: labels to wire, wire
   to labels with compression pointers, ASCII case-insensitive comparison, text).
   dnspython is not used at all. A host holding a non-ASCII byte is read as UTF-8
   and turned into its A-labels (xn--) by qremote.hostname (IDNA 2008 with UTS #46,
   the `idna` package, imported only then: the same encoder as the TLS server
   name's), and the ASCII result goes through our own encoder like any other host;
   a name IDNA 2008 refuses is no host. Names read from answers are never
   converted: A-labels stay A-labels. (Before: dnspython's dns.name did the IDNA,
   2003 or 2008 depending on whether `idna` happened to be importable, and its
   import cost 85 to 130 ms of CPU; idna costs about 20 ms; an ASCII name costs
   neither: tests/bench/bench_dns.py, doc/dns.html.)
2. Our own I/O, stub-resolver style: select.poll over _socket sockets, every query
   of a stage in flight at once. Stage 1 is the MX query (and the _mta-sts TXT:
   rule 13); stage 2 the A and AAAA queries of every MX target together (or of the
   domain itself: implicit MX; or of a relay, which is the only stage of
   relay_targets), each with its TLSA query when DANE asks for it (rule 12). So DANE
   and MTA-STS add queries, never a round trip. A stage ends when its required
   queries are answered (MX; A and AAAA; a secure host's TLSA), or at its deadline;
   an optional query still in flight then stays in flight, on the same sockets,
   through the next stage (Stage.then), and is SOFT if the last stage ends first.
3. Deadlines: with control/timeoutdns > 0, each stage gets that many seconds of
   its own. With 0 (the default: "no limit", as skarnet's), all the DNS work of a
   delivery shares one overall cap of OVERALL_CAP (60 s), so a dead resolver
   defers the delivery (Z #4.1.2) after a minute instead of hanging it forever.
4. A query is sent over UDP without EDNS (answers fit 512 bytes, as stock), and
   retransmitted to the next nameserver after RETRY seconds, the wait doubling
   after each round of all servers up to MAX_RETRY, until the deadline. A server
   that refuses the port (ICMP, seen on the connected socket) is dead for the rest
   of the stage; SERVFAIL, REFUSED, another error rcode or a malformed answer fail
   that server for that query only, and the next server is asked at once; when
   no server is left the query is a soft failure. An error reply (FORMERR,
   SERVFAIL, NOTIMP, REFUSED) with our id but no question section, on the server's
   connected socket, is that server's answer too: it fails that server for that
   query. A truncated answer (TC) is asked again over TCP from the server that sent
   it (one TCP exchange at a time per query; another server's TC waits its turn);
   meanwhile the other servers go on being asked over UDP on the usual schedule, and
   the first good answer, UDP or TCP, wins, so a server that stalls over TCP blocks
   nothing. A TCP answer that is truncated too fails that server. Every query sets
   AD (RFC 6840 section 5.7: "say whether you validated it", without EDNS's DO bit,
   so no DNSSEC records come back) and each Result keeps the answer's AD bit.
5. An answer counts only if it comes from the server's address and port (the
   sockets are connected), has our random query id, is a response to a standard
   query, and repeats our question exactly (case-insensitively), or is an error
   reply without a question section (rule 4). Anything else is junk and ignored: a stray or forged packet cannot end a query. An answer that
   passes these checks but cannot be parsed is a malformed answer (rule 4).
6. Results: NOERROR gives records (none: NODATA), NXDOMAIN is hard, the rest soft.
   MX: NXDOMAIN -> DnsHard(host); soft -> DnsSoft; a single MX whose target is the
   root ("0 .", RFC 7505) -> NullMX, with no address query; no MX record (NODATA,
   or an answer holding only a CNAME) -> implicit MX: the addresses of the host
   itself at preference 0. A target that is an IPv4 literal ("127.0.0.7.") is used
   as is, keeping its MX preference (stock gives it preference 0, a quirk not
   kept). After stage 2: targets with addresses are returned even if others
   failed (as stock); none, and some target had a soft failure -> DnsSoft; none
   otherwise -> NoAddress (D #5.4.4). The host itself (implicit MX) or a relay
   without any address: soft -> DnsSoft, else DnsHard(name), as stock. An address
   no mail server can have (candidates.unusable_reason: 0.0.0.0/8, multicast,
   240.0.0.0/4 and broadcast, ::, ff00::/8, IPv4-mapped forms alike) is skipped, an
   MX target literal too; when only such addresses were found (and nothing failed
   softly): UnusableAddresses naming them, D #5.4.4, or Z #4.3.0 for a relay.
7. CNAME: the recipient domain is never rewritten (RFC 5321 section 5.1, notqmail's
   choice); a CNAME chain inside an answer is followed (at most MAX_CNAME, 16,
   links: stock follows longer ones than 8) and the records of the chain's end are
   used; a longer chain (or a loop) is a soft failure, never a bounce, which is what a recursive resolver
   gives (stock takes every record of the asked type, whoever owns it). Records
   owned by other names are ignored. No follow-up query is made for a chain the
   server did not complete: it counts as NODATA.
8. Order: MX preference ascending; equal preferences in random order, from
   os.urandom (never a time or pid seed). A target name listed twice keeps its
   best preference. Each target's addresses: IPv6 first (RFC 8305 section 4),
   each family in answer order; connect.interleave() then alternates families.
9. Bounds on what the DNS peer controls: answers up to 65535 bytes (UDP read size
   and TCP length prefix), at most MAX_RECORDS answer records read, MAX_MX
   targets (the best ones), MAX_ADDRESSES addresses per target, MAX_CNAME links.
   A name read from an answer: labels of type 00 (length up to 63) and 11
   (compression pointer) only; a pointer must point before the start of the
   labels being read, at labels that end before that start (so it can never loop,
   and a forward pointer is refused); at most MAX_POINTERS (16) pointers and
   MAX_NAME (255) octets in wire form; anything else is Malformed.
10. Nameservers: $DNSCACHEIP when set and not blank (space-separated `ip` or
   `ip@port`, IPv4 or IPv6, for tests and debugging; a word that is not one is a
   Z naming it), else the `nameserver` lines of /etc/resolv.conf
   (127.0.0.1 when there are none, as the C library does). At most MAX_SERVERS.
   Names are always absolute: no search list, as stock. /etc/hosts is not read.
11. A host to look up (query_name), as dnspython used to read it: split at dots, one
   final dot allowed, no empty label, labels of 1 to 63 octets, at most 255 octets
   in wire form, case kept as given; "", "." and "@" are the root, which is no host.
   A host holding a backslash is no host (it would be an escape in zone-file text).
   Names are printed (name_bytes: reports, SNI) without the final dot, a byte that
   is not printable ASCII as \\DDD and one of "().;\\@$ behind a backslash.
12. DNSSEC and DANE (RFC 7672; mx_lookup/relay_lookup with dane=True, the default;
   mx_targets/relay_targets never ask): the resolver's AD bit is the only
   validation (the resolver must be a validating one, such as unbound). The TLSA of
   _PORT._tcp.<host> (25 for MX hosts, the route's port for a relay) is asked in
   stage 2 beside the host's A and AAAA, only when the MX answer was validated
   (implicit MX: the MX NODATA; a relay: always, nothing came before it). A target's
   Dane: "insecure" when the MX answer, an address answer or the TLSA answer was not
   validated (no DANE); "failed" (with why) when the host's addresses were validated
   and its TLSA query failed (SERVFAIL, which is also what a bogus answer gives, no
   answer by the deadline, a CNAME chain too long), or when one address answer was
   validated and the other failed; "none" for a validated NXDOMAIN or NODATA (or
   DANE off); "unusable" for a validated RRset without a usable record; "secure"
   with the usable records: usage 2 or 3, selector 0 or 1, matching type 0, 1 or 2,
   and a digest of the right length (32, 64 octets; a wrong length makes that
   record unusable, not the answer malformed). The TLSA base domain is the MX host
   name as the MX record gives it (the relay; the domain for an implicit MX): a
   CNAME for the host's addresses is not followed by a second TLSA query (RFC 7672
   section 2.2.3 allows the initial name; an MX target should not be an alias).
   Stage 2 waits for a TLSA only while its host is secure (both address answers
   validated): an insecure host's TLSA decides nothing. A literal MX target is
   "insecure".
13. MTA-STS (RFC 8461; mx_lookup with sts=True): the TXT of _mta-sts.<host> is asked
   beside the MX query and never waited for (rule 2). Lookup.sts: the TXT values
   (bytes, each record's strings joined; [] for NXDOMAIN or NODATA), "failed" when
   the query failed or was unanswered when the lookup ended, None when not asked.
   Lookup.answers lists every query for the trace: (name, type, status, AD, record
   texts).
"""

from .exchange import nameservers
from .mx import Dane, Lookup, mx_lookup, mx_targets, relay_lookup, relay_targets

__all__ = ["Dane", "Lookup", "mx_lookup", "mx_targets", "nameservers", "relay_lookup", "relay_targets"]
