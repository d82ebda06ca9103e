"""
Tests for L{bugzfeed.shim}'s logic, over an in-memory table and channel.
"""

from datetime import datetime
from zoneinfo import ZoneInfo

import psycopg2
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from txamqp.content import Content

from bugzfeed.shim import PushNotifyShim
from tests.fakes import FakeChannel, FakePushNotifyTable

T1 = datetime(2014, 4, 3, 21, 13, 45)
T2 = datetime(2014, 4, 3, 21, 14, 0)


class FakeReturn:
    """Just what the shim reads of a returned message."""

    def __init__(self, messageId: object) -> None:
        self.content = Content(b"", properties={"message-id": messageId})


class PushNotifyShimTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1396559626)
        self.table = FakePushNotifyTable()
        self.shim = PushNotifyShim(self.table, "exchange/x", self.clock, batchSize=2, maxInFlight=3)
        self.channel = FakeChannel()

    def test_nothingHappensWithoutBroker(self) -> None:
        """
        Without a channel, a drain reads nothing and publishes nothing.
        """
        self.table.insert(1, 10, T1)
        self.shim.drain()
        self.assertEqual((self.table.fetches, self.channel.published), ([], []))
        self.assertTrue(self.shim.idle)

    def test_publishesRowsInIdOrderAsPulseMessages(self) -> None:
        """
        Rows are read in id order, in batches, and published persistent and
        mandatory, keyed by bug, with the row id as message-id.
        """
        for rowId, bug in [(3, 30), (1, 10), (2, 20)]:
            self.table.insert(rowId, bug, T1)
        self.shim.publisherReady(self.channel)
        self.assertEqual([m["routing_key"] for m in self.channel.published], ["10", "20", "30"])
        first = self.channel.published[0]
        self.assertEqual(
            (first["exchange"], first["mandatory"], first["content"].properties),
            (
                "exchange/x",
                True,
                {"content-type": "application/json", "delivery-mode": 2, "message-id": "1"},
            ),
        )
        self.assertEqual(
            self.channel.bodies[0]["payload"], {"id": 10, "delta_ts": "2014-04-03T21:13:45+00:00"}
        )
        self.assertEqual(self.channel.bodies[0]["_meta"]["sent"], "2014-04-03T21:13:46+00:00")
        self.assertEqual(self.table.fetches[:2], [(0, 2), (2, 2)])

    def test_deletesOnlyAfterConfirm(self) -> None:
        """
        A row stays in the table until the broker acks it.
        """
        self.table.insert(1, 10, T1)
        self.shim.publisherReady(self.channel)
        self.assertIn(1, self.table.rows)
        self.shim.confirmed(1, False, True)
        self.assertEqual(self.table.rows, {})
        self.assertEqual(self.shim.deleted, 1)
        self.assertTrue(self.shim.idle)

    def test_rowChangedInFlightIsKeptAndRepublished(self) -> None:
        """
        A row updated in place while in flight is not deleted by the old
        version's confirm; the next drain publishes the new time.
        """
        self.table.insert(1, 10, T1)
        self.shim.publisherReady(self.channel)
        self.table.insert(1, 10, T2)
        self.shim.confirmed(1, False, True)
        self.assertEqual(self.table.rows, {1: (10, T2)})
        self.shim.drain()
        self.assertEqual(
            [body["payload"]["delta_ts"] for body in self.channel.bodies],
            ["2014-04-03T21:13:45+00:00", "2014-04-03T21:14:00+00:00"],
        )
        self.shim.confirmed(2, False, True)
        self.assertEqual(self.table.rows, {})

    def test_inFlightRowsAreNotRepublished(self) -> None:
        """
        Another drain while a row awaits its confirm does not publish it
        again.
        """
        self.table.insert(1, 10, T1)
        self.shim.publisherReady(self.channel)
        self.shim.drain()
        self.shim.drain()
        self.assertEqual(len(self.channel.published), 1)

    def test_rowsBeingDeletedAreNotRepublished(self) -> None:
        """
        A confirmed row whose delete is still running is not published
        again.
        """
        self.table.holdDeletes = True
        self.table.insert(1, 10, T1)
        self.shim.publisherReady(self.channel)
        self.shim.confirmed(1, False, True)
        self.shim.drain()
        self.assertEqual(len(self.channel.published), 1)
        d, _ = self.table.heldDeletes[0]
        d.callback(None)
        self.assertEqual(self.table.rows, {})

    def test_nackedAndReturnedRowsStay(self) -> None:
        """
        Rows the broker refuses or returns stay, and are published again on
        the next wake-up.
        """
        self.table.insert(1, 10, T1)
        self.table.insert(2, 20, T1)
        self.shim.publisherReady(self.channel)
        self.shim.returned(FakeReturn("1"))
        self.shim.confirmed(1, False, True)
        self.shim.confirmed(2, False, False)
        self.assertEqual(sorted(self.table.rows), [1, 2])
        self.assertEqual(self.shim.deleted, 0)
        self.shim.drain()
        self.assertEqual(len(self.channel.published), 4)
        self.flushLoggedErrors()

    def test_malformedReturnIgnored(self) -> None:
        """
        A returned message without a usable row id is ignored.
        """
        for messageId in [None, "abc"]:
            self.shim.returned(FakeReturn(messageId))

    def test_windowBoundsRowsInFlight(self) -> None:
        """
        At most C{maxInFlight} rows await confirms; each confirm lets the
        drain go on.
        """
        for rowId in range(1, 8):
            self.table.insert(rowId, rowId, T1)
        self.shim.publisherReady(self.channel)
        self.assertEqual(len(self.channel.published), 3)
        self.shim.confirmed(2, True, True)
        self.assertEqual(len(self.channel.published), 5)
        self.shim.confirmed(5, True, True)
        self.assertEqual(len(self.channel.published), 7)
        self.shim.confirmed(7, True, True)
        self.assertEqual(self.table.rows, {})
        self.assertTrue(self.shim.idle)

    def test_windowCountsRowsAwaitingTheirDelete(self) -> None:
        """
        A confirmed row still counts against C{maxInFlight} until it is
        deleted: published but not deleted is what a crash publishes again,
        so that stays bounded.
        """
        for rowId in range(1, 8):
            self.table.insert(rowId, rowId, T1)
        self.table.holdDeletes = True
        self.shim.publisherReady(self.channel)
        self.shim.confirmed(3, True, True)
        self.assertEqual(len(self.channel.published), 3)
        # Deleted two at a time (the batch size): each delete frees slots.
        self.table.heldDeletes.pop(0)[0].callback(None)
        self.assertEqual(len(self.channel.published), 5)
        self.table.heldDeletes.pop(0)[0].callback(None)
        self.assertEqual(len(self.channel.published), 6)

    def test_lostChannelKeepsRowsAndRepublishes(self) -> None:
        """
        Unconfirmed rows stay in the table when the channel goes, and are
        published again on the next one (at least once).
        """
        for rowId in range(1, 6):
            self.table.insert(rowId, rowId, T1)
        self.shim.publisherReady(self.channel)
        self.shim.confirmed(1, False, True)
        self.shim.publisherLost()
        self.assertEqual(sorted(self.table.rows), [2, 3, 4, 5])
        self.assertTrue(self.shim.idle)
        second = FakeChannel()
        self.shim.publisherReady(second)
        self.assertEqual([m["routing_key"] for m in second.published], ["2", "3", "4"])
        self.shim.confirmed(3, True, True)
        self.shim.confirmed(4, True, True)
        self.assertEqual(self.table.rows, {})

    def test_confirmFromOldChannelAfterLossIgnored(self) -> None:
        """
        After the channel is lost, nothing it published can be deleted.
        """
        self.table.insert(1, 10, T1)
        self.shim.publisherReady(self.channel)
        self.shim.publisherLost()
        self.shim.confirmed(1, False, True)
        self.assertEqual(sorted(self.table.rows), [1])

    def test_rowsArrivingDuringDrainAreDrained(self) -> None:
        """
        A wake-up during a drain causes another pass, so rows inserted behind
        the read position are not left for the next poll.
        """
        self.table.insert(1, 1, T1)
        self.shim.maxInFlight = 1
        self.shim.publisherReady(self.channel)
        self.table.insert(2, 2, T1)
        self.shim.drain()
        self.shim.confirmed(1, False, True)
        self.shim.confirmed(2, False, True)
        self.assertEqual(self.table.rows, {})

    def test_fetchFailureIsLoggedAndRetried(self) -> None:
        """
        A failed read is logged, and the shim says it cannot read; the next
        wake-up reads again.
        """
        self.table.insert(1, 1, T1)
        self.table.failNextFetch = RuntimeError("connection lost")
        self.shim.publisherReady(self.channel)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(self.shim.idle)
        self.assertFalse(self.shim.reading)  # so the shim is not ready
        self.shim.drain()
        self.assertEqual(len(self.channel.published), 1)
        self.assertTrue(self.shim.reading)

    def test_repeatedFetchFailuresLoggedOnce(self) -> None:
        """
        While the database stays down, only the first failed read is logged.
        """
        self.shim.publisherReady(self.channel)
        for _ in range(3):
            self.table.failNextFetch = RuntimeError("connection lost")
            self.shim.drain()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.shim.drain()
        self.table.failNextFetch = RuntimeError("connection lost again")
        self.shim.drain()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_databaseErrorsLoggedWithoutTraceback(self) -> None:
        """
        A lost database connection is a warning with PostgreSQL's reason,
        not a traceback.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.shim.publisherReady(self.channel)
        self.table.failNextFetch = psycopg2.OperationalError("server closed the connection")
        self.shim.drain()
        self.assertEqual(self.flushLoggedErrors(), [])
        [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(warning["error"], "server closed the connection")

    def test_deleteFailureKeepsRowsForRepublishing(self) -> None:
        """
        If deleting confirmed rows fails they stay, and go out again: more
        than once, never lost.
        """
        self.table.holdDeletes = True
        self.table.insert(1, 1, T1)
        self.shim.publisherReady(self.channel)
        self.shim.confirmed(1, False, True)
        d, _ = self.table.heldDeletes[0]
        d.errback(RuntimeError("database gone"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.shim.drain()
        self.assertEqual(len(self.channel.published), 2)

    def test_databaseTimezone(self) -> None:
        """
        C{delta_ts} is read in the database's zone and published in UTC.
        """
        shim = PushNotifyShim(self.table, "x", self.clock, dbTimezone=ZoneInfo("Europe/Berlin"))
        self.table.insert(1, 1, datetime(2014, 7, 1, 12, 0, 0))
        shim.publisherReady(self.channel)
        self.assertEqual(self.channel.bodies[0]["payload"]["delta_ts"], "2014-07-01T10:00:00+00:00")

    def test_whenIdle(self) -> None:
        """
        C{whenIdle} waits for confirms to settle.
        """
        self.table.insert(1, 1, T1)
        self.shim.publisherReady(self.channel)
        d = self.shim.whenIdle()
        self.assertNoResult(d)
        self.shim.confirmed(1, False, True)
        self.successResultOf(d)

    def test_stopPublishesNothingMoreAndWaitsForConfirms(self) -> None:
        """
        Stopping publishes no further row, even one waiting for the window,
        and fires once what is in flight is confirmed and deleted.
        """
        for rowId in range(1, 6):
            self.table.insert(rowId, rowId, T1)
        self.shim.publisherReady(self.channel)
        self.assertEqual(len(self.channel.published), 3)
        d = self.shim.stop()
        self.shim.drain()
        self.assertNoResult(d)
        self.shim.confirmed(3, True, True)
        self.successResultOf(d)
        self.assertEqual(len(self.channel.published), 3)
        self.assertEqual(sorted(self.table.rows), [4, 5])
