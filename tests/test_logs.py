"""
Tests for L{bugzfeed.logs}: events as JSON records, and real daemons
logging JSON lines with no password in them.
"""

from __future__ import annotations

import io
import json
import signal
import sys
from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import ILogObserver, Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from bugzfeed.logs import JSONLinesObserver, eventAsRecord, jsonObserver
from tests.integration import (
    AMQP_URL,
    PG_HOST,
    PG_USER,
    TEST_DATABASE,
    IntegrationTestCase,
    freePort,
    waitFor,
)


def logged(**kwargs: Any) -> List[dict]:
    """
    @return: What one C{Logger.info} call makes, as records.
    """
    publisher = LogPublisher()
    events: List[dict] = []
    publisher.addObserver(events.append)
    Logger(namespace="bugzfeed.test", observer=publisher).info(**kwargs)
    return [eventAsRecord(event) for event in events]


class EventAsRecordTests(SynchronousTestCase):
    def test_fieldsTimeLevelNamespaceText(self) -> None:
        """
        A record carries the time in UTC, the level's name, the namespace,
        the formatted text and the event's own fields.
        """
        [record] = logged(format="Subscribed {peer} to {bugs}", peer="tcp:1.2.3.4", bugs=[1, 2])
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["namespace"], "bugzfeed.test")
        self.assertEqual(record["text"], "Subscribed tcp:1.2.3.4 to [1, 2]")
        self.assertEqual((record["peer"], record["bugs"]), ("tcp:1.2.3.4", [1, 2]))
        self.assertRegex(record["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertEqual(json.loads(json.dumps(record)), record)

    def test_timeIsUTC(self) -> None:
        """
        C{time} is the event's C{log_time} in UTC.
        """
        record = eventAsRecord({"log_time": 0.25, "log_level": LogLevel.warn, "log_format": "x"})
        self.assertEqual((record["time"], record["level"]), ("1970-01-01T00:00:00.250000Z", "warn"))

    def test_unserializableFieldsLeftOut(self) -> None:
        """
        Fields JSON cannot hold (objects, NaN, keys that are not strings)
        are left out of the record; the text still shows them.
        """
        thing = object()
        [record] = logged(
            format="{thing} {ratio} {table}",
            thing=thing,
            ratio=float("nan"),
            table={1: "one"},
            count=3,
        )
        self.assertEqual(set(record) - {"time", "level", "namespace", "text"}, {"count"})
        self.assertIn(repr(thing), record["text"])
        json.dumps(record, allow_nan=False)

    def test_fieldsDoNotOverrideTheRecord(self) -> None:
        """
        An event field named like a record key does not replace it.
        """
        [record] = logged(format="hello", text="not the text", namespace="not the namespace")
        self.assertEqual((record["text"], record["namespace"]), ("hello", "bugzfeed.test"))

    def test_failureHasItsTraceback(self) -> None:
        """
        A logged failure comes with its traceback.
        """
        publisher = LogPublisher()
        events: List[dict] = []
        publisher.addObserver(events.append)
        try:
            1 / 0
        except ZeroDivisionError:
            Logger(observer=publisher).failure("Dividing failed", Failure())
        [record] = [eventAsRecord(event) for event in events]
        self.assertEqual(record["level"], "critical")
        self.assertIn("ZeroDivisionError", record["traceback"])
        self.assertEqual(record["text"], "Dividing failed")


class JSONLinesObserverTests(SynchronousTestCase):
    def test_oneLineEach(self) -> None:
        """
        Each event is one line of JSON, flushed at once.
        """
        output = io.StringIO()
        observer = JSONLinesObserver(output)
        verifyObject(ILogObserver, observer)
        observer({"log_format": "one\ntwo", "log_level": LogLevel.info, "log_time": 1.0})
        observer({"log_format": "three", "log_level": LogLevel.error, "log_time": 2.0})
        lines = output.getvalue().splitlines()
        self.assertEqual([json.loads(line)["text"] for line in lines], ["one\ntwo", "three"])

    def test_factoryWritesToStandardOutput(self) -> None:
        """
        L{jsonObserver}, the factory for C{twistd --logger}, writes to the
        standard output of the moment it is called.
        """
        output = io.StringIO()
        self.patch(sys, "stdout", output)
        observer = jsonObserver()
        self.patch(sys, "stdout", io.StringIO())
        observer({"log_format": "hello", "log_level": LogLevel.info, "log_time": 1.0})
        self.assertEqual(json.loads(output.getvalue())["text"], "hello")


class JSONLogsFromTwistdTests(IntegrationTestCase):
    """
    Real daemons, told passwords, logging JSON lines.
    """

    AMQP_SECRET = "amqp-s3cret-pw"
    DATABASE_SECRET = "db-s3cret-pw"

    def spawn(self, *argv: str) -> Any:
        return self.spawnTwistd(*argv, logging=("--logger=bugzfeed.logs.jsonObserver",))

    def records(self, daemon: Any) -> List[dict]:
        # The last line may still be on its way.
        lines = daemon.output.decode("utf-8").split("\n")[:-1]
        return [json.loads(line) for line in lines]

    def refusedBroker(self) -> str:
        user, _, rest = AMQP_URL.split("://", 1)[1].partition(":")
        host = rest.split("@", 1)[1]
        return f"amqp://{user}:{self.AMQP_SECRET}@{host}"

    @inlineCallbacks
    def stopAndCheck(self, daemon: Any, *expected: str) -> Any:
        """
        Wait for the C{expected} texts, stop the daemon, and check that its
        whole output is JSON lines without a password.
        """

        def seen() -> bool:
            texts = " ".join(record["text"] for record in self.records(daemon))
            return all(text in texts for text in expected)

        yield waitFor(seen, timeout=30, what=" and ".join(expected))
        daemon.transport.signalProcess(signal.SIGTERM)
        yield daemon.ended.addTimeout(20, reactor)
        output = daemon.output.decode("utf-8")
        self.assertTrue(output.endswith("\n"))
        records = self.records(daemon)
        for record in records:
            self.assertEqual(
                set(record) & {"time", "level", "namespace", "text"},
                {"time", "level", "namespace", "text"},
            )
        self.assertIn("Server Shut Down.", [record["text"] for record in records])
        for secret in [self.AMQP_SECRET, self.DATABASE_SECRET]:
            self.assertNotIn(secret, output)
        return records

    @inlineCallbacks
    def test_serverLogsNoPassword(self) -> None:
        """
        C{twistd bugzfeed}, given a broker URL whose password the broker
        refuses, logs the refusals (and everything else) as JSON lines
        without the password.
        """
        daemon = self.spawn(
            "bugzfeed",
            "--listen",
            f"tcp:{freePort()}:interface=127.0.0.1",
            "--amqp",
            self.refusedBroker(),
            "--feed",
            f"/={self.exchange('simple')}",
        )
        records = yield self.stopAndCheck(daemon, "refused the connection", "Scheduling retry")
        [starting] = [r for r in records if r["namespace"] == "bugzfeed.tap"]
        self.assertIn(":***@", starting["amqp"])

    @inlineCallbacks
    def test_shimLogsNoPassword(self) -> None:
        """
        C{twistd bugzfeed-shim}, given a database URL and a broker URL with
        passwords, logs as JSON lines without either.
        """
        database = self.database()
        daemon = self.spawn(
            "bugzfeed-shim",
            "--database",
            f"postgresql://{PG_USER}:{self.DATABASE_SECRET}@{PG_HOST}/{TEST_DATABASE}",
            "--amqp",
            self.refusedBroker(),
            "--exchange",
            self.exchange("simple"),
            "--table",
            database.table,
        )
        records = yield self.stopAndCheck(
            daemon, "refused the connection", "Connected to PostgreSQL"
        )
        [starting] = [r for r in records if r["namespace"] == "bugzfeed.shimtap"]
        self.assertIn(":***@", starting["database"])
