"""
The load generator: many raw-socket WebSocket clients in one process, on
one epoll loop.

Autobahn or websockets clients would spend more CPU than the server under
test; these do the least a client can: an HTTP upgrade, masked text frames
with a zero mask key (legal, and no XOR to compute), and a frame parser that
only looks at what the benchmark needs (the command, bug and seq).

The harness runs several L{loadProcess}es and drives each over a pipe, one
command at a time (see L{LoadClients}).
"""

from __future__ import annotations

import errno
import json
import select
import socket
import time
from typing import Any, Dict, List, Optional, Tuple

CONNECTING, HANDSHAKE, OPEN = range(3)

#: Connections each process opens at once; the rest wait their turn.
CONNECT_WINDOW = 256

HANDSHAKE_TEMPLATE = (
    "GET {path} HTTP/1.1\r\n"
    "Host: 127.0.0.1:{port}\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


def clientFrame(payload: bytes, opcode: int = 0x1) -> bytes:
    """
    A final, masked client frame; the zero mask key leaves the payload as
    it is.
    """
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


def _intAfter(payload: bytes, key: bytes) -> int:
    start = payload.find(key)
    if start < 0:
        return -1
    start += len(key)
    end = start
    while end < len(payload) and 48 <= payload[end] <= 57:
        end += 1
    return int(payload[start:end]) if end > start else -1


class Connection:
    __slots__ = ("sock", "index", "state", "buffer", "subscribed", "closed")

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.index = index
        self.state = CONNECTING
        self.buffer = b""
        self.subscribed = False
        self.closed = False


class LoadClients:
    """
    A set of WebSocket client connections to one server, and what they
    received.
    """

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.path = path
        self.handshake = HANDSHAKE_TEMPLATE.format(path=path, port=port).encode("ascii")
        self.poller = select.epoll()
        self.byFd: Dict[int, Connection] = {}
        self.connections: List[Connection] = []
        self.bugs: List[List[int]] = []
        self.resume: Optional[Dict[str, Any]] = None
        self.replies = 0
        self.notRecovered = 0
        self.updates = 0
        self.errors = 0
        self.closedCount = 0
        self.firstUpdate = 0.0
        self.lastUpdate = 0.0
        self.record = False
        self.records: List[Tuple[int, int, float]] = []
        self._connecting = False
        self._subscribing = False
        self._doneCount = 0
        self.retries = 0

    # Connecting

    def _open(self, index: int) -> Connection:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        err = sock.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
        connection = Connection(sock, index)
        self.byFd[sock.fileno()] = connection
        self.poller.register(sock.fileno(), select.EPOLLOUT)
        return connection

    def connect(
        self, count: int, bugs: Optional[List[List[int]]], resume: Optional[Dict[str, Any]]
    ) -> float:
        """
        Open C{count} connections, at most L{CONNECT_WINDOW} in progress at
        once; once open, each subscribes to its bugs (if given; with the
        fields of C{resume} too, such as C{after}) and counts as done when
        the reply arrives.

        @return: Seconds taken.
        """
        start = time.monotonic()
        if bugs is not None:
            self.bugs = bugs
        self.resume = resume
        subscribing = self._subscribing = bugs is not None or resume is not None
        self.connections = []
        self._connecting = True
        nextIndex = 0
        done = 0
        self._doneCount = 0
        target = count
        while done < target:
            while nextIndex < count and nextIndex - done < CONNECT_WINDOW:
                self.connections.append(self._open(nextIndex))
                nextIndex += 1
            self._poll(1.0, subscribing)
            done = self._doneCount
            if time.monotonic() - start > 120:
                raise RuntimeError(f"connected only {done} of {count} in 120 s")
        self._connecting = False
        return time.monotonic() - start

    def subscribe(self, bugs: List[List[int]]) -> float:
        """
        Send every connection its subscribe command, all at once, and wait
        for every reply.

        @return: Seconds from the first send to the last reply.
        """
        self.bugs = bugs
        start = time.monotonic()
        self._doneCount = 0
        for connection in self.connections:
            self._sendSubscribe(connection)
        while self._doneCount < len(self.connections):
            self._poll(1.0, True)
            if time.monotonic() - start > 120:
                raise RuntimeError("subscribe replies missing after 120 s")
        return time.monotonic() - start

    def receive(self, expected: int, record: bool, idle: float, deadline: float) -> Dict[str, Any]:
        """
        Count updates until C{expected} arrived, or nothing arrived for
        C{idle} seconds after the first, or C{deadline} seconds passed.
        """
        self.updates = 0
        self.firstUpdate = self.lastUpdate = 0.0
        self.record = record
        self.records = []
        start = time.monotonic()
        while self.updates < expected:
            now = time.monotonic()
            if now - start > deadline:
                break
            if self.updates and now - self.lastUpdate > idle:
                break
            self._poll(0.2, False)
        return {
            "updates": self.updates,
            "first": self.firstUpdate,
            "last": self.lastUpdate,
            "records": self.records,
            "closed": self.closedCount,
        }

    def closeAll(self) -> None:
        for connection in self.connections:
            if not connection.closed:
                self.poller.unregister(connection.sock.fileno())
                self.byFd.pop(connection.sock.fileno(), None)
                connection.sock.close()
                connection.closed = True
        self.connections = []

    # The loop

    def _sendSubscribe(self, connection: Connection) -> None:
        request: Dict[str, Any] = {"command": "subscribe", "bugs": self.bugs[connection.index]}
        if self.resume is not None:
            request.update(self.resume)
        connection.sock.send(clientFrame(json.dumps(request).encode()))

    def _poll(self, timeout: float, subscribing: bool) -> None:
        for fd, events in self.poller.poll(timeout):
            connection = self.byFd.get(fd)
            if connection is None:
                continue
            if connection.state == CONNECTING:
                error = connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, "connect failed")
                connection.sock.send(self.handshake)
                connection.state = HANDSHAKE
                self.poller.modify(fd, select.EPOLLIN)
                continue
            try:
                data = connection.sock.recv(262144)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self._lost(connection)
                continue
            if connection.state == HANDSHAKE:
                data = connection.buffer + data
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    connection.buffer = data
                    continue
                if b" 101 " not in data[: data.find(b"\r\n")]:
                    raise RuntimeError(f"upgrade refused: {data[:200]!r}")
                connection.state = OPEN
                connection.buffer = b""
                data = data[end + 4 :]
                if subscribing:
                    self._sendSubscribe(connection)
                else:
                    self._doneCount += 1
                if not data:
                    continue
            self._frames(connection, connection.buffer + data if connection.buffer else data)

    def _lost(self, connection: Connection) -> None:
        self.poller.unregister(connection.sock.fileno())
        self.byFd.pop(connection.sock.fileno(), None)
        connection.sock.close()
        connection.closed = True
        self.closedCount += 1
        counted = connection.state == OPEN and (connection.subscribed or not self._subscribing)
        if self._connecting and not counted:
            # Dropped before it was ready (a busy server times out slow
            # handshakes): open it again rather than wait for it forever.
            self.retries += 1
            if self.retries > 1000:
                raise RuntimeError("over 1000 connections dropped while connecting")
            self.connections[connection.index] = self._open(connection.index)

    def _frames(self, connection: Connection, data: bytes) -> None:
        now = time.monotonic()
        position = 0
        size = len(data)
        while size - position >= 2:
            first = data[position]
            length = data[position + 1] & 0x7F
            header = 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(data[position + 2 : position + 4], "big")
                header = 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(data[position + 2 : position + 10], "big")
                header = 10
            end = position + header + length
            if end > size:
                break
            opcode = first & 0x0F
            payload = data[position + header : end]
            position = end
            if opcode == 0x1:
                if payload.startswith(b'{"command":"update"'):
                    self.updates += 1
                    if not self.firstUpdate:
                        self.firstUpdate = now
                    self.lastUpdate = now
                    if self.record:
                        self.records.append(
                            (_intAfter(payload, b'"bug":'), _intAfter(payload, b'"seq":'), now)
                        )
                elif payload.startswith(b'{"command":"subscribe"'):
                    if b'"result":"ok"' in payload:
                        if b'"recovered":false' in payload:
                            self.notRecovered += 1
                        if not connection.subscribed:
                            connection.subscribed = True
                        self._doneCount += 1
                    else:
                        self.errors += 1
                        self._doneCount += 1
                else:
                    self.replies += 1
            elif opcode == 0x9:
                connection.sock.send(clientFrame(payload, 0xA))
            elif opcode == 0x8:
                self._lost(connection)
                return
        connection.buffer = data[position:]


def loadProcess(pipe: Any, port: int, path: str) -> None:
    """
    A client process: carry out the harness's commands one by one.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    clients = LoadClients(port, path)
    while True:
        command, args = pipe.recv()
        try:
            if command == "connect":
                result: Any = clients.connect(*args)
            elif command == "subscribe":
                result = clients.subscribe(*args)
            elif command == "receive":
                result = clients.receive(*args)
            elif command == "reconnect":
                clients.closeAll()
                result = clients.connect(*args)
            elif command == "errors":
                result = (clients.errors, clients.notRecovered)
            elif command == "close":
                clients.closeAll()
                pipe.send(("ok", None))
                return
            else:
                raise ValueError(command)
        except Exception as e:
            pipe.send(("error", f"{type(e).__name__}: {e}"))
        else:
            pipe.send(("ok", result))
