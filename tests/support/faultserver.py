"""A loopback SMTP server that injects one fault at one stage, the rules that say what
the chain must report for each (stage, fault), and a chain runner that measures memory.

Stages, in the order a delivery meets them (two recipients, so "each RCPT" is two):
  connect   the TCP connection itself            (faults: reset = refused, stall = never accepted)
  greeting  the 220 greeting
  ehlo      the reply to EHLO, and to HELO if the client falls back to it
  mail, rcpt1, rcpt2, data   the reply to that command
  body      while the message is arriving        (connection faults only)
  final     the reply to the final dot
Over STARTTLS (FaultServer(tls=(certfile, keyfile)): EHLO offers STARTTLS), three more stages:
  starttls  the reply to STARTTLS (every fault; a reply with the code 220 starts the handshake)
  handshake the TLS handshake, after the client's ClientHello has arrived (TLS_HANDSHAKE_FAULTS,
            "inject": cleartext bytes right behind the 220, in the same segment)
  ehlo_tls  the reply to EHLO (and HELO) inside TLS
and the stages mail..final are then served inside TLS. tls_matrix() lists the TLS cases
(with the tlsstrictness each runs at) and expected_tls() their rules (doc/starttls.html).
Two stages outside the matrix: ("quit", "hold") never answers QUIT and keeps the connection
open, blind to the client's close (the hygiene tests' server that never lets go); and
("body_early", fault) strikes after 1 KiB of the message (BODY_EARLY_READ), with a receive
window and a segment size kept small (EARLY_RCVBUF, EARLY_MSS) so that the client cannot
hand a whole EARLY_MESSAGE_SIZE message and its final dot to its kernel before the fault: a
message that fits in one read of the client, sent with its dot in one write.

Modes (what the server's EHLO offers), each with the whole matrix:
  pipelined  EHLO with PIPELINING: MAIL, the RCPTs and DATA in one write
  lockstep   EHLO without PIPELINING: one command per reply
  helo       EHLO refused (500): HELO, no ESMTP at all; the "ehlo" stage is then the HELO reply

Faults:
  reset      RST: SO_LINGER 0, then close
  close      close(), as a server process that exits (the kernel sends RST instead of FIN
             when pipelined commands are still unread: real life)
  stall      say nothing, read everything, until the client goes (body: read nothing more)
  slow       the stage's normal reply at 1 byte per second (body: read 1 byte per second)
  garbage    one line of binary noise (a TLS record header, 8-bit bytes)
  longline   the stage's code, then 10 MB without a newline
  continuations  100 000 continuation lines, then a last line
  nul8bit    the stage's normal reply with NUL and 8-bit bytes in its text (harmless)
  code_2_0, code_99, code_2000   replies whose code is malformed: "2 0", "99", "2000"
  wrong_class  a well-formed reply of the wrong class: 354 (250 to DATA)
  temp, perm a well-formed 4xx or 5xx reply
"""

import functools
import os
import socket
import struct
import threading
import time

from tests.support.net import Stoppable, accept_each, close_quietly, listening

STAGES = ("connect", "greeting", "ehlo", "mail", "rcpt1", "rcpt2", "data", "body", "final")
STAGES_TLS = ("starttls", "handshake", "ehlo_tls")  # then mail..final inside TLS
CONNECTION_FAULTS = ("reset", "close", "stall", "slow")
REPLY_FAULTS = ("garbage", "longline", "continuations", "nul8bit", "code_2_0", "code_99", "code_2000",
                "wrong_class", "temp", "perm")
FAULTS = CONNECTION_FAULTS + REPLY_FAULTS
SLOW_FAULTS = ("stall", "slow")  # those that end by the client's timeout
MODES = ("pipelined", "lockstep", "helo")
TLS_HANDSHAKE_FAULTS = ("reset", "close", "stall", "slow", "garbage", "inject")
# inside TLS at tlsstrictness 2, a representative subset (at 0: every fault): enough to prove
# K/Z/D and the duplicate window through the relay with a verified certificate as well
TLS_INNER_FAULTS = ("reset", "close", "stall", "garbage", "temp", "perm", "code_2_0")
TLS_INNER_STAGES = ("ehlo_tls", "mail", "rcpt1", "rcpt2", "data", "body", "final")
STRICTNESSES = (0, 1, 2)


