"""
Integration tests: the server and the shim against the real PostgreSQL and
RabbitMQ, with real WebSocket clients over loopback.
"""

from __future__ import annotations

import gc
import os
import signal
import weakref
from datetime import datetime, timedelta
from typing import Any, List, Optional

from twisted.application.internet import backoffPolicy
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from bugzfeed.consumer import FeedConsumer, consumerService
from bugzfeed.protocol import makeFactory
from bugzfeed.schema import tableSQL
from bugzfeed.shimtap import ShimConfig, ShimService
from bugzfeed.tap import BugzfeedServer, ServerConfig
from tests.fakes import makeFeed
from tests.integration import (
    AMQP_URL,
    Client,
    IntegrationTestCase,
    freePort,
    rabbitmqctl,
    waitFor,
)

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


#: Change times are this plus a few seconds: recent, so within the history.
BASE = datetime.utcnow().replace(microsecond=0) - timedelta(minutes=5)


def when(seconds: int) -> datetime:
    """A change time, in UTC, C{seconds} after L{BASE}."""
    return BASE + timedelta(seconds=seconds)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


class ServiceTestCase(IntegrationTestCase):
    """
    Runs the server and shims in the test's own reactor.
    """

    @inlineCallbacks
    def startServer(
        self, feeds: Any, amqp: str = AMQP_URL, listen: str = "tcp:{port}:interface=127.0.0.1"
    ) -> Any:
        """
        Start a server and wait until it consumes its streams: a row
        published before its stream exists is returned to the shim.

        @param listen: Where to listen; C{{port}} is replaced by a free port.
        @return: The server's port.
        """
        port = freePort()
        server = BugzfeedServer(
            ServerConfig(
                listen=listen.format(port=port),
                amqp=amqp,
                heartbeat=5,
                feeds=tuple(feeds),
            ),
            reactor,
        )
        # Reconnect fast: the broker-restart test waits on it.
        server.getServiceNamed("amqp")._machine._policy = backoffPolicy(maxDelay=1.0)
        server.startService()
        self.addCleanup(server.stopService)
        self.server = server
        yield server.consumer.whenConsuming()
        return port

    def startShim(
        self,
        database: Any,
        exchange: str,
        pollInterval: float = 0.5,
        trigger: bool = True,
        amqp: str = AMQP_URL,
        dsn: Optional[str] = None,
    ) -> ShimService:
        shim = ShimService(
            ShimConfig(
                database=dsn or database.dsn,
                amqp=amqp,
                heartbeat=5,
                exchange=exchange,
                table=database.table,
                pollInterval=pollInterval,
                installTrigger=trigger,
            ),
            reactor,
        )
        shim.getServiceNamed("amqp")._machine._policy = backoffPolicy(maxDelay=1.0)
        shim.startService()
        self.addCleanup(shim.stopService)
        return shim

    @inlineCallbacks
    def nextUpdate(self, client: Any, bug: int) -> Any:
        """
        The next update for C{bug}, skipping repeats of earlier ones (the
        promise is at least once).
        """
        while True:
            message = yield client.next()
            if message.get("command") == "update" and message["bug"] == bug:
                return message


