"""
Support for integration tests: the real PostgreSQL and RabbitMQ, a real
WebSocket client, and waiting with deadlines.

Locally a missing server skips these tests; under CI (C{CI=true}) it fails
them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import uuid
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Tuple

import psycopg2
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from bugzfeed.amqp import BrokerAddress, BugzfeedAMQFactory
from bugzfeed.model import streamName

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# libpq's own variables; PGPASSWORD, if set, reaches libpq directly.
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_USER = os.environ.get("PGUSER", "postgres")
TEST_DATABASE = "bugzfeed_test"
AMQP_URL = os.environ.get("BUGZFEED_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


def freePort() -> int:
    """
    @return: A TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def requireServices() -> None:
    """
    Skip (or, under CI, fail) when PostgreSQL or RabbitMQ is not running.
    """
    missing = [
        name for name, port in [("PostgreSQL", 5432), ("RabbitMQ", 5672)] if not _reachable(port)
    ]
    if missing:
        message = f"{' and '.join(missing)} not reachable on 127.0.0.1"
        if os.environ.get("CI") == "true":
            raise AssertionError(message + " (under CI this fails instead of skipping)")
        raise SkipTest(message)


def waitFor(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> Deferred:
    """
    Poll C{predicate} until it returns something true, or fail after
    C{timeout} seconds.
    """

    @inlineCallbacks
    def poll() -> Any:
        deadline = reactor.seconds() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if reactor.seconds() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
            yield deferLater(reactor, interval, lambda: None)

    return poll()


class Database:
    """
    A table of its own in the test database, reached with blocking
    psycopg2 (fine for a test's few statements).
    """

    def __init__(self) -> None:
        self.suffix = uuid.uuid4().hex[:10]
        self.table = f"push_notify_{self.suffix}"
        self.applicationName = f"bugzfeed_shim_{self.suffix}"
        admin = psycopg2.connect(host=PG_HOST, user=PG_USER, dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEST_DATABASE,))
            if cursor.fetchone() is None:
                try:
                    cursor.execute(f"CREATE DATABASE {TEST_DATABASE}")
                except psycopg2.errors.DuplicateDatabase:
                    pass
        admin.close()
        self._connect()
        from bugzfeed.schema import tableSQL

        self.execute(tableSQL(self.table))

    @property
    def dsn(self) -> str:
        """What the shim connects with."""
        return f"host={PG_HOST} user={PG_USER} dbname={TEST_DATABASE} application_name={self.applicationName}"

    def _connect(self) -> None:
        self.connection = psycopg2.connect(host=PG_HOST, user=PG_USER, dbname=TEST_DATABASE)
        self.connection.autocommit = True

    def execute(self, sql: str, args: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
        try:
            return self._execute(sql, args)
        except psycopg2.OperationalError:
            if not self.connection.closed:
                raise
            # PostgreSQL was restarted under us (a fault test does): once.
            self._connect()
            return self._execute(sql, args)

    def _execute(self, sql: str, args: Tuple[Any, ...]) -> List[Tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    def insert(self, bug: int, when: datetime) -> int:
        """
        Record a change the way the tracker does: a new row, or the bug's
        row updated in place.

        @return: The row id.
        """
        return self.execute(
            f"INSERT INTO {self.table} (bug_id, delta_ts) VALUES (%s, %s)"
            f" ON CONFLICT (bug_id) DO UPDATE SET delta_ts = EXCLUDED.delta_ts RETURNING id",
            (bug, when),
        )[0][0]

    def count(self) -> int:
        return self.execute(f"SELECT count(*) FROM {self.table}")[0][0]

    def killShimBackends(self) -> int:
        """
        Terminate the shim's PostgreSQL connections.

        @return: How many were terminated.
        """
        rows = self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (self.applicationName,),
        )
        return len(rows)

    def drop(self) -> None:
        self.execute(f"DROP TABLE IF EXISTS {self.table}")
        self.execute(f'DROP FUNCTION IF EXISTS "bugzfeed_notify_{self.table}"() CASCADE')
        self.connection.close()


@inlineCallbacks
def deleteExchanges(exchanges: List[str]) -> Any:
    """
    Remove test exchanges and their streams from the broker.
    """
    address = BrokerAddress.fromURL(AMQP_URL)
    endpoint = HostnameEndpoint(reactor, address.host, address.port)
    client = yield endpoint.connect(BugzfeedAMQFactory(reactor, vhost=address.vhost))
    yield client.authenticate(address.username, address.password)
    try:
        for number, exchange in enumerate(exchanges, start=1):
            channel = yield client.channel(number)
            yield channel.channel_open()
            yield channel.queue_delete(queue=streamName(exchange))
            yield channel.exchange_delete(exchange=exchange)
    finally:
        yield client.close(within=1)
        client.transport.loseConnection()


def rabbitmqctl(*args: str) -> Deferred:
    """
    Run C{rabbitmqctl ARGS}; fail if it does.
    """
    d = getProcessOutputAndValue("rabbitmqctl", args, env=os.environ)

    def check(result: Any) -> None:
        out, err, code = result
        if code != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {err.decode()}")

    return d.addCallback(check)


class Daemon(ProcessProtocol):
    """
    A twistd process; C{ended} fires when it exits.
    """

    def __init__(self) -> None:
        self.ended: Deferred = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)

    def kill(self) -> Deferred:
        """
        Kill the process (SIGKILL) unless it has ended.
        """
        if not self.ended.called:
            self.transport.signalProcess(signal.SIGKILL)
        return self.ended

    def rss(self) -> int:
        """
        @return: The process's resident memory, in KiB.
        """
        with open(f"/proc/{self.transport.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")


