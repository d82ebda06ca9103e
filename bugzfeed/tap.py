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
from twisted.logger import Logger
from twisted.python import usage

from bugzfeed.config import (
    MAX_HEARTBEAT,
    EnvironmentOptions,
    checkExchange,
    checkServerEndpoint,
    environmentName,
    redactURL,
)
from bugzfeed.consumer import STREAM_RETENTION, FeedConsumer, consumerService
from bugzfeed.feed import Feed
from bugzfeed.history import UpdateHistory
from bugzfeed.limits import ClientLimits
from bugzfeed.metrics import serverRegistry
from bugzfeed.protocol import FeedServerFactory, makeFactory, normalizeOrigin, normalizePath
from bugzfeed.reconnect import goingAwayReason, reconnectSpread
from bugzfeed.sharedport import SharedPortFactory
from bugzfeed.subscriptions import SubscriptionRegistry
from bugzfeed.systemd import systemdService, whenListening
from bugzfeed.web import adminResources, adminService, feedFrontDoor, makeSite

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
    limits: ClientLimits = ClientLimits()
    allowedOrigins: Tuple[str, ...] = ()
    admin: Optional[str] = None


def checkListen(description: str) -> str:
    """
    @return: C{description}, checked to be a server endpoint description.
    @raise usage.UsageError: If it is not.
    """
    return checkServerEndpoint("listen", description)


def parseOrigins(text: str) -> Tuple[str, ...]:
    """
    Read the origins browsers may connect from.

    @raise usage.UsageError: If one is not a scheme and host.
    """
    origins = tuple(text.replace(",", " ").split())
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
            raise usage.UsageError(
                f"--allowed-origins takes origins such as https://bugzilla.example.com,"
                f" not {origin!r}"
            )
    return tuple(normalizeOrigin(origin) for origin in origins)


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
        "Serve bug-change notifications to WebSocket clients. The same port answers plain"
        " HTTP: a browser GET of a feed's path gets an example page, and /healthz, /readyz"
        " and /metrics (Prometheus) are there too unless --admin moves them to a listener of"
        " their own. Every option can also be set from an environment variable: --amqp from"
        " BUGZFEED_AMQP, and so on; --feed from BUGZFEED_FEED, with several PATH=EXCHANGE"
        " separated by spaces."
    )
    optParameters: List[List[Any]] = [
        ["listen", None, "tcp:8844", "Where to serve WebSockets and HTTP (strports description)."],
        ["amqp", None, "amqp://guest:guest@localhost:5672/", "RabbitMQ broker URL."],
        ["heartbeat", None, "30s", "AMQP heartbeat interval, whole seconds (0 switches it off)."],
        ["history", None, "24h", "How far back each feed remembers updates for catch-up."],
        ["history-count", None, "100000", "How many updates each feed remembers at most."],
        ["ping-interval", None, "30s", "Ping each client this often (0 switches pings off)."],
        ["ping-timeout", None, "30s", "Close a client that has not answered a ping in this time."],
        [
            "handshake-timeout",
            None,
            "10s",
            "Close a client that has not finished its handshake (or, idle, not sent a"
            " request) in this time; at least 1s.",
        ],
        [
            "max-message-size",
            None,
            "65536",
            "Largest client message in bytes; larger ones get close code 1009.",
        ],
        ["max-subscriptions", None, "1000", "Bugs one connection may subscribe to."],
        [
            "max-connections",
            None,
            "50000",
            "Open connections per node; more are refused with HTTP 503 (0: no limit).",
        ],
        [
            "max-commands-per-second",
            None,
            "100",
            "Commands per second per connection, twice as many at once; a replay counts"
            " once more per 100 updates it sends. 0: no limit.",
        ],
        [
            "max-pending",
            None,
            "1000",
            "Bugs with unread updates a slow client may fall behind on before close 4001.",
        ],
        [
            "slow-client-timeout",
            None,
            "30s",
            "Close (4001) a client that has left its updates unread this long (0: never).",
        ],
        [
            "resume-timeout",
            None,
            "10s",
            "How long a resume (after) waits for a starting node to read its stream.",
        ],
        [
            "allowed-origins",
            None,
            "",
            "Browser origins allowed to connect, separated by spaces or commas, wildcards"
            " allowed (https://*.example.com); default: any. Clients that send no Origin"
            " (not browsers) are always allowed.",
        ],
        [
            "admin",
            None,
            None,
            "Serve /healthz, /readyz and /metrics on a listener of their own (a strports"
            " description, such as tcp:9100:interface=127.0.0.1) instead of on --listen.",
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
            heartbeat=self.wholeSeconds("heartbeat", MAX_HEARTBEAT),
            feeds=tuple(feeds) or DEFAULT_FEEDS,
            # Older updates are gone from the stream anyway.
            history=self.duration("history", maximum=STREAM_RETENTION),
            historyCount=self.integer("history-count"),
            pingInterval=self.duration("ping-interval"),
            pingTimeout=self.duration("ping-timeout"),
            handshakeTimeout=self.duration("handshake-timeout", minimum=1),
            limits=ClientLimits(
                maxMessageSize=self.integer("max-message-size", minimum=128),
                maxSubscriptions=self.integer("max-subscriptions", minimum=1),
                maxConnections=self.integer("max-connections"),
                commandsPerSecond=self.integer("max-commands-per-second"),
                maxPending=self.integer("max-pending", minimum=1),
                slowClientTimeout=self.duration("slow-client-timeout"),
                resumeTimeout=self.duration("resume-timeout"),
            ),
            allowedOrigins=parseOrigins(self["allowed-origins"]),
            admin=checkServerEndpoint("admin", self["admin"]) if self["admin"] else None,
        )


class BugzfeedServer(MultiService):
    """
    The server's service tree: the stream consumer, then the listeners (so
    that stopping closes the listeners first).

    @ivar feeds: The feeds served.
    @ivar consumer: Reads the feeds' streams.
    @ivar factory: The WebSocket factory.
    @ivar site: The HTTP site on C{--listen}, which hands WebSocket upgrades
        to C{factory}.
    @ivar metrics: The server's own Prometheus registry.
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
            limits=config.limits,
            allowedOrigins=list(config.allowedOrigins) or None,
        )
        self.metrics = serverRegistry(self.factory, self.feeds, self.consumer)
        admin = adminResources(self.isReady, self.metrics, reactor)
        self.site = makeSite(
            feedFrontDoor(
                lambda path: self.factory.feedAt(path) is not None,
                {} if config.admin else admin,
            ),
            reactor,
            config.handshakeTimeout,
        )
        # The handshake timeout also bounds how long a connection may take
        # to send its first request.
        shared = SharedPortFactory(self.factory, self.site, reactor, config.handshakeTimeout)
        listener = strports.service(config.listen, shared, reactor=reactor)
        listener.setName("websocket")
        listener.setServiceParent(self)
        if config.admin is not None:
            adminService(config.admin, admin, reactor).setServiceParent(self)
        self._config = config
        self._random = random.Random()

    def isReady(self) -> bool:
        """
        Whether this node serves updates: running, listening for clients
        and consuming every feed's stream.
        """
        # A factory counts the ports it listens on.
        return bool(self.running and self.site.numPorts > 0 and self.consumer.consuming)

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
