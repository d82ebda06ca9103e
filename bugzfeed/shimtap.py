"""
The composition root of C{twistd bugzfeed-shim}: options, and the service
tree they describe.
"""

from __future__ import annotations

import os
from datetime import tzinfo
from typing import Any, List, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attr
import psycopg2
from psycopg2.extensions import parse_dsn
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python import usage
from txpostgres.reconnection import DeadConnectionDetector
from txpostgres.txpostgres import Connection

from bugzfeed.config import (
    MAX_HEARTBEAT,
    EnvironmentOptions,
    checkExchange,
    checkServerEndpoint,
    redactDSN,
    redactURL,
)
from bugzfeed.schema import DEFAULT_TABLE, quoteTable
from bugzfeed.shim import (
    DatabaseService,
    PushNotifyShim,
    PushNotifyTable,
    publisherService,
)
from bugzfeed.shimmetrics import shimRegistry
from bugzfeed.systemd import systemdService
from bugzfeed.web import adminResources, adminService


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ShimConfig:
    """
    Everything C{twistd bugzfeed-shim} is told, validated.
    """

    database: str = "dbname=bugs"
    amqp: str = "amqp://guest:guest@localhost:5672/"
    heartbeat: int = 30
    exchange: str = "exchange/bugzilla/simple"
    table: str = DEFAULT_TABLE
    pollInterval: float = 1.0
    dbTimezone: tzinfo = ZoneInfo("UTC")
    batchSize: int = 500
    maxInFlight: int = 1000
    installTrigger: bool = False
    admin: Optional[str] = None


