"""
The composition root of C{twistd bugzfeed}: options, and the service tree
they describe.
"""

from __future__ import annotations

import os
import random
from typing import Any, List, Mapping, Optional, Tuple

import attr
from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from bugzfeed.config import (
    MAX_HEARTBEAT,
    EnvironmentOptions,
    checkExchange,
    environmentName,
    redactURL,
)
from bugzfeed.consumer import STREAM_RETENTION, FeedConsumer, consumerService
from bugzfeed.feed import Feed
from bugzfeed.history import UpdateHistory
from bugzfeed.protocol import FeedServerFactory, makeFactory, normalizePath
from bugzfeed.reconnect import goingAwayReason, reconnectSpread
from bugzfeed.subscriptions import SubscriptionRegistry
from bugzfeed.systemd import systemdService, whenListening

_log = Logger()

#: Seconds clients get to close after being told the server is going.
CLOSE_TIMEOUT = 5.0

#: The feeds the original service had.
DEFAULT_FEEDS = (("/", "exchange/bugzilla/simple"), ("/dev/", "exchange/bugzilla/simple/dev"))


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ServerConfig:
    """
    Everything C{twistd bugzfeed} is told, validated.
    """

    listen: str = "tcp:8844"
    amqp: str = "amqp://guest:guest@localhost:5672/"
    heartbeat: int = 30
    feeds: Tuple[Tuple[str, str], ...] = DEFAULT_FEEDS
    history: float = 86400.0
    historyCount: int = 100000
    pingInterval: float = 30.0
    pingTimeout: float = 30.0
    handshakeTimeout: float = 10.0
    maxMessageSize: int = 65536


def checkListen(description: str) -> str:
    """
    @return: C{description}, checked to be a server endpoint description.
    @raise usage.UsageError: If it is not.
    """
    try:
        # Building an endpoint does no I/O: no reactor needed.
        endpoint = serverFromString(None, description)
    except Exception as e:
        raise usage.UsageError(f"--listen: not an endpoint description: {description!r} ({e})")
    port = getattr(endpoint, "_port", 0)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise usage.UsageError(f"--listen: no such port: {port}")
    return description


def parseFeed(text: str) -> Tuple[str, str]:
    """
    Read C{PATH=EXCHANGE}.

    @raise usage.UsageError: If C{text} is not of that form.
    """
    path, sep, exchange = text.partition("=")
    if not sep or not path.startswith("/") or not exchange.strip():
        raise usage.UsageError(
            f"--feed takes PATH=EXCHANGE, such as /dev/=exchange/bugzilla/simple/dev; not {text!r}"
        )
    return normalizePath(path), exchange.strip()


class Options(EnvironmentOptions):
    synopsis = "[options]"
    longdesc = (
        "Serve bug-change notifications to WebSocket clients. Every option can also be set"
        " from an environment variable: --amqp from BUGZFEED_AMQP, and so on; --feed from"
        " BUGZFEED_FEED, with several PATH=EXCHANGE separated by spaces."
    )
    optParameters: List[List[Any]] = [
        ["listen", None, "tcp:8844", "Where to serve WebSockets (a strports description)."],
        ["amqp", None, "amqp://guest:guest@localhost:5672/", "RabbitMQ broker URL."],
        ["heartbeat", None, "30", "AMQP heartbeat interval in seconds (0 switches it off)."],
        ["history", None, "24h", "How far back each feed remembers updates for catch-up."],
        ["history-count", None, "100000", "How many updates each feed remembers at most."],
        ["ping-interval", None, "30s", "Ping each client this often (0 switches pings off)."],
        ["ping-timeout", None, "30s", "Close a client that has not answered a ping in this time."],
        [
            "handshake-timeout",
            None,
            "10s",
            "Close a client that has not finished its handshake in this time.",
        ],
        [
            "max-message-size",
            None,
            "65536",
            "Largest client message in bytes; larger ones get close code 1009.",
        ],
    ]

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(environ)
        environ = os.environ if environ is None else environ
        self["feed"] = []
        self._feedFromEnvironment = environ.get(environmentName("feed"), "").split()

    def opt_feed(self, value: str) -> None:
        """
        PATH=EXCHANGE: serve EXCHANGE at WebSocket path PATH (repeatable; replaces / and /dev/).
        """
        self["feed"].append(parseFeed(value))

    def postOptions(self) -> None:
        feeds = self["feed"] or [parseFeed(text) for text in self._feedFromEnvironment]
        paths = [path for path, _ in feeds]
        if len(set(paths)) != len(paths):
            raise usage.UsageError("--feed: each path may be given once")
        for _, exchange in feeds:
            checkExchange("feed", exchange)
        self.config = ServerConfig(
            listen=checkListen(self["listen"]),
            amqp=self.amqpURL(),
            heartbeat=self.integer("heartbeat", maximum=MAX_HEARTBEAT),
            feeds=tuple(feeds) or DEFAULT_FEEDS,
            # Older updates are gone from the stream anyway.
            history=self.duration("history", maximum=STREAM_RETENTION),
            historyCount=self.integer("history-count"),
            pingInterval=self.duration("ping-interval"),
            pingTimeout=self.duration("ping-timeout"),
            handshakeTimeout=self.duration("handshake-timeout"),
            maxMessageSize=self.integer("max-message-size", minimum=128),
        )