class EndToEndTests(ServiceTestCase):
    @inlineCallbacks
    def test_insertReachesSubscriberOnlyAndRowIsDeleted(self) -> None:
        """
        A committed row reaches the client subscribed to its bug, not a
        client subscribed to another bug, and is deleted once confirmed.
        """
        exchange = self.exchange("simple")
        database = self.database()
        port = yield self.startServer([("/", exchange)])
        self.startShim(database, exchange)
        alice = yield self.client(port)
        bob = yield self.client(port)
        reply = yield alice.command({"command": "subscribe", "bugs": [1001]})
        self.assertEqual(reply, {"command": "subscribe", "result": "ok", "bugs": [1001]})
        yield bob.command({"command": "subscribe", "bugs": [1002]})

        database.insert(1001, when(1))
        update = yield alice.next()
        self.assertEqual(
            (update["command"], update["bug"], update["when"]), ("update", 1001, iso(when(1)))
        )
        self.assertIsInstance(update["seq"], int)
        yield waitFor(lambda: database.count() == 0, what="the confirmed row to be deleted")

        # Had 1001 reached bob, it would have come before this.
        database.insert(1002, when(2))
        update = yield bob.next()
        self.assertEqual((update["bug"], update["when"]), (1002, iso(when(2))))

    @inlineCallbacks
    def test_rowUpdatedInFlightIsDeliveredWithNewTime(self) -> None:
        """
        A row the tracker updates in place after the shim read it is not
        deleted by the stale confirm: its new time is delivered too.
        """
        exchange = self.exchange("simple")
        database = self.database()
        port = yield self.startServer([("/", exchange)])
        client = yield self.client(port)
        yield client.command({"command": "subscribe", "bugs": [2001]})
        database.insert(2001, when(1))
        shim = self.startShim(database, exchange, trigger=False)
        table = shim.shim._table
        fetch = table.fetch
        changed: List[bool] = []

        def fetchThenChange(afterId: int, limit: int) -> Deferred:
            def change(rows: Any) -> Any:
                if rows and not changed:
                    changed.append(True)
                    database.insert(2001, when(2))
                return rows

            return fetch(afterId, limit).addCallback(change)

        table.fetch = fetchThenChange
        first = yield self.nextUpdate(client, 2001)
        self.assertEqual(first["when"], iso(when(1)))
        second = yield self.nextUpdate(client, 2001)
        self.assertEqual(second["when"], iso(when(2)))
        yield waitFor(lambda: database.count() == 0, what="the row to be deleted")

    @inlineCallbacks
    def test_timesOutOfRangeArePublishedAndDeleted(self) -> None:
        """
        Rows whose C{delta_ts} Python cannot hold (infinite, BC, past year
        9999) neither stop the shim nor loop: each is published once, with
        the time it was read, and deleted; the rows around them flow on.
        """
        exchange = self.exchange("simple")
        database = self.database()
        port = yield self.startServer([("/", exchange)])
        client = yield self.client(port)
        bugs = [3001, 3002, 3003, 3004, 3005, 3006]
        yield client.command({"command": "subscribe", "bugs": bugs})
        database.insert(3001, when(1))
        for bug, stored in zip(
            bugs[1:5], ["infinity", "-infinity", "4713-01-01 BC", "294276-01-01"]
        ):
            database.execute(
                f"INSERT INTO {database.table} (bug_id, delta_ts) VALUES (%s, %s)", (bug, stored)
            )
        database.insert(3006, when(6))
        started = datetime.utcnow().replace(microsecond=0)
        shim = self.startShim(database, exchange, pollInterval=0.2, trigger=False)
        seen = {}
        while len(seen) < len(bugs):
            update = yield client.next()
            seen[update["bug"]] = update["when"]
        self.assertEqual((seen[3001], seen[3006]), (iso(when(1)), iso(when(6))))
        for bug in bugs[1:5]:
            self.assertGreaterEqual(seen[bug], iso(started))
        yield waitFor(lambda: database.count() == 0, what="every row to be deleted")
        # Another full pass over the (empty) table publishes nothing more.
        yield waitFor(lambda: shim.shim.idle, what="the shim to settle")
        shim.shim.drain()
        yield waitFor(lambda: shim.shim.idle, what="another drain")
        self.assertEqual(shim.shim.published, len(bugs))
        self.assertEqual(client.pending(), [])

    @inlineCallbacks
    def test_devFeedIsolated(self) -> None:
        """
        C{/} and C{/dev/} have their own exchanges and subscriptions: an
        update to one never reaches the other's clients.
        """
        production, development = self.exchange("simple"), self.exchange("dev")
        productionRows, developmentRows = self.database(), self.database()
        port = yield self.startServer([("/", production), ("/dev/", development)])
        self.startShim(productionRows, production)
        self.startShim(developmentRows, development)
        root = yield self.client(port, "/")
        dev = yield self.client(port, "/dev/")
        yield root.command({"command": "subscribe", "bugs": [3001]})
        yield dev.command({"command": "subscribe", "bugs": [3001]})

        productionRows.insert(3001, when(1))
        update = yield root.next()
        self.assertEqual(update["when"], iso(when(1)))
        developmentRows.insert(3001, when(2))
        update = yield dev.next()
        self.assertEqual(update["when"], iso(when(2)))
        self.assertEqual(root.pending(), [])

    @inlineCallbacks
    def test_sinceCatchesUpFromHistory(self) -> None:
        """
        A client subscribing with C{since} gets the updates it missed.
        """
        exchange = self.exchange("simple")
        database = self.database()
        port = yield self.startServer([("/", exchange)])
        self.startShim(database, exchange)
        watcher = yield self.client(port)
        yield watcher.command({"command": "subscribe", "bugs": [4001]})
        database.insert(4001, when(1))
        yield watcher.next()
        late = yield self.client(port)
        reply = yield late.command({"command": "subscribe", "bugs": [4001], "since": iso(when(0))})
        self.assertEqual(reply["result"], "ok")
        update = yield late.next()
        self.assertEqual((update["bug"], update["when"]), (4001, iso(when(1))))


