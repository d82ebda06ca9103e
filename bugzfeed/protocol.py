"""
The WebSocket side: an Autobahn protocol per client connection, and the
factory that routes each connection to the feed at its path.
"""

from __future__ import annotations

from collections import deque
from fnmatch import fnmatchcase
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    cast,
)

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bugzfeed.feed import Feed
from bugzfeed.limits import REPLAYED_UPDATES_PER_COMMAND, ClientLimits, RateLimiter
from bugzfeed.messages import TOO_MANY_COMMANDS, Answer, answer, commandOf, errorReply
from bugzfeed.model import BugUpdate
from bugzfeed.outbox import Outbox
from bugzfeed.subscriptions import ISubscriber
from bugzfeed.wire import FrameCache, writeNow

_DEFAULT_PORTS = {"http": "80", "https": "443"}


def normalizeOrigin(origin: str) -> str:
    """
    @return: C{origin} lower-cased, without a default port, so that
        C{https://Example.com:443} matches C{https://example.com}.
    """
    origin = origin.strip().lower().rstrip("/")
    scheme, _, rest = origin.partition("://")
    host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    if port and _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return origin


def normalizePath(path: str) -> str:
    """
    @return: C{path} with exactly one leading and one trailing slash, so that
        C{/dev} and C{/dev/} name the same feed.
    """
    return "/" + "".join(part + "/" for part in path.split("/") if part)


#: Close codes beyond RFC 6455's: the client read too slowly to keep up.
SLOW_CLIENT = 4001
#: Policy violation (RFC 6455): here, far too many commands.
POLICY_VIOLATION = 1008

#: Commands a client may queue behind a resume that waits for the node to
#: catch up with its stream.
MAX_QUEUED_COMMANDS = 100

#: Frames one message may come in.  The size limit counts payload bytes
#: only: without this, empty or one-byte fragments would grow a message's
#: bookkeeping without end.
MAX_FRAGMENTS = 256