class FeedClient(WebSocketClientProtocol):
    """
    A WebSocket client that queues every message it gets.
    """

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.received.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.factory.closeCode = code
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"closed before opening: {code} {reason}"))
        self.factory.closed.callback(code)


class FeedClientFactory(WebSocketClientFactory):
    protocol = FeedClient

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.opened: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self.received: DeferredQueue = DeferredQueue()
        self.closeCode: Optional[int] = None


class Client:
    """
    A connected test client: send commands, await messages with a deadline.
    """

    def __init__(self, factory: FeedClientFactory, protocol: FeedClient) -> None:
        self._factory = factory
        self.protocol = protocol

    @classmethod
    @inlineCallbacks
    def connect(cls, port: int, path: str = "/") -> Any:
        factory = FeedClientFactory(f"ws://127.0.0.1:{port}{path}")
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
        yield endpoint.connect(factory)
        protocol = yield factory.opened.addTimeout(10, reactor)
        return cls(factory, protocol)

    def send(self, message: Dict[str, Any]) -> None:
        self.protocol.sendMessage(json.dumps(message).encode())

    def next(self, timeout: float = 20.0) -> Deferred:
        """
        @return: A L{Deferred} firing with the next message, failing after
            C{timeout} seconds.
        """
        return self._factory.received.get().addTimeout(timeout, reactor)

    @inlineCallbacks
    def command(self, message: Dict[str, Any]) -> Any:
        """
        Send a command and return its reply.
        """
        self.send(message)
        reply = yield self.next()
        return reply

    def pending(self) -> List[Any]:
        """The messages received and not yet taken."""
        return list(self._factory.received.pending)

    def whenClosed(self, timeout: float = 20.0) -> Deferred:
        """
        @return: A L{Deferred} firing with the close code once the server
            has closed the connection.
        """
        d: Deferred = Deferred()
        self._factory.closed.addBoth(lambda code: (d.callback(code), code)[1])
        return d.addTimeout(timeout, reactor)

    def close(self) -> Deferred:
        if not self._factory.closed.called:
            self.protocol.sendClose()
        return self._factory.closed.addTimeout(10, reactor)


class IntegrationTestCase(TestCase):
    """
    Checks the services are up, and cleans up what a test makes.
    """

    timeout = 120

    def setUp(self) -> None:
        requireServices()
        self.suffix = uuid.uuid4().hex[:8]

    def exchange(self, name: str) -> str:
        """
        @return: An exchange name of this test's own; deleted, with its
            stream, after the test.
        """
        exchange = f"test/{self.suffix}/{name}"
        if not hasattr(self, "_exchanges"):
            self._exchanges: List[str] = []
            self.addCleanup(lambda: deleteExchanges(self._exchanges))
        self._exchanges.append(exchange)
        return exchange

    def spawnTwistd(
        self,
        *argv: str,
        environment: Optional[Dict[str, str]] = None,
        logging: Tuple[str, ...] = ("--logfile=-",),
    ) -> "Daemon":
        """
        Start C{twistd --nodaemon LOGGING ARGV} in a directory of its own,
        with this checkout first on its path and C{environment} added to
        ours; killed at the end of the test.
        """
        daemon = Daemon()
        workingDirectory = self.mktemp()
        os.makedirs(workingDirectory)
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        reactor.spawnProcess(
            daemon,
            sys.executable,
            [*command, "--nodaemon", "--pidfile=", *logging, *argv],
            env=dict(os.environ, PYTHONPATH=REPOSITORY, **(environment or {})),
            path=workingDirectory,
        )
        self.addCleanup(daemon.kill)
        return daemon

    def database(self) -> Database:
        database = Database()
        self.addCleanup(database.drop)
        return database

    @inlineCallbacks
    def client(self, port: int, path: str = "/", timeout: float = 20.0) -> Any:
        """
        Connect a client, retrying while the server starts.
        """
        deadline = reactor.seconds() + timeout
        while True:
            try:
                client = yield Client.connect(port, path)
            except Exception:
                if reactor.seconds() > deadline:
                    raise
                yield deferLater(reactor, 0.1, lambda: None)
            else:
                self.addCleanup(client.close)
                return client