class MissingTableTests(ServiceTestCase):
    @inlineCallbacks
    def test_missingTableReportedThenPickedUp(self) -> None:
        """
        A table that does not exist yet is reported clearly; once created,
        its rows flow without a restart.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        exchange = self.exchange("simple")
        database = self.database()
        database.execute(f"DROP TABLE {database.table}")
        port = yield self.startServer([("/", exchange)])
        self.startShim(database, exchange, pollInterval=0.2)
        yield waitFor(
            lambda: [e for e in events if "Cannot read table" in e.get("log_format", "")],
            what="the missing table to be reported",
        )
        database.execute(tableSQL(database.table))
        client = yield self.client(port)
        yield client.command({"command": "subscribe", "bugs": [8001]})
        database.insert(8001, when(1))
        update = yield self.nextUpdate(client, 8001)
        self.assertEqual(update["when"], iso(when(1)))


class FaultTests(ServiceTestCase):
    @inlineCallbacks
    def test_brokerRestartLosesNothing(self) -> None:
        """
        Rows committed before, during and after a broker restart all reach
        the subscriber.
        """
        exchange = self.exchange("simple")
        database = self.database()
        port = yield self.startServer([("/", exchange)])
        self.startShim(database, exchange)
        client = yield self.client(port)
        yield client.command({"command": "subscribe", "bugs": [5001, 5002, 5003]})
        database.insert(5001, when(1))
        yield self.nextUpdate(client, 5001)

        self.addCleanup(rabbitmqctl, "start_app")
        yield rabbitmqctl("stop_app")
        database.insert(5002, when(2))
        yield rabbitmqctl("start_app")
        database.insert(5003, when(3))
        seen = set()
        while seen != {5002, 5003}:
            message = yield client.next(timeout=60)
            if message.get("command") == "update":
                seen.add(message["bug"])
        yield waitFor(lambda: database.count() == 0, timeout=30, what="every row to be deleted")
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_postgresBackendKilled(self) -> None:
        """
        The shim reconnects to PostgreSQL after its backend is terminated,
        listens again, and loses nothing.
        """
        exchange = self.exchange("simple")
        database = self.database()
        port = yield self.startServer([("/", exchange)])
        shim = self.startShim(database, exchange, pollInterval=30)
        client = yield self.client(port)
        yield client.command({"command": "subscribe", "bugs": [6001, 6002]})
        yield shim.database.whenConnected()
        database.insert(6001, when(1))
        yield self.nextUpdate(client, 6001)

        self.assertEqual(database.killShimBackends(), 1)
        yield waitFor(
            lambda: (
                database.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    (database.applicationName,),
                )[0][0]
                == 1
            ),
            what="the shim to reconnect",
        )
        # The poll interval is 30 s: only a renewed LISTEN delivers this soon.
        yield waitFor(lambda: shim.shim.idle, what="the shim to settle")
        database.insert(6002, when(2))
        yield self.nextUpdate(client, 6002)
        self.flushLoggedErrors()


class ClosedConnectionTests(TestCase):
    """
    A real server and real clients over loopback, without a broker.
    """

    @inlineCallbacks
    def test_closedConnectionFreedWithoutGarbageCollector(self) -> Any:
        """
        A closed connection is freed as soon as it is gone, by reference
        counting alone: no reference cycle keeps it (and what it held)
        until Python's next full collection.
        """
        feed = makeFeed(reactor, path="/")
        factory = makeFactory([feed], reactor, 30, 10, 10)
        built: List[Any] = []
        buildProtocol = factory.buildProtocol

        def recordingBuild(address: Any) -> Any:
            protocol = buildProtocol(address)
            built.append(weakref.ref(protocol))
            return protocol

        factory.buildProtocol = recordingBuild  # type: ignore[method-assign]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        for _ in range(5):
            client = yield Client.connect(port.getHost().port)
            reply = yield client.command({"command": "subscribe", "bugs": [1, 2, 3]})
            self.assertEqual(reply["bugs"], [1, 2, 3])
            yield client.close()
        yield waitFor(lambda: factory.connectionCount == 0, what="the server to forget them")
        self.assertEqual(len(built), 5)
        # The reactor lets go of the last connection a turn or so after its
        # close; with the collector off, a cycle would keep it for good.
        yield waitFor(
            lambda: all(ref() is None for ref in built),
            timeout=5,
            what="every closed connection to be freed without the garbage collector",
        )
        self.assertEqual(feed.registry.subscriberCount, 0)


class BrokerLoginTests(IntegrationTestCase):
    @inlineCallbacks
    def test_refusedLoginIsLoggedAndRetried(self) -> None:
        """
        A wrong password is logged with the broker's reason, and retried
        cleanly (nothing else is logged as an error) until it is fixed.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = consumerService(
            reactor,
            AMQP_URL.replace("guest:guest@", "guest:wrong@"),
            5,
            FeedConsumer([], 60, reactor),
            retryPolicy=lambda attempt: 0.05 * attempt,
        )
        service.startService()
        self.addCleanup(service.stopService)

        def refusals() -> List[Any]:
            return [
                event for event in events if "refused the connection" in event.get("log_format", "")
            ]

        yield waitFor(lambda: len(refusals()) >= 3, what="three refused logins")
        self.assertIn("ACCESS_REFUSED", refusals()[0]["reason"])
        self.assertNotIn("wrong", refusals()[0]["broker"])
        # Each refusal lengthens the wait before the next attempt.
        delays = [
            event["delay"] for event in events if "Scheduling retry" in event.get("log_format", "")
        ]
        self.assertEqual(delays[:3], sorted(delays[:3]))
        self.assertLess(delays[0], delays[2])