class BugzfeedServer(MultiService):
    """
    The server's service tree: the stream consumer, then the WebSocket
    listener (so that stopping closes the listener first).

    @ivar feeds: The feeds served.
    @ivar consumer: Reads the feeds' streams.
    @ivar factory: The WebSocket factory.
    """

    def __init__(self, config: ServerConfig, reactor: Any) -> None:
        super().__init__()
        self.feeds = [
            Feed(
                path=path,
                exchange=exchange,
                registry=SubscriptionRegistry(),
                history=UpdateHistory(reactor, config.history, config.historyCount),
            )
            for path, exchange in config.feeds
        ]
        self.consumer = FeedConsumer(self.feeds, config.history, reactor)
        consumer = consumerService(reactor, config.amqp, config.heartbeat, self.consumer)
        consumer.setName("amqp")
        consumer.setServiceParent(self)
        self.factory: FeedServerFactory = makeFactory(
            self.feeds,
            reactor,
            pingInterval=config.pingInterval,
            pingTimeout=config.pingTimeout,
            handshakeTimeout=config.handshakeTimeout,
            maxMessageSize=config.maxMessageSize,
        )
        listener = strports.service(config.listen, self.factory, reactor=reactor)
        listener.setName("websocket")
        listener.setServiceParent(self)
        self._config = config
        self._random = random.Random()

    def startService(self) -> None:
        _log.info(
            "bugzfeed on {listen}, broker {amqp}, feeds {feeds}",
            listen=self._config.listen,
            amqp=redactURL(self._config.amqp),
            feeds=", ".join(f"{path}={exchange}" for path, exchange in self._config.feeds),
        )
        super().startService()

    def stopService(self) -> Deferred:
        """
        Stop listening and consuming, and ask every client to go.
        """
        stopped = super().stopService()
        # Spread the clients' reconnects, to other nodes or to this one once
        # it is back.
        spread = reconnectSpread(self.factory.connectionCount)
        closed = self.factory.closeAll(
            CLOSE_TIMEOUT, reason=lambda: goingAwayReason(self._random.uniform(0, spread))
        )
        return gatherResults([stopped, closed])


def makeService(options: Options) -> BugzfeedServer:
    """
    Build C{twistd bugzfeed}'s service from its options.
    """
    from twisted.internet import reactor

    server = BugzfeedServer(options.config, reactor)
    listener = server.getServiceNamed("websocket")

    def describe() -> str:
        broker = "consuming" if server.consumer.consuming else "waiting for the broker"
        return f"{server.factory.connectionCount} clients on {options.config.listen}; {broker}"

    notifier = systemdService(
        os.environ,
        os.getpid(),
        reactor,
        lambda: gatherResults([server.consumer.whenConsuming(), whenListening(listener)]),
        describe,
    )
    if notifier is not None:
        notifier.setName("systemd")
        notifier.setServiceParent(server)  # last: ready after the rest starts, stops first
    return server