def applicable(stage, fault):
    if stage == "connect":
        return fault in ("reset", "stall")
    if stage == "body":
        return fault in CONNECTION_FAULTS
    return True


def matrix():
    """Every (stage, fault) pair the server can inject."""
    return [(stage, fault) for stage in STAGES for fault in FAULTS if applicable(stage, fault)]


NORMAL = {
    "greeting": b"220 fault.test ESMTP\r\n",
    "ehlo": b"250-fault.test\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
    "mail": b"250 ok\r\n",
    "rcpt1": b"250 ok\r\n",
    "rcpt2": b"250 ok\r\n",
    "data": b"354 go ahead\r\n",
    "final": b"250 ok queued as 1\r\n",
    "starttls": b"220 2.0.0 ready to start TLS\r\n",
}
EHLO_WITHOUT_PIPELINING = b"250-fault.test\r\n250-SIZE 100000000\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
OFFER_STARTTLS = b"250-STARTTLS\r\n"  # put before the last line of the cleartext EHLO reply
GARBAGE = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage \xff\xfe\x80\r\n"
# in place of the server's handshake: not a TLS record at all (GARBAGE above would be a
# truncated record, which leaves the client waiting: the stall case)
HANDSHAKE_GARBAGE = b"garbage \xff\xfe\x80 not TLS\r\n" * 4
INJECTED = b"250 injected\r\n"
LONG_LINE = 10 << 20
CONTINUATIONS = 100000
NUL_8BIT = b"\x00nul \xff\xe9\x80 8bit "
MALFORMED = {"code_2_0": b"2 0 odd\r\n", "code_99": b"99 odd\r\n", "code_2000": b"2000 odd\r\n"}
TEMP = b"451 4.3.0 fault says later\r\n"
PERM = b"554 5.7.1 fault says no\r\n"
_LONG_CHUNK = b"x" * 65536
BODY_READ_BEFORE_FAULT = 64 * 1024
# The body stage needs a message larger than both loopback socket buffers together, so
# that the client is still writing it when the fault comes (the dot not yet sent).
BIG_MESSAGE_SIZE = 24 << 20
BODY_EARLY_READ = 1024
EARLY_MESSAGE_SIZE = 100 << 10
# On loopback the client's send buffer starts near 4 MB (the 64 KiB MSS makes it so); an
# MSS of 536 brings it down to about 64 KiB and a 1 KiB receive buffer closes the window:
# the client's kernel then takes some 30-45 KiB of the message, not all of it.
EARLY_RCVBUF = 1024
EARLY_MSS = 536


# --- the rules ---

class Expected:
    """What the chain must report: recipient letters, then the final letter and a text piece."""

    __slots__ = ("recipients", "letter", "text", "duplicate", "accepted", "without", "sessions", "tls")

    def __init__(self, recipients, letter, text, duplicate=False, without=(), sessions=None, tls=None):
        """without: pieces the text must not hold; sessions: how many connections the
        server must have seen (None: not checked); tls: whether the message went over
        TLS (None: not checked; see check_sessions)."""
        self.recipients, self.letter, self.text, self.duplicate = recipients, letter, text, duplicate
        self.without, self.sessions, self.tls = without, sessions, tls
        self.accepted = letter == "K"

    def __repr__(self):
        return "Expected(%r, %r, %r, duplicate=%r)" % (self.recipients, self.letter, self.text, self.duplicate)

    def check(self, reports):
        """None if reports match, else a description of the mismatch."""
        letters = "".join(letter for letter, _ in reports[:-1])
        letter, text = reports[-1]
        allowed = self.recipients if isinstance(self.recipients, tuple) else (self.recipients,)
        if letters not in allowed or letter != self.letter:
            return "letters %r %r, wanted %r %r" % (letters, letter, self.recipients, self.letter)
        pieces = self.text if isinstance(self.text, tuple) else (self.text,)
        if not any(piece in text for piece in pieces):
            return "text %r lacks %r" % (text, self.text)
        if (b"Possible duplicate!" in text) != self.duplicate:
            return "text %r: duplicate should be %r" % (text, self.duplicate)
        for piece in self.without:
            if piece in text:
                return "text %r has %r" % (text, piece)
        return None

    def check_sessions(self, sessions):
        """None if the server's sessions fit: their number, and for a K whether the
        session that took the message was inside TLS; else a description."""
        if self.sessions is not None and len(sessions) != self.sessions:
            return "%d connections, wanted %d" % (len(sessions), self.sessions)
        if self.letter == "K" and self.tls is not None:
            took = [s for s in sessions if s.accepted]
            if not took or took[-1].tls != self.tls:
                return "the message went %s, wanted %s" % (
                    "nowhere" if not took else "over TLS" if took[-1].tls else "in cleartext",
                    "over TLS" if self.tls else "in cleartext")
        elif self.tls and not (sessions and sessions[0].tls):
            return "the fault was not met inside TLS"
        if any(s.tls for s in sessions[1:]):
            return "a connection after the first did TLS (a cleartext retry must not)"
        return None


