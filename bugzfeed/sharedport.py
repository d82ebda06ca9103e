"""
One listener for WebSockets and plain HTTP: each connection's first request
decides which protocol gets it.  A WebSocket upgrade goes to Autobahn with
every byte as received, so frames a client sends right behind its handshake
are kept; anything else goes to a twisted.web site.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import ProtocolWrapper

#: The most a request's head may take, in bytes, before it is refused.
MAX_HEAD = 16384

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)


def isUpgrade(head: bytes) -> bool:
    """
    @param head: A request's head: its request line and header lines.
    @return: Whether the request asks to become a WebSocket.
    """
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


class _Doorman(Protocol):
    """
    Reads a connection's first request head, then hands the connection,
    with everything read, to the protocol it is for.
    """

    # A TCP or TLS transport: which, decides how to hand it over.
    transport: Any

    def __init__(self, factory: "SharedPortFactory", addr: Any) -> None:
        self._factory = factory
        self._addr = addr
        self._received = b""
        self._timeout: Optional[IDelayedCall] = None
        self._chosen: Optional[IProtocol] = None

    def connectionMade(self) -> None:
        self._timeout = self._factory.clock.callLater(self._factory.timeout, self._tooSlow)

    def dataReceived(self, data: bytes) -> None:
        if self._chosen is not None:
            # Only for callers that kept hold of us; transports no longer do.
            self._chosen.dataReceived(data)
            return
        self._received += data
        end = self._received.find(b"\r\n\r\n")
        if end < 0:
            if len(self._received) > MAX_HEAD:
                self._cancelTimeout()
                self.transport.write(_TOO_LARGE)
                self.transport.loseConnection()
            return
        self._cancelTimeout()
        if isUpgrade(self._received[:end]):
            chosen = self._factory.websocket.buildProtocol(self._addr)
        else:
            chosen = self._factory.http.buildProtocol(self._addr)
        if chosen is None:
            self.transport.loseConnection()
            return
        transport = self.transport
        if isinstance(transport, ProtocolWrapper):  # TLS
            transport.wrappedProtocol = chosen
        else:
            transport.protocol = chosen
        self._chosen = chosen
        chosen.makeConnection(transport)
        chosen.dataReceived(self._received)

    def connectionLost(self, reason: Any = None) -> None:
        self._cancelTimeout()
        if self._chosen is not None:
            self._chosen.connectionLost(reason)

    def _tooSlow(self) -> None:
        self._timeout = None
        self.transport.abortConnection()

    def _cancelTimeout(self) -> None:
        if self._timeout is not None:
            if self._timeout.active():
                self._timeout.cancel()
            self._timeout = None


class SharedPortFactory(Factory):
    """
    @ivar websocket: The factory of the protocol for WebSocket upgrades.
    @ivar http: The factory of the protocol for everything else.
    @ivar timeout: Seconds a connection may take to send its first
        request's head.
    """

    noisy = False

    def __init__(self, websocket: Any, http: Any, clock: IReactorTime, timeout: float) -> None:
        self.websocket = websocket
        self.http = http
        self.clock = clock
        self.timeout = timeout

    def buildProtocol(self, addr: Any) -> _Doorman:
        return _Doorman(self, addr)

    def doStart(self) -> None:
        self.websocket.doStart()
        self.http.doStart()

    def doStop(self) -> None:
        self.websocket.doStop()
        self.http.doStop()
