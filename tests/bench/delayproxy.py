"""A loopback TCP proxy that delays everything the SERVER sends by a fixed time.

It is a delay line, not a throttle: each chunk read from the server is forwarded to
the client DELAY seconds after it arrived, and many chunks can be in flight at once,
so replies the server sent together (pipelined) reach the client together, one
DELAY later. Bytes from the client to the server pass at once. A client that waits
for every reply therefore pays DELAY per reply; one that pipelines pays DELAY per
batch.

`bursts` counts the server's reply bursts: a chunk that arrives while nothing is in
flight starts a new one. It is the number of delays the client could have waited for.

  python3 tests/bench/delayproxy.py [--listen PORT] [--delay SECONDS] SERVERHOST:PORT
"""

import collections
import socket
import sys
import threading
import time

if __name__ == "__main__":  # run as a script: make tests.support importable
    import os
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.support import net  # noqa: E402


class DelayProxy(net.Stoppable):
    def __init__(self, server_port, delay, server_host="127.0.0.1", listen_host="127.0.0.1", listen_port=0):
        self.server = (server_host, server_port)
        self.delay = delay
        self.bursts = 0
        self.lock = threading.Lock()
        self.listener = net.listening(listen_host, listen_port)
        self.port = self.listener.getsockname()[1]
        self.stopping = False
        threading.Thread(target=net.accept_each, args=(self, self.listener, self._proxy), daemon=True).start()

    def stop(self):
        self.stopping = True
        net.close_quietly(self.listener)

    def _proxy(self, client, peer):
        try:
            server = socket.create_connection(self.server, timeout=10)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _Connection(self, client, server).start()


class _Connection:
    """One proxied connection: three threads (client->server at once; server->queue;
    queue->client when due)."""

    def __init__(self, proxy, client, server):
        self.proxy, self.client, self.server = proxy, client, server
        self.queue = collections.deque()  # (due time, bytes, or None for the server's EOF)
        self.ready = threading.Condition()
        self.in_flight = 0
        self.open_halves = 2

    def start(self):
        for target in (self._upstream, self._from_server, self._to_client):
            threading.Thread(target=target, daemon=True).start()

    def _half_closed(self):
        with self.ready:
            self.open_halves -= 1
            last = self.open_halves == 0
        if last:
            self.client.close()
            self.server.close()

    def _upstream(self):
        try:
            while True:
                data = self.client.recv(65536)
                if not data:
                    break
                self.server.sendall(data)
        except OSError:
            pass
        try:
            self.server.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._half_closed()

    def _from_server(self):
        while True:
            try:
                data = self.server.recv(65536)
            except OSError:
                data = b""
            due = time.monotonic() + self.proxy.delay
            with self.ready:
                if self.in_flight == 0:
                    with self.proxy.lock:
                        self.proxy.bursts += 1
                self.in_flight += 1
                self.queue.append((due, data or None))
                self.ready.notify()
            if not data:
                return

    def _to_client(self):
        try:
            while True:
                with self.ready:
                    while True:
                        now = time.monotonic()
                        if self.queue and self.queue[0][0] <= now:
                            break
                        self.ready.wait(self.queue[0][0] - now if self.queue else None)
                    # everything due within the next millisecond leaves in one write
                    batch = []
                    while self.queue and self.queue[0][0] <= now + 0.001:
                        batch.append(self.queue.popleft()[1])
                    # no longer in flight before the client can see it: a reply to it must
                    # start a new burst, however late this thread gets the CPU back
                    self.in_flight -= len(batch)
                eof = None in batch
                data = b"".join(chunk for chunk in batch if chunk)
                if data:
                    self.client.sendall(data)
                if eof:
                    self.client.shutdown(socket.SHUT_WR)
                    break
        except OSError:
            pass
        self._half_closed()


def main(argv):
    listen, delay, rest = 0, 0.05, []
    args = iter(argv[1:])
    for arg in args:
        if arg == "--listen":
            listen = int(next(args))
        elif arg == "--delay":
            delay = float(next(args))
        else:
            rest.append(arg)
    if len(rest) != 1 or ":" not in rest[0]:
        sys.exit(__doc__.strip().split("\n")[-1])
    host, _, port = rest[0].rpartition(":")
    proxy = DelayProxy(int(port), delay, server_host=host, listen_port=listen)
    print("delayproxy: 127.0.0.1:%d -> %s:%s, server replies delayed %.3f s" % (proxy.port, host, port, delay))
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv)