ANSWERED_BEFORE = {"greeting": "", "ehlo": "", "mail": "", "rcpt1": "", "rcpt2": "r",
                   "data": "rr", "body": "rr", "final": "rr"}
REPLY_TEXT = {"greeting": b"but greeting failed.", "ehlo": b"but my name was rejected.",
              "mail": b"but sender was rejected.", "data": b"failed on DATA command.",
              "final": b"failed after I sent the message."}


def expected(stage, fault):
    """The outcome the rules demand.

    K only after a 2xx to the final dot. "Possible duplicate!" exactly when the
    connection is lost (or the reply is unreadable) after the final dot was sent and
    before its reply. A reply (malformed or 4xx) is Z, a 5xx is D where stock says D
    (MAIL, DATA, the final dot; greeting and HELO failures are always Z); for a RCPT
    the reply decides that recipient's letter (h for 5xx, s otherwise) and the
    other recipient still gets the message.
    """
    if stage == "connect":
        return Expected("", "Z", b"wasn't able to establish an SMTP connection")
    if fault == "nul8bit":
        return Expected("rr", "K", b"accepted message.")
    before = ANSWERED_BEFORE[stage]
    if (stage, fault) == ("greeting", "reset"):
        # an RST right after the handshake may reach the client before it sees the
        # connection complete: then it is a failed connect (stock's getpeername() races alike)
        return Expected("", "Z", (b"but connection died.", b"wasn't able to establish an SMTP connection"))
    if fault == "reset":
        # an RST makes the kernel drop what the client had not read yet: replies to
        # RCPTs may be lost with it, and a recipient without a report takes the Z
        return Expected(tuple(before[:n] for n in range(len(before) + 1)), "Z", b"but connection died.",
                        duplicate=stage == "final")
    if fault in CONNECTION_FAULTS:
        return Expected(before, "Z", b"but connection died.", duplicate=stage == "final")
    if fault in ("longline", "continuations"):
        return Expected(before, "Z", b"but its reply was too long", duplicate=stage == "final")
    if fault == "wrong_class":
        # below 400 goes on, as stock, except at the places that need one exact answer:
        # the greeting (220), EHLO/HELO (250), DATA (354: else the server would read the
        # message as commands; stock sends it) and the final dot, where only a 2xx is
        # success (stock says K to a 3xx)
        if stage in ("mail", "rcpt1", "rcpt2"):
            return Expected("rr", "K", b"accepted message.")
        return Expected(before, "Z", REPLY_TEXT[stage])
    permanent = fault == "perm"
    if stage in ("rcpt1", "rcpt2"):
        mine = "h" if permanent else "s"
        return Expected(mine + "r" if stage == "rcpt1" else "r" + mine, "K", b"accepted message.")
    letter = "D" if permanent and stage in ("mail", "data", "final") else "Z"
    return Expected(before, letter, REPLY_TEXT[stage])