class Options(EnvironmentOptions):
    synopsis = "[options]"
    longdesc = (
        "Publish the rows of the tracker's push_notify table to a RabbitMQ exchange, deleting"
        " each once the broker has confirmed it. Every option can also be set from an"
        " environment variable: --database from BUGZFEED_DATABASE, and so on. The shim serves"
        " /healthz, /readyz and /metrics (Prometheus) only when --admin names a listener."
    )
    optParameters: List[List[Any]] = [
        ["database", None, "dbname=bugs", "PostgreSQL to read: a libpq DSN or postgresql:// URL."],
        ["amqp", None, "amqp://guest:guest@localhost:5672/", "RabbitMQ broker URL."],
        ["heartbeat", None, "30s", "AMQP heartbeat interval, whole seconds (0 switches it off)."],
        ["exchange", None, "exchange/bugzilla/simple", "Exchange to publish to."],
        ["table", None, DEFAULT_TABLE, "Table to read (optionally schema.table)."],
        ["poll-interval", None, "1s", "Read the table at least this often."],
        ["db-timezone", None, "UTC", "Zone the table's delta_ts is written in (an IANA name)."],
        ["batch-size", None, "500", "Rows read, or deleted, per query."],
        [
            "max-in-flight",
            None,
            "1000",
            "Published rows not yet deleted (awaiting the broker's confirm or their"
            " delete), at most: all that a crash can publish twice.",
        ],
        [
            "admin",
            None,
            None,
            "Serve /healthz, /readyz and /metrics on this listener (a strports description,"
            " such as tcp:9101:interface=127.0.0.1); without it the shim serves no HTTP.",
        ],
    ]
    optFlags = [
        [
            "install-trigger",
            None,
            "Install (or replace) the NOTIFY trigger on the table at start"
            " (PostgreSQL 14 or later).",
        ],
    ]

    def postOptions(self) -> None:
        try:
            quoteTable(self["table"])
        except ValueError as e:
            raise usage.UsageError(f"--table: {e}")
        try:
            zone = ZoneInfo(self["db-timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise usage.UsageError(f"--db-timezone: unknown zone {self['db-timezone']!r}")
        try:
            parse_dsn(self["database"])
        except psycopg2.Error as e:
            raise usage.UsageError(f"--database: not a libpq DSN or URL: {str(e).strip()}")
        self.config = ShimConfig(
            database=self["database"],
            amqp=self.amqpURL(),
            heartbeat=self.wholeSeconds("heartbeat", MAX_HEARTBEAT),
            exchange=checkExchange("exchange", self["exchange"]),
            table=self["table"],
            pollInterval=self.duration("poll-interval", minimum=0.01),
            dbTimezone=zone,
            batchSize=self.integer("batch-size", minimum=1),
            maxInFlight=self.integer("max-in-flight", minimum=1),
            installTrigger=bool(self["install-trigger"]),
            admin=checkServerEndpoint("admin", self["admin"]) if self["admin"] else None,
        )


class ShimService(MultiService):
    """
    The shim's service tree: the admin listener if any, the broker
    connection, then the database connection; stopping runs in that reverse
    order, one after the other, so that confirms settle before the broker
    connection goes.

    @ivar shim: The shim's logic.
    @ivar database: The database side.
    @ivar metrics: The shim's own Prometheus registry.
    """

    def __init__(self, config: ShimConfig, reactor: Any) -> None:
        super().__init__()
        connection = Connection(reactor=reactor, detector=DeadConnectionDetector(reactor=reactor))
        table = PushNotifyTable(connection, config.table)
        self.shim = PushNotifyShim(
            table,
            config.exchange,
            reactor,
            dbTimezone=config.dbTimezone,
            batchSize=config.batchSize,
            maxInFlight=config.maxInFlight,
        )
        self._connection = connection
        self.metrics, collector = shimRegistry(self.shim, table, reactor, config.dbTimezone)
        if config.admin is not None:
            admin = adminResources(self.isReady, self.metrics, reactor, collector.refresh)
            adminService(config.admin, admin, reactor).setServiceParent(self)
        publisher = publisherService(reactor, config.amqp, config.heartbeat, self.shim)
        publisher.setName("amqp")
        publisher.setServiceParent(self)
        self.database = DatabaseService(
            connection,
            config.database,
            self.shim,
            table,
            reactor,
            config.pollInterval,
            installTrigger=config.installTrigger,
        )
        self.database.setName("database")
        self.database.setServiceParent(self)
        self._config = config

    def isReady(self) -> bool:
        """
        Whether the shim can move rows: running, connected to PostgreSQL
        and listening there, its last read of the table worked, and holding
        a confirm-mode channel to the broker.
        """
        return bool(
            self.running
            and self.database.connected
            and not self._connection.detector.connectionIsDead
            and self.shim.reading
            and self.shim.publishing
        )

    def startService(self) -> None:
        Logger().info(
            "bugzfeed-shim: {database} table {table} -> {amqp} exchange {exchange}",
            database=redactDSN(self._config.database),
            table=self._config.table,
            amqp=redactURL(self._config.amqp),
            exchange=self._config.exchange,
        )
        super().startService()

    def stopService(self) -> Deferred:
        """
        Stop the database side first, letting in-flight confirms settle, and
        only then close the broker connection.
        """
        Service.stopService(self)
        if "systemd" in self.namedServices:
            self.getServiceNamed("systemd").stopService()
        d = self.database.stopService()
        d.addCallback(lambda _: self.getServiceNamed("amqp").stopService())
        if self.namedServices.get("admin") is not None:
            d.addCallback(lambda _: self.getServiceNamed("admin").stopService())
        return d


def makeService(options: Options) -> ShimService:
    """
    Build C{twistd bugzfeed-shim}'s service from its options.
    """
    from twisted.internet import reactor

    service = ShimService(options.config, reactor)
    shim, database = service.shim, service.database

    def describe() -> str:
        # DatabaseService.connected says only that the first connection was
        # made; the broker side knows when its channel goes.
        waiting = "" if database.connected else "waiting for PostgreSQL; "
        if database.connected and not shim.reading:
            waiting = "reading the table fails; "
        broker = "publishing" if shim.publishing else "waiting for RabbitMQ"
        return (
            f"{waiting}{broker}; {shim.published} published, {shim.deleted} deleted,"
            f" {shim.inFlight} in flight"
        )

    notifier = systemdService(
        os.environ,
        os.getpid(),
        reactor,
        lambda: gatherResults([database.whenConnected(), shim.whenPublishing()]),
        describe,
    )
    if notifier is not None:
        notifier.setName("systemd")
        notifier.setServiceParent(service)  # last: ready after the rest starts, stops first
    return service
