"""
The client side of WebSocket (RFC 6455), in memory, for driving a server
protocol over a L{StringTransport}: the opening handshake, masked client
frames, and parsing of the server's unmasked frames.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import attr
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

#: RFC 6455, section 1.3: appended to the key to compute the accept value.
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

#: A fixed key and mask: tests are reproducible, and the server must not
#: care what they are.
DEFAULT_KEY = base64.b64encode(b"bugzfeed-test-16").decode("ascii")
DEFAULT_MASK = b"\x37\xfa\x21\x3d"


def acceptFor(key: str) -> str:
    """
    @return: The C{Sec-WebSocket-Accept} a server must answer C{key} with.
    """
    digest = hashlib.sha1(key.encode("ascii") + WEBSOCKET_GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def handshakeRequest(
    path: str,
    key: str = DEFAULT_KEY,
    host: str = "localhost",
    origin: str = "http://localhost",
    extra: Sequence[str] = (),
) -> bytes:
    """
    @return: The HTTP upgrade request a browser sends to open a WebSocket
        at C{path}, with C{extra} header lines.
    """
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        f"Origin: {origin}",
        *extra,
        "",
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class HandshakeResponse:
    """
    A server's answer to L{handshakeRequest}.

    @ivar status: The HTTP status code.
    @ivar headers: The headers, names lower-cased.
    @ivar body: Whatever followed the blank line (an error page, or the
        first WebSocket frames).
    """

    status: int
    headers: Dict[str, str]
    body: bytes


def parseHandshakeResponse(data: bytes) -> Optional[HandshakeResponse]:
    """
    @return: The response at the start of C{data}, or L{None} if its head is
        not complete yet.
    """
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return None
    statusLine, *headerLines = head.decode("iso-8859-1").split("\r\n")
    _, status, _ = statusLine.split(" ", 2)
    headers = {}
    for line in headerLines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HandshakeResponse(int(status), headers, body)


def clientFrame(
    opcode: int, payload: bytes = b"", mask: bytes = DEFAULT_MASK, fin: bool = True
) -> bytes:
    """
    Encode one frame as a client must send it: masked.
    """
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 2**16:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return header + mask + masked


def closePayload(code: int, reason: str = "") -> bytes:
    """
    @return: The payload of a close frame with C{code} and C{reason}.
    """
    return struct.pack("!H", code) + reason.encode("utf-8")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ServerFrame:
    """
    One frame as the server sent it.
    """

    opcode: int
    payload: bytes
    fin: bool = True

    def json(self) -> Any:
        """
        @return: The payload of a text frame, decoded as JSON.
        """
        if self.opcode != TEXT:
            raise ValueError(f"not a text frame: {self!r}")
        return json.loads(self.payload)

    @property
    def closeCode(self) -> Optional[int]:
        """The status code of a close frame, or L{None} if it has none."""
        if self.opcode != CLOSE:
            raise ValueError(f"not a close frame: {self!r}")
        if len(self.payload) < 2:
            return None
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code


class MaskedServerFrame(Exception):
    """
    The server masked a frame, which RFC 6455 forbids.
    """


def parseServerFrames(data: bytes) -> Tuple[List[ServerFrame], bytes]:
    """
    Split C{data} into the complete frames it starts with.

    @return: The frames, and the bytes of any incomplete frame after them.
    @raise MaskedServerFrame: If a frame is masked.
    """
    frames = []
    while len(data) >= 2:
        first, second = data[0], data[1]
        if second & 0x80:
            raise MaskedServerFrame(data[:14])
        length = second & 0x7F
        offset = 2
        if length == 126:
            if len(data) < 4:
                break
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            if len(data) < 10:
                break
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        if len(data) < offset + length:
            break
        frames.append(ServerFrame(first & 0x0F, data[offset : offset + length], bool(first & 0x80)))
        data = data[offset + length :]
    return frames, data


class TCPLikeStringTransport(StringTransport):
    """
    A L{StringTransport} that, like a real TCP transport
    (L{twisted.internet.abstract.FileDescriptor}), lets a protocol
    unregister a producer it never registered: Autobahn does so whenever it
    drops a connection.
    """

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


class InMemoryWebSocketClient:
    """
    One client connection to a server protocol built by a factory, over a
    L{StringTransport}.

    Like a real reactor, it tells the server protocol its connection is lost
    (L{IProtocol.connectionLost}) once the server asked the transport to
    close: see L{deliverDisconnect}.

    @ivar protocol: The server protocol.
    @ivar transport: Its transport; C{transport.value()} is what the server
        wrote and the client has not read yet.
    @ivar response: The handshake response, once read.
    """

    def __init__(self, factory: IProtocolFactory) -> None:
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        self.protocol: IProtocol = protocol
        self.transport = TCPLikeStringTransport()
        self.response: Optional[HandshakeResponse] = None
        self.lost: Optional[Failure] = None
        self._unread = b""
        self.protocol.makeConnection(self.transport)

    def open(
        self,
        path: str,
        key: str = DEFAULT_KEY,
        origin: str = "http://localhost",
        extra: Sequence[str] = (),
    ) -> HandshakeResponse:
        """
        Send the opening handshake for C{path} and read the response.

        @raise AssertionError: If the server sent no complete response.
        """
        self.send(handshakeRequest(path, key, origin=origin, extra=extra))
        data = self._take()
        response = parseHandshakeResponse(data)
        if response is None:
            raise AssertionError(f"no complete handshake response in {data!r}")
        self.response = response
        if response.status == 101:
            self._unread = response.body
        return response

    def send(self, data: bytes) -> None:
        """
        Deliver raw bytes to the server, then any disconnection it asked for.
        """
        self.protocol.dataReceived(data)
        self.deliverDisconnect()

    def sendFrame(self, opcode: int, payload: bytes = b"", fin: bool = True) -> None:
        """
        Send one masked frame.
        """
        self.send(clientFrame(opcode, payload, fin=fin))

    def sendText(self, text: str) -> None:
        """
        Send a text message.
        """
        self.sendFrame(TEXT, text.encode("utf-8"))

    def sendJSON(self, message: Any) -> None:
        """
        Send C{message} as a JSON text message.
        """
        self.sendText(json.dumps(message))

    def sendClose(self, code: int = 1000, reason: str = "") -> None:
        """
        Start (or answer) the closing handshake.
        """
        self.sendFrame(CLOSE, closePayload(code, reason))

    def receive(self) -> List[ServerFrame]:
        """
        @return: The complete frames the server sent since the last call.
        """
        frames, self._unread = parseServerFrames(self._unread + self._take())
        return frames

    def receiveJSON(self) -> List[Any]:
        """
        @return: The text messages the server sent since the last call,
            decoded.

        @raise ValueError: If it sent anything but text frames.
        """
        return [frame.json() for frame in self.receive()]

    def deliverDisconnect(self) -> None:
        """
        If the server asked its transport to close, tell the protocol the
        connection is gone, as a reactor would after flushing.
        """
        if self.transport.disconnecting and self.lost is None:
            self.connectionLost()

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        """
        Tell the protocol the TCP connection is gone, without any closing
        handshake.
        """
        if self.lost is not None:
            return
        self.lost = reason if reason is not None else Failure(ConnectionDone())
        self.transport.connected = False
        self.protocol.connectionLost(self.lost)

    @property
    def disconnected(self) -> bool:
        """Whether the connection is gone."""
        return self.lost is not None

    def _take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data