def early_message_file(directory):
    """A message of EARLY_MESSAGE_SIZE bytes in a file, for the body_early stage."""
    path = os.path.join(directory, "early")
    line = b"x" * 76 + b"\n"
    head = b"Subject: early\n\n"
    with open(path, "wb") as out:
        out.write(head + line * ((EARLY_MESSAGE_SIZE - len(head)) // len(line)))
    return path


def message_files(directory, message):
    """(small, big): message in a file, and a BIG_MESSAGE_SIZE one for the body stage."""
    small = os.path.join(directory, "small")
    with open(small, "wb") as out:
        out.write(message)
    big = os.path.join(directory, "big")
    with open(big, "wb") as out:
        line = b"x" * 76 + b"\n"
        out.write(b"Subject: big\n\n" + line * (BIG_MESSAGE_SIZE // len(line)))
    return small, big


def tls_matrix():
    """The TLS cases: (stage, fault, tlsstrictness). STARTTLS and the handshake at every
    strictness; the stages inside TLS at 0 (certificate not checked) with every fault,
    and at 2 (verified) with a representative subset."""
    cases = [("starttls", fault, level) for level in STRICTNESSES for fault in FAULTS]
    cases += [("handshake", fault, level) for level in STRICTNESSES for fault in TLS_HANDSHAKE_FAULTS]
    for level, faults in ((0, FAULTS), (2, TLS_INNER_FAULTS)):
        cases += [(stage, fault, level) for stage in TLS_INNER_STAGES for fault in faults
                  if applicable(stage, fault)]
    return cases


# why a handshake fault makes the address fail TLS, as the reports say it (doc/starttls.html)
HANDSHAKE_WHY = {
    "reset": b"connection closed during the TLS handshake",
    "close": b"connection closed during the TLS handshake",
    "stall": b"TLS handshake timed out",
    "slow": b"TLS handshake timed out",
    "garbage": b"TLS handshake error: ",
    "inject": b"plaintext after the STARTTLS reply (response injection)",
}
TLS_REQUIRED = b"Sorry, no server would take the message over TLS, as control/tlsstrictness 2 requires (127.0.0.1: "
NO_TLS_NOTE = b"accepted message. (sent in cleartext: no server would do TLS)"
HANDSHAKE_NOTE = b"accepted message. (sent in cleartext: the TLS handshake failed ("
PLAIN_K_WITHOUT = (b"(TLS", b"(sent in cleartext")


def over_tls(level):
    """The piece of a K text over TLS: "IP accepted message. (TLSv1.3 verified, cipher X)"."""
    return b" verified, cipher " if level >= 2 else b" unverified, cipher "


def expected_tls(stage, fault, level):
    """The outcome doc/starttls.html demands for a TLS case at tlsstrictness level.

    STARTTLS answered with other than 220 (a malformed reply included): 0 goes on in
    cleartext on the same connection with stock's K; 1 leaves the address and sends in
    cleartext in pass 2 (a second connection), noting it; 2 is a Z naming the reply.
    A drop or an overlong reply there is a failure before TLS: stock's Z at every level.
    A failed handshake: 0 reconnects in cleartext noting why; 1 as a refusal; 2 a Z
    naming why. Inside TLS the plaintext rules hold, and a K says how it travelled.
    """
    if stage == "starttls":
        if fault in CONNECTION_FAULTS or fault in ("longline", "continuations"):
            return Expected("", "Z", b"but connection died." if fault in CONNECTION_FAULTS else
                            b"but its reply was too long", sessions=1)
        if fault == "nul8bit":  # still a 220: TLS goes ahead
            return Expected("rr", "K", over_tls(level), sessions=1, tls=True)
        if level == 0:
            return Expected("rr", "K", b"accepted message.\n", without=PLAIN_K_WITHOUT, sessions=1, tls=False)
        if level == 1:
            return Expected("rr", "K", NO_TLS_NOTE, sessions=2, tls=False)
        return Expected("", "Z", TLS_REQUIRED + b"STARTTLS refused: ", sessions=1)
    if stage == "handshake":
        why = HANDSHAKE_WHY[fault]
        if level == 0:
            return Expected("rr", "K", HANDSHAKE_NOTE + why, sessions=2, tls=False)
        if level == 1:
            return Expected("rr", "K", NO_TLS_NOTE, sessions=2, tls=False)
        return Expected("", "Z", TLS_REQUIRED + why, sessions=1)
    plain = expected("ehlo" if stage == "ehlo_tls" else stage, fault)
    if plain.letter == "K":
        return Expected(plain.recipients, "K", over_tls(level), sessions=1, tls=True)
    plain.sessions, plain.tls = 1, True
    return plain


@functools.lru_cache(maxsize=None)  # the 700 KB of continuations are made once, not per session
def faulty_reply(normal, fault):
    """The bytes a reply fault sends instead of the normal reply."""
    code = normal[:3]
    if fault == "garbage":
        return GARBAGE
    if fault == "nul8bit":
        return normal[:4] + NUL_8BIT + normal[4:]
    if fault in MALFORMED:
        return MALFORMED[fault]
    if fault == "wrong_class":
        return b"250 odd\r\n" if code == b"354" else b"354 odd\r\n"
    if fault == "temp":
        return TEMP
    if fault == "perm":
        return PERM
    if fault == "continuations":
        return (code + b"-x\r\n") * CONTINUATIONS + code + b" end\r\n"
    raise ValueError(fault)


# --- the server ---

class Session:
    def __init__(self):
        self.commands = []
        self.final_replied = None  # the bytes sent in reply to the final dot
        self.conn = None
        self.tls = False  # True once the handshake is done
        self.done = threading.Event()

    @property
    def accepted(self):
        """Whether this server said a well-formed 2xx to the final dot (the only ground for a K)."""
        reply = self.final_replied or b""
        return reply[:1] == b"2" and reply[1:3].isdigit() and reply[3:4] in (b" ", b"-", b"\r")


class _End(Exception):
    """The session is over (fault done or client gone)."""


class FaultServer(Stoppable):
    """Serves every connection with the current fault: .fault = (stage, fault) or None."""

    LIMIT = 120  # seconds: no server thread outlives a lost client by more

    def __init__(self, fault=None, host="127.0.0.1", patience=LIMIT, mode="pipelined", tls=None, once=False,
                 sequence=()):
        """patience: seconds a stall or slow fault lasts at most. Set it above the client's
        timeout when the server lives long: a client that gave up while its writes were
        blocked cannot be seen to leave (its unsent bytes wait behind our closed window).
        mode: one of MODES, what EHLO offers.
        tls: (certfile, keyfile): offer STARTTLS with that certificate (.tls_offered can
        turn the offer off and on). once: the fault strikes the next connection only and
        is then spent (.fault becomes None): a cleartext retry after a failed handshake
        meets a well-behaved server. sequence: faults (or None) for the first connections,
        one each, before .fault applies."""
        self.fault = fault
        self.sequence = list(sequence)
        self.mode = mode
        self.once = once
        self.context = None
        if tls is not None:
            import ssl
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(*tls)
        self.tls_offered = tls is not None
        self.host = host
        self.patience = patience
        self.listener = listening(host)
        if fault and fault[0] == "body_early":  # inherited by accepted sockets, before the SYN comes
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, EARLY_RCVBUF)
            self.listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, EARLY_MSS)
        self.port = self.listener.getsockname()[1]
        self.sessions = []
        self.stopping = False
        self._refusing = self._full = None
        self._fillers = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def address_for(self, fault=None):
        """(host, port) the client must be routed to for this fault."""
        stage, kind = fault or self.fault or (None, None)
        if stage == "connect" and kind == "reset":
            return self.refusing()
        if stage == "connect" and kind == "stall":
            return self.never_accepting()
        return self.host, self.port

    def refusing(self):
        """A port bound but not listening: a SYN gets RST (connection refused)."""
        if self._refusing is None:
            self._refusing = socket.socket()
            self._refusing.bind((self.host, 0))
        return self.host, self._refusing.getsockname()[1]

    def never_accepting(self):
        """A listener whose accept queue is full: SYNs are dropped, connect() times out."""
        if self._full is None:
            self._full = socket.socket()
            self._full.bind((self.host, 0))
            self._full.listen(0)
            for _ in range(8):
                filler = socket.socket()
                filler.settimeout(0.3)
                self._fillers.append(filler)
                try:
                    filler.connect(self._full.getsockname())
                except OSError:
                    break  # this one was not let in: the queue is full
        return self.host, self._full.getsockname()[1]

    def wait_done(self, timeout=5):
        """Whether every session so far has ended within timeout seconds."""
        deadline = time.monotonic() + timeout
        for session in list(self.sessions):
            if not session.done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def stop(self):
        """Close the listeners and every connection still open (ends stalled sessions)."""
        self.stopping = True
        for session in self.sessions:
            if session.conn is not None and not session.done.is_set():
                try:
                    session.conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        close_quietly(self.listener, self._refusing, self._full, *self._fillers)

    def _accept(self):
        accept_each(self, self.listener, self._start_session)

    def _start_session(self, conn, _peer):
        session = Session()
        session.conn = conn
        fault = self.fault
        if self.sequence:
            fault = self.sequence.pop(0)
        elif self.once:
            self.fault = None  # spent: the next connection is served well
        self.sessions.append(session)
        threading.Thread(target=self._serve, args=(conn, session, fault, self.mode), daemon=True).start()

    # --- one session ---
    def _serve(self, conn, session, fault, mode):
        stage_of_fault, kind = fault or (None, None)
        buffer = bytearray()
        deadline = time.monotonic() + min(self.LIMIT, self.patience)
        offer_tls = self.context is not None and self.tls_offered
        try:
            conn.settimeout(min(self.LIMIT, self.patience))
            self._reply(conn, "greeting", stage_of_fault, kind, deadline)
            recipients = 0
            while True:
                line = self._line(conn, buffer)
                session.commands.append(bytes(line))
                verb = bytes(line[:4]).upper()
                if verb == b"EHLO" and mode == "helo":
                    conn.sendall(b"500 EHLO? never heard of it\r\n")
                elif verb in (b"EHLO", b"HELO"):
                    normal = (b"250 fault.test\r\n" if verb == b"HELO" else
                              NORMAL["ehlo"] if mode == "pipelined" else EHLO_WITHOUT_PIPELINING)
                    if offer_tls and not session.tls and verb == b"EHLO":
                        last = normal.rindex(b"250 ")
                        normal = normal[:last] + OFFER_STARTTLS + normal[last:]
                    self._reply(conn, "ehlo_tls" if session.tls else "ehlo", stage_of_fault, kind, deadline,
                                normal=normal)
                elif verb == b"STAR" and offer_tls and not session.tls:
                    conn = self._starttls(conn, session, buffer, stage_of_fault, kind, deadline)
                elif verb == b"MAIL":
                    self._reply(conn, "mail", stage_of_fault, kind, deadline)
                elif verb == b"RCPT":
                    recipients += 1
                    self._reply(conn, "rcpt%d" % min(recipients, 2), stage_of_fault, kind, deadline)
                elif verb == b"DATA":
                    sent = self._reply(conn, "data", stage_of_fault, kind, deadline)
                    if sent[:1] not in (b"2", b"3"):  # a wrong-class 250 still takes the message
                        continue
                    early = stage_of_fault == "body_early"
                    self._body(conn, buffer, stage_of_fault in ("body", "body_early") and kind, deadline,
                               BODY_EARLY_READ if early else BODY_READ_BEFORE_FAULT)
                    self._reply(conn, "final", stage_of_fault, kind, deadline, session=session)
                elif verb == b"QUIT":
                    if (stage_of_fault, kind) == ("quit", "hold"):
                        self._hold(deadline)
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n" if verb in (b"RSET", b"NOOP") else b"502 no\r\n")
        except (_End, OSError):
            pass
        finally:
            try:
                session.conn.close()
            except OSError:
                pass
            session.done.set()

    def _starttls(self, conn, session, buffer, stage_of_fault, kind, deadline):
        """Answer STARTTLS (or its fault); after a 220, the handshake (or its fault).
        The connection to go on with: the TLS socket, or conn after a refusal."""
        if stage_of_fault == "handshake" and kind == "inject":
            conn.sendall(NORMAL["starttls"] + INJECTED)  # one write: one segment on loopback
            self._wait_gone(conn, deadline)
        sent = self._reply(conn, "starttls", stage_of_fault, kind, deadline)
        if sent[:3] != b"220":
            return conn  # refused: the session goes on in cleartext
        if stage_of_fault == "handshake":
            self._handshake_fault(conn, kind, deadline)
        tls = self.context.wrap_socket(conn, server_side=True)  # conn is detached: the TLS socket owns the fd
        session.conn, session.tls = tls, True
        buffer.clear()  # nothing sent before the handshake counts (RFC 3207)
        return tls

    def _handshake_fault(self, conn, kind, deadline):
        """A fault in place of the server's side of the handshake, once the ClientHello came."""
        import ssl
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        engine = self.context.wrap_bio(incoming, outgoing, server_side=True)
        flight = b""
        while not flight:  # the whole ClientHello: our first flight is the answer to it
            data = conn.recv(65536)
            if not data:
                raise _End()
            incoming.write(data)
            try:
                engine.do_handshake()
            except ssl.SSLWantReadError:
                flight = outgoing.read()
            except ssl.SSLError:
                raise _End() from None
        if kind == "garbage":
            conn.sendall(HANDSHAKE_GARBAGE)
            self._wait_gone(conn, deadline)
        if kind == "slow":
            for byte in flight:
                conn.sendall(bytes((byte,)))
                if self._gone(conn, 1.0) or time.monotonic() > deadline:
                    break
            raise _End()
        self._connection_fault(conn, kind, deadline)

    def _hold(self, deadline):
        """Keep the connection open, reading nothing and blind to the client's close (not in the matrix:
        the hygiene test's server that never lets go), until the deadline or stop()."""
        while time.monotonic() < deadline and not self.stopping:
            time.sleep(0.05)
        raise _End()

    def _wait_gone(self, conn, deadline):
        """Read and drop whatever comes until the client closes; then _End."""
        while time.monotonic() < deadline and conn.recv(65536):
            pass
        raise _End()

    def _reply(self, conn, stage, stage_of_fault, kind, deadline, normal=None, session=None):
        """Send the stage's reply, or its fault; the bytes sent, or _End.

        session: for the final dot, where the reply is noted before it leaves (the
        client may report and exit before sendall() returns here).
        """
        normal = normal or NORMAL[stage]
        if session is not None:
            session.final_replied = b""
        if stage != stage_of_fault:
            if session is not None:
                session.final_replied = normal
            conn.sendall(normal)
            return normal
        if kind in CONNECTION_FAULTS:
            self._connection_fault(conn, kind, deadline, normal)
        if kind == "longline":
            conn.sendall(normal[:4])
            for _ in range(LONG_LINE // len(_LONG_CHUNK)):
                conn.sendall(_LONG_CHUNK)
            raise _End()
        reply = faulty_reply(normal, kind)
        if session is not None:
            session.final_replied = reply
        conn.sendall(reply)
        return reply

    def _connection_fault(self, conn, kind, deadline, normal=b""):
        if kind == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif kind == "stall":
            while time.monotonic() < deadline and conn.recv(65536):
                pass
        elif kind == "slow":
            if normal:
                for byte in normal:
                    conn.sendall(bytes((byte,)))
                    if self._gone(conn, 1.0) or time.monotonic() > deadline:
                        break
            else:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                while time.monotonic() < deadline and conn.recv(1):
                    self._gone(conn, 1.0)
        raise _End()

    def _gone(self, conn, seconds):
        """Wait up to seconds; whether the client has closed (or the server is stopping)."""
        import select
        poller = select.poll()
        poller.register(conn, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(seconds * 1000)) or self.stopping

    def _stop_reading(self, conn, deadline):
        """Read nothing more (the client's writes block) until the client is gone."""
        while time.monotonic() < deadline and not self._gone(conn, 0.2):
            pass
        raise _End()

    def _line(self, conn, buffer):
        while b"\n" not in buffer:
            data = conn.recv(65536)
            if not data:
                raise _End()
            buffer += data
        end = buffer.index(b"\n")
        line = buffer[:end].rstrip(b"\r")
        del buffer[:end + 1]
        return line

    def _body(self, conn, buffer, fault, deadline, read_before=BODY_READ_BEFORE_FAULT):
        """Read the message up to its terminator; a body fault strikes after read_before bytes of it."""
        seen = 0
        buffer[0:0] = b"\r\n"  # the DATA line's end: so an empty message ends at its first "\r\n.\r\n"
        while True:
            end = buffer.find(b"\r\n.\r\n")
            if end >= 0:
                del buffer[:end + 5]
                return
            if fault and seen >= read_before:
                if fault == "stall":
                    self._stop_reading(conn, deadline)
                self._connection_fault(conn, fault, deadline)
            seen += max(0, len(buffer) - 4)
            del buffer[:-4]
            data = conn.recv(65536)
            if not data:
                raise _End()
            buffer += data


# --- running the chain, measured ---

class Run:
    __slots__ = ("output", "status", "elapsed", "maxrss_kb")

    def __init__(self, output, status, elapsed, maxrss_kb):
        self.output, self.status, self.elapsed, self.maxrss_kb = output, status, elapsed, maxrss_kb


# The launcher forks the chain and reports the chain's peak RSS on the fd given in argv[1].
# It exists because a process forked from the (large) test process starts with the
# test's resident pages counted in its high-water mark, which Linux carries across
# exec: ru_maxrss of a direct child would measure pytest, not the chain.
# It also adopts the chain's orphans (PR_SET_CHILD_SUBREAPER): tlsc-io's relay, forked
# twice, becomes its child, so the relay's peak counts too and the launcher (and with it
# the delivery) ends only when the relay has ended.
_LAUNCHER = """
import os, sys
report = int(sys.argv[1])
try:
    import ctypes
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
except Exception:
    pass
pid = os.fork()
if pid == 0:
    os.close(report)
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
peak = usage.ru_maxrss
while True:
    try:
        _, _, usage = os.wait4(-1, 0)
    except ChildProcessError:
        break
    peak = max(peak, usage.ru_maxrss)
os.write(report, b"%d" % peak)
os._exit(os.waitstatus_to_exitcode(status) & 255)
"""


def run_chain(home, host, sender, recipients, message_path, limit=120):
    """Run qmail-remote from home's bin; its output, exit status, wall time and peak RSS.

    The peak RSS (KiB) is the high-water mark over the programs of the chain (Linux
    keeps it across exec), anything they reaped, and tlsc-io's relay. The wall time
    ends when the relay has ended too. The chain runs in a session of its own so a
    watchdog can kill all of it.
    """
    import subprocess
    import sys

    argv = [os.path.join(home.bindir, "qmail-remote"), host, sender] + list(recipients)
    started = time.monotonic()
    measure_r, measure_w = os.pipe()
    try:
        with open(message_path, "rb") as fd0:
            proc = subprocess.Popen([sys.executable, "-IS", "-c", _LAUNCHER, str(measure_w)] + argv,
                                    stdin=fd0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=home.env(), start_new_session=True, pass_fds=(measure_w,))
    finally:
        os.close(measure_w)
    watchdog = threading.Timer(limit, _kill_group, (proc.pid,))
    watchdog.start()
    try:
        output = proc.stdout.read()
        proc.stdout.close()
        status = proc.wait()
    finally:
        watchdog.cancel()
    with os.fdopen(measure_r, "rb") as measured:
        maxrss = int(measured.read() or 0)
    return Run(output, status, time.monotonic() - started, maxrss)


def _kill_group(pid):
    try:
        os.killpg(pid, 9)
    except OSError:
        pass
