"""
The WebSocket side: an Autobahn protocol per client connection, and the
factory that routes each connection to the feed at its path.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from bugzfeed.feed import Feed
from bugzfeed.messages import answer, errorReply
from bugzfeed.subscriptions import ISubscriber


def normalizePath(path: str) -> str:
    """
    @return: C{path} with exactly one leading and one trailing slash, so that
        C{/dev} and C{/dev/} name the same feed.
    """
    return "/" + "".join(part + "/" for part in path.split("/") if part)


@implementer(ISubscriber)
class FeedServerProtocol(WebSocketServerProtocol):
    """
    One client connection: decode, delegate to L{answer}, encode.
    """

    # Autobahn owns .log
    _log = Logger()
    feed: Optional[Feed] = None
    # Set by Autobahn from the factory's protocol options.
    maxMessagePayloadSize: int

    def onConnect(self, request: ConnectionRequest) -> None:
        feed = self.factory.feedAt(request.path)
        if feed is None:
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, "no feed at this path")
        self.feed = feed
        self.factory.connectionOpened(self)
        return None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.feed is None:  # Autobahn delivers messages only after onConnect.
            return
        try:
            frames = answer(payload, isBinary, self, self.feed)
        except Exception:
            self._log.failure("Answering {peer} failed", peer=self.peer)
            frames = [errorReply(None, "internal error")]
        for frame in frames:
            self._sendToClient(frame)

    def sendUpdate(self, payload: bytes) -> None:
        self._sendToClient(payload)

    def _sendToClient(self, payload: bytes) -> None:
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        # Autobahn holds outgoing messages to the incoming size limit too;
        # that limit is for what clients send, not for our replies (a
        # subscribe reply lists every bug held).
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            self.sendMessage(payload)
        finally:
            self.maxMessagePayloadSize = limit

    def goAway(self, reason: str = "server shutting down") -> None:
        """
        Tell the client the server is going (close code 1001, which
        Autobahn's C{sendClose} refuses to send), with C{reason}.
        """
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendCloseFrame(code=1001, reasonUtf8=reason.encode("utf-8"), isReply=False)
        else:
            self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if self.feed is not None:
            self.feed.registry.unsubscribeAll(self)
        self.factory.connectionClosed(self)


class ReactorTimer:
    """
    Autobahn's timer interface (C{call_later} returning something with
    C{cancel}) on a given reactor.

    Autobahn's own batched timer schedules on txaio's global loop whatever
    reactor the factory is given; handshake timeouts and pings must follow
    the injected one, so that tests can drive them with a clock.
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor

    def call_later(
        self, delay: float, function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> "_TimerCall":
        return _TimerCall(self._reactor.callLater(delay, function, *args, **kwargs))


class _TimerCall:
    def __init__(self, call: IDelayedCall) -> None:
        self._call = call

    def cancel(self) -> None:
        # Autobahn may cancel a call that has already run.
        if self._call.active():
            self._call.cancel()


class FeedServerFactory(WebSocketServerFactory):
    """
    Serves every feed, each at its own path.
    """

    protocol = FeedServerProtocol
    _log = Logger()

    def __init__(self, feeds: Iterable[Feed], reactor: IReactorTime) -> None:
        super().__init__(reactor=reactor)
        self.feeds: Mapping[str, Feed] = {normalizePath(feed.path): feed for feed in feeds}

        self._reactor = reactor
        self._batched_timer = ReactorTimer(reactor)
        self._connections: Dict[FeedServerProtocol, List[Deferred]] = {}

    def feedAt(self, path: str) -> Optional[Feed]:
        """
        @return: The feed served at C{path}, or L{None}.
        """
        return self.feeds.get(normalizePath(path))

    def connectionOpened(self, protocol: FeedServerProtocol) -> None:
        """
        Track C{protocol} until it closes, so that shutdown can close it.
        """
        self._connections[protocol] = []

    def connectionClosed(self, protocol: FeedServerProtocol) -> None:
        """
        C{protocol} is gone.
        """
        for d in self._connections.pop(protocol, ()):
            d.callback(None)

    @property
    def connectionCount(self) -> int:
        """The number of open client connections."""
        return len(self._connections)

    def closeAll(
        self, timeout: float, reason: Callable[[], str] = lambda: "server shutting down"
    ) -> Deferred:
        """
        Ask every client to go (close code 1001, each with a C{reason()} of
        its own) and drop those still there after C{timeout} seconds.

        @return: A L{Deferred} that fires once every connection is gone.
        """
        waiting = []
        for protocol, waiters in list(self._connections.items()):
            d: Deferred = Deferred()
            waiters.append(d)
            waiting.append(d)
            protocol.goAway(reason())
        if not waiting:
            return succeed(None)
        startedAt = self._reactor.seconds()
        self._log.info("Told {count} clients the server is going (1001)", count=len(waiting))
        drop = self._reactor.callLater(timeout, self._dropAll)
        done = gatherResults(waiting)

        def report(_: Any) -> None:
            self._log.info(
                "All {count} clients gone after {seconds:.1f}s",
                count=len(waiting),
                seconds=self._reactor.seconds() - startedAt,
            )
            if drop.active():
                drop.cancel()

        done.addBoth(report)
        return done

    def _dropAll(self) -> None:
        self._log.info(
            "Dropping {count} clients that did not close in time", count=len(self._connections)
        )
        for protocol in list(self._connections):
            protocol.dropConnection(abort=True)


def makeFactory(
    feeds: Iterable[Feed],
    reactor: IReactorTime,
    pingInterval: float,
    pingTimeout: float,
    handshakeTimeout: float,
    maxMessageSize: int,
) -> FeedServerFactory:
    """
    Build the factory with keep-alive, handshake timeout and message size
    limit switched on.
    """
    factory = FeedServerFactory(feeds, reactor)
    factory.setProtocolOptions(
        autoPingInterval=pingInterval,
        autoPingTimeout=pingTimeout,
        openHandshakeTimeout=handshakeTimeout,
        maxMessagePayloadSize=maxMessageSize,
        maxFramePayloadSize=maxMessageSize,
        # Tell an offender why (close 1009 and friends) instead of dropping
        # the TCP connection silently.
        failByDrop=False,
        # Only a pong proves the client reads: a client that sends but never
        # reads must still time out.
        autoPingRestartOnAnyTraffic=False,
    )
    return factory
