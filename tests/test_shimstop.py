"""
Tests for how the shim stops and says so: confirms settled and abandoned,
and the readiness the systemd notifier waits for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, List

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.shim import DatabaseService, PushNotifyShim
from tests.fakes import FakeChannel, FakePushNotifyTable

T1 = datetime(2026, 12, 3, 19, 0, 0)


class FakeDetector:
    def removeRecoveryHandler(self, handler: Any) -> None:
        pass


class FakeConnection:
    """Just what stopping touches of a txpostgres connection."""

    def __init__(self) -> None:
        self.detector = FakeDetector()
        self.closed = False

    def close(self) -> None:
        self.closed = True


class ShimStopTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.table = FakePushNotifyTable()
        self.shim = PushNotifyShim(self.table, "exchange/x", self.clock, maxInFlight=3)
        self.connection = FakeConnection()
        self.database = DatabaseService(
            self.connection, "dbname=x", self.shim, self.table, self.clock, pollInterval=1.0
        )
        self.database.running = True
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for rowId in range(1, 6):
            self.table.insert(rowId, rowId, T1)
        self.channel = FakeChannel()

    def stopped(self) -> Dict[str, Any]:
        [event] = [e for e in self.events if "Stopped publishing" in e.get("log_format", "")]
        return event

    def texts(self) -> List[str]:
        return [e["log_format"] for e in self.events if "log_format" in e]

    def test_whenPublishing(self) -> None:
        """
        The shim is publishing once a confirm-mode channel is handed to it,
        and not after it is lost.
        """
        d = self.shim.whenPublishing()
        self.assertNoResult(d)
        self.assertFalse(self.shim.publishing)
        self.shim.publisherReady(self.channel)
        self.successResultOf(d)
        self.assertTrue(self.shim.publishing)
        self.successResultOf(self.shim.whenPublishing())
        self.shim.publisherLost()
        self.assertFalse(self.shim.publishing)

    def test_confirmsSettled(self) -> None:
        """
        Stopping says how many confirms it waits for, then how many settled
        and how long that took.
        """
        self.shim.publisherReady(self.channel)
        self.assertEqual(self.shim.inFlight, 3)
        d = self.database.stopService()
        self.assertIn(
            "Stopping: publishing nothing more, letting {count} in-flight confirms settle",
            self.texts(),
        )
        self.clock.advance(2)
        self.shim.confirmed(3, True, True)
        self.successResultOf(d)
        event = self.stopped()
        self.assertEqual((event["settled"], event["abandoned"], event["seconds"]), (3, 0, 2.0))
        self.assertTrue(self.connection.closed)

    def test_confirmsAbandonedWithTheConnection(self) -> None:
        """
        Confirms lost with the broker connection count as abandoned.
        """
        self.shim.publisherReady(self.channel)
        d = self.database.stopService()
        self.shim.confirmed(1, False, True)
        self.shim.publisherLost()
        self.successResultOf(d)
        event = self.stopped()
        self.assertEqual((event["settled"], event["abandoned"]), (1, 2))
        self.assertEqual(sorted(self.table.rows), [2, 3, 4, 5])

    def test_confirmsAbandonedAtTheTimeout(self) -> None:
        """
        Confirms still missing when the stop timeout passes count as
        abandoned; their rows stay in the table.
        """
        self.shim.publisherReady(self.channel)
        d = self.database.stopService()
        self.shim.confirmed(1, False, True)
        self.clock.advance(DatabaseService.stopTimeout)
        self.successResultOf(d)
        event = self.stopped()
        self.assertEqual((event["settled"], event["abandoned"]), (1, 2))
        self.assertEqual(sorted(self.table.rows), [2, 3, 4, 5])