class TwistdTests(IntegrationTestCase):
    @inlineCallbacks
    def test_twistdDaemonsDeliver(self) -> None:
        """
        C{twistd bugzfeed} and C{twistd bugzfeed-shim}, started as their own
        processes, carry a committed row to a subscribed client, and stop
        cleanly on SIGTERM, the server telling its clients it is going away.
        """
        exchange = self.exchange("simple")
        database = self.database()
        port = freePort()
        server = self.spawnTwistd(
            "bugzfeed",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--amqp",
            AMQP_URL,
            "--feed",
            f"/={exchange}",
        )
        shim = self.spawnTwistd(
            "bugzfeed-shim",
            "--database",
            database.dsn,
            "--amqp",
            AMQP_URL,
            "--exchange",
            exchange,
            "--table",
            database.table,
            "--install-trigger",
        )
        client = yield self.client(port, timeout=30)
        reply = yield client.command({"command": "subscribe", "bugs": [7001]})
        self.assertEqual(reply["bugs"], [7001])
        database.insert(7001, when(1))
        update = yield client.next(timeout=30)
        self.assertEqual((update["bug"], update["when"]), (7001, iso(when(1))))
        yield waitFor(lambda: database.count() == 0, what="the row to be deleted")
        server.transport.signalProcess(signal.SIGTERM)
        code = yield client.whenClosed()
        self.assertEqual(code, 1001, "the server says it is going away")
        shim.transport.signalProcess(signal.SIGTERM)
        for daemon in [server, shim]:
            reason = yield daemon.ended.addTimeout(20, reactor)
            # twistd exits by re-raising the signal that stopped it.
            self.assertIn(
                (reason.exitCode, reason.signal),
                [(0, None), (None, signal.SIGTERM)],
                daemon.output.decode()[-2000:],
            )
            self.assertNotIn(b"Traceback", daemon.output, daemon.output.decode()[-4000:])