@implementer(ISubscriber)
class FeedServerProtocol(WebSocketServerProtocol):
    """
    One client connection: decode, delegate to L{answer}, encode; updates go
    through an L{Outbox} that holds them while the client is not reading.
    """

    # Autobahn owns .log
    _log = Logger()
    feed: Optional[Feed] = None
    outbox: Optional[Outbox] = None
    _waitingAnswer: Optional[Deferred] = None
    # Set by Autobahn from the factory's protocol options.
    maxMessagePayloadSize: int

    def __init__(self) -> None:
        super().__init__()
        # Commands that came while a resume waited, in order.
        self._queued: Deque[Tuple[bytes, bool]] = deque()
        # Autobahn fires is_closed with the protocol itself, which the
        # Deferred would then hold: a reference cycle that keeps every
        # closed connection until Python's next full collection.
        self.is_closed.addCallback(lambda _: None)

    def onConnect(self, request: ConnectionRequest) -> None:
        feed = self.factory.feedAt(request.path)
        if feed is None:
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, "no feed at this path")
        if not self.factory.originAllowed(request.origin):
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")
        limits = self.factory.limits
        if limits.maxConnections and self.factory.connectionCount >= limits.maxConnections:
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "too many connections")
        self.feed = feed
        self._commands = RateLimiter(
            self.factory.clock, limits.commandsPerSecond, limits.commandBurst
        )
        self._refusedInARow = 0
        self.factory.connectionOpened(self)
        return None

    def onOpen(self) -> None:
        limits = self.factory.limits
        self.outbox = Outbox(
            self._sendUpdateFrame,
            self._tooSlow,
            self.factory.clock,
            limits.maxPending,
            limits.slowClientTimeout,
            # TCP and TLS transports produce what they read, and pause it.
            cast(IPushProducer, self.transport),
        )
        # The transport pauses the outbox once its write buffer is full; the
        # outbox then stops reading the client's commands and pings, whose
        # replies could only pile up behind.
        self.registerProducer(self.outbox, True)

    def onMessageBegin(self, isBinary: bool) -> None:
        super().onMessageBegin(isBinary)
        self._fragments = 0

    def onMessageFrameBegin(self, length: int) -> None:
        super().onMessageFrameBegin(length)
        self._fragments += 1
        if self._fragments > MAX_FRAGMENTS and not self.failedByMe:
            self._fail_connection(
                WebSocketServerProtocol.CLOSE_STATUS_CODE_MESSAGE_TOO_BIG,
                f"message in more than {MAX_FRAGMENTS} fragments",
            )

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # Autobahn delivers messages only after onConnect, and still while
        # a close we sent is on its way.
        if self.feed is None or self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        limits = self.factory.limits
        if not self._commands.allow():
            self._refusedInARow += 1
            if self._refusedInARow > limits.commandsPerSecond:
                self._closeWith(POLICY_VIOLATION, "too many commands")
            else:
                limit = limits.commandsPerSecond
                refused = commandOf(payload, isBinary)
                self._sendToClient(errorReply(refused, TOO_MANY_COMMANDS.format(limit=limit)))
            return
        self._refusedInARow = 0
        if self._waitingAnswer is not None:
            if len(self._queued) >= MAX_QUEUED_COMMANDS:
                self._closeWith(POLICY_VIOLATION, "too many commands while a resume waits")
            else:
                self._queued.append((payload, isBinary))
            return
        self._carryOut(payload, isBinary)

    def _carryOut(self, payload: bytes, isBinary: bool) -> None:
        assert self.feed is not None
        try:
            result = answer(payload, isBinary, self, self.feed, self.factory.limits)
        except Exception:
            self._log.failure("Answering {peer} failed", peer=self.peer)
            result = Answer(errorReply(None, "internal error"))
        if isinstance(result, Deferred):
            self._waitingAnswer = result
            result.addCallback(self._answered)
            result.addErrback(self._answerFailed)
        else:
            self._deliverAnswer(result)

    def _answered(self, result: Answer) -> None:
        self._waitingAnswer = None
        self._deliverAnswer(result)
        while self._queued and self._waitingAnswer is None:
            self._carryOut(*self._queued.popleft())

    def _answerFailed(self, failure: Failure) -> None:
        if failure.check(CancelledError):  # the connection closed meanwhile
            return
        self._log.failure("Answering {peer} failed", failure, peer=self.peer)
        self._answered(Answer(errorReply(None, "internal error")))

    def _deliverAnswer(self, result: Answer) -> None:
        self._sendToClient(result.reply)
        if result.updates and self.outbox is not None:
            self._commands.charge(len(result.updates) / REPLAYED_UPDATES_PER_COMMAND)
            for update in result.updates:
                self.outbox.push(update, update.toJSON())

    def sendUpdate(self, update: BugUpdate, payload: bytes) -> None:
        if self.outbox is not None:
            self.outbox.push(update, payload)

    def _sendUpdateFrame(self, payload: bytes) -> None:
        """
        Push an encoded update: framed once per update for all its
        subscribers, and sent at once when nothing is buffered ahead of it
        (L{bugzfeed.wire}).
        """
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        if self._perMessageCompress is not None or self.send_queue:
            # Not with this factory's options (compression is declined, and
            # nothing sends in chopped or synchronous mode), but kept right.
            self._sendToClient(payload)
            return
        writeNow(self.transport, self.factory.frames.frameFor(payload))

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

    def _tooSlow(self, reason: str) -> None:
        self.factory.slowClientCloses += 1
        self._log.info("Closing {peer}: {reason}", peer=self.peer, reason=reason)
        self._closeWith(SLOW_CLIENT, reason)

    def _closeWith(self, code: int, reason: str) -> None:
        """
        Close with C{code}, which Autobahn's C{sendClose} may refuse, and
        let go of everything the connection holds at once.
        """
        self._release()
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:120], isReply=False)
        else:
            self.dropConnection(abort=True)

    def goAway(self, reason: str = "server shutting down") -> None:
        """
        Tell the client the server is going (close code 1001, which
        Autobahn's C{sendClose} refuses to send), with C{reason}.
        """
        self._closeWith(1001, reason)

    def _release(self) -> None:
        if self.feed is not None:
            self.feed.registry.unsubscribeAll(self)
        if self.outbox is not None:
            self.outbox.stopProducing()
        self._queued.clear()
        waiting, self._waitingAnswer = self._waitingAnswer, None
        if waiting is not None:
            waiting.cancel()

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self._release()
        self.factory.connectionClosed(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        # The outbox calls back into this protocol: drop it, so that the
        # connection is freed as soon as it is gone (see __init__).
        self.outbox = None


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

    def __init__(
        self,
        feeds: Iterable[Feed],
        reactor: IReactorTime,
        limits: ClientLimits = ClientLimits(),
        allowedOrigins: Optional[Iterable[str]] = None,
    ) -> None:
        super().__init__(reactor=reactor)
        self._allowedOrigins = None if allowedOrigins is None else list(allowedOrigins)
        self.feeds: Mapping[str, Feed] = {normalizePath(feed.path): feed for feed in feeds}
        self.limits = limits
        self.clock = reactor
        #: Clients closed for reading too slowly, since start.
        self.slowClientCloses = 0
        #: Each update's frame, built once for all its subscribers.
        self.frames = FrameCache()

        self._reactor = reactor
        self._batched_timer = ReactorTimer(reactor)
        self._connections: Dict[FeedServerProtocol, List[Deferred]] = {}

    def feedAt(self, path: str) -> Optional[Feed]:
        """
        @return: The feed served at C{path}, or L{None}.
        """
        return self.feeds.get(normalizePath(path))

    def originAllowed(self, origin: Optional[str]) -> bool:
        """
        Against cross-site WebSocket hijacking: whether a browser page from
        C{origin} may connect.  Clients that send no origin are not
        browsers, and always may.
        """
        if self._allowedOrigins is None or not origin:
            return True
        normalized = normalizeOrigin(origin)
        return any(fnmatchcase(normalized, pattern) for pattern in self._allowedOrigins)

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
    limits: ClientLimits = ClientLimits(),
    allowedOrigins: Optional[List[str]] = None,
) -> FeedServerFactory:
    """
    Build the factory with keep-alive, handshake timeout and message size
    limit switched on.

    @param allowedOrigins: Origins browsers may connect from (wildcards
        allowed, such as C{https://*.example.com}, matched by
        L{normalizeOrigin}); L{None} allows any.
    """
    factory = FeedServerFactory(feeds, reactor, limits, allowedOrigins)
    maxMessageSize = limits.maxMessageSize
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
