"""
Tests for L{bugzfeed.metrics} and L{bugzfeed.shimmetrics}: what a scrape
reports, parsed back from the Prometheus text format, for a server and a
shim driven in memory.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Dict, Tuple
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.consumer import FeedConsumer
from bugzfeed.metrics import serverRegistry
from bugzfeed.model import BugUpdate, encodePulseEnvelope
from bugzfeed.shim import PushNotifyShim
from bugzfeed.shimmetrics import shimRegistry
from tests.fakes import FakeChannel, FakePushNotifyTable, RecordingSubscriber, makeFeed

T0 = 1396559626.0  # 2014-04-03T21:13:46Z


def scrape(registry: CollectorRegistry) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """
    @return: Every sample of a scrape, by name and sorted labels.
    """
    text = generate_latest(registry).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class FakeFactory:
    connectionCount = 0


class ServerMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.feed = makeFeed(self.clock, path="/")
        self.dev = makeFeed(self.clock, path="/dev/")
        self.factory = FakeFactory()
        self.consumer = FeedConsumer([self.feed, self.dev], 3600, self.clock)
        self.registry = serverRegistry(self.factory, [self.feed, self.dev], self.consumer)

    def sent(self, bug: int, offset: int, ago: float = 0.0) -> None:
        """Hand the C{/} feed's cursor a stream message sent C{ago} seconds ago."""
        moment = datetime.utcfromtimestamp(self.clock.seconds() - ago)
        body = encodePulseEnvelope(bug, moment, "exchange/test", sent=moment)
        self.consumer.cursors[0].handle(body, offset)

    def test_empty(self) -> None:
        """
        A fresh server reports zeros, is not consuming, and reports no
        stream offset before it has read one.
        """
        samples = scrape(self.registry)
        self.assertEqual(samples[("bugzfeed_connections", ())], 0)
        self.assertEqual(samples[("bugzfeed_consuming", ())], 0)
        self.assertEqual(samples[("bugzfeed_subscribers", (("feed", "/dev/"),))], 0)
        self.assertEqual(samples[("bugzfeed_deliveries_total", (("feed", "/"),))], 0)
        self.assertNotIn(
            ("bugzfeed_stream_offset", (("feed", "/"), ("stream", self.feed.stream))), samples
        )

    def test_liveState(self) -> None:
        """
        Connections, subscriptions, updates received and deliveries are
        read from the live objects at scrape time.
        """
        one, two = RecordingSubscriber(), RecordingSubscriber()
        self.feed.registry.subscribe(one, [1, 2])
        self.feed.registry.subscribe(two, [1])
        self.factory.connectionCount = 3
        self.consumer.consuming = True
        self.sent(1, offset=41, ago=7200)  # history: remembered, not news
        self.sent(1, offset=42)
        self.sent(2, offset=43)
        self.sent(3, offset=44)
        samples = scrape(self.registry)
        root = (("feed", "/"),)
        stream = (("feed", "/"), ("stream", self.feed.stream))
        self.assertEqual(samples[("bugzfeed_connections", ())], 3)
        self.assertEqual(samples[("bugzfeed_consuming", ())], 1)
        self.assertEqual(samples[("bugzfeed_subscribers", root)], 2)
        self.assertEqual(samples[("bugzfeed_subscribed_bugs", root)], 2)
        self.assertEqual(samples[("bugzfeed_updates_received_total", root)], 3)
        self.assertEqual(samples[("bugzfeed_deliveries_total", root)], 3)
        self.assertEqual(samples[("bugzfeed_history_updates", root)], 4)
        self.assertEqual(samples[("bugzfeed_stream_offset", stream)], 44)
        self.assertEqual(samples[("bugzfeed_stream_replaying", stream)], 0)
        self.assertEqual(samples[("bugzfeed_updates_received_total", (("feed", "/dev/"),))], 0)

    def test_parallelWorkAttributes(self) -> None:
        """
        Replays and slow-client closes read attributes that may not exist
        yet: zero without them, their values once set.
        """
        samples = scrape(self.registry)
        recovered = ("bugzfeed_replays_total", (("feed", "/"), ("outcome", "recovered")))
        self.assertEqual(samples[recovered], 0)
        self.assertEqual(samples[("bugzfeed_slow_client_closes_total", ())], 0)
        self.factory.slowClientCloses = 2  # type: ignore[attr-defined]
        # Feed has slots: stand in for one that has the attributes.
        feed = SimpleNamespace(
            path="/",
            registry=self.feed.registry,
            history=[],
            replaysRecovered=5,
            replaysNotRecovered=1,
            replayedUpdates=17,
        )
        samples = scrape(serverRegistry(self.factory, [feed], FeedConsumer([], 0, self.clock)))
        self.assertEqual(samples[("bugzfeed_slow_client_closes_total", ())], 2)
        self.assertEqual(samples[recovered], 5)
        self.assertEqual(
            samples[("bugzfeed_replays_total", (("feed", "/"), ("outcome", "not_recovered")))], 1
        )
        self.assertEqual(samples[("bugzfeed_replayed_updates_total", (("feed", "/"),))], 17)

    def test_registriesAreSeparate(self) -> None:
        """
        Each server has its own registry: two in one process do not clash.
        """
        other = serverRegistry(FakeFactory(), [makeFeed(self.clock)], self.consumer)
        self.feed.receive(BugUpdate(1, datetime(2014, 4, 3), seq=1))
        self.assertEqual(
            scrape(self.registry)[("bugzfeed_updates_received_total", (("feed", "/"),))], 1
        )
        self.assertEqual(scrape(other)[("bugzfeed_updates_received_total", (("feed", "/"),))], 0)


class ShimMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.table = FakePushNotifyTable()
        self.shim = PushNotifyShim(self.table, "exchange/x", self.clock, maxInFlight=10)
        self.channel = FakeChannel()
        self.registry, self.collector = shimRegistry(
            self.shim, self.table, self.clock, ZoneInfo("UTC")
        )

    def refreshAndScrape(self) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
        self.successResultOf(self.collector.refresh())
        return scrape(self.registry)

    def test_backlog(self) -> None:
        """
        Rows pending and the age of the oldest are read from the table at
        each refresh (its C{delta_ts} read in the database's zone); zero
        age when the table is empty.
        """
        now = datetime.utcfromtimestamp(T0)
        self.table.insert(1, 10, now - timedelta(seconds=90))
        self.table.insert(2, 20, now - timedelta(seconds=30))
        samples = self.refreshAndScrape()
        self.assertEqual(samples[("bugzfeed_shim_rows_pending", ())], 2)
        self.assertEqual(samples[("bugzfeed_shim_oldest_pending_row_age_seconds", ())], 90)
        self.table.rows.clear()
        samples = self.refreshAndScrape()
        self.assertEqual(samples[("bugzfeed_shim_rows_pending", ())], 0)
        self.assertEqual(samples[("bugzfeed_shim_oldest_pending_row_age_seconds", ())], 0)

    def test_backlogInDatabaseZone(self) -> None:
        """
        A table written in another zone still gives the right age.
        """
        registry, collector = shimRegistry(
            self.shim, self.table, self.clock, ZoneInfo("Europe/Berlin")
        )
        berlin = datetime.fromtimestamp(T0 - 60, ZoneInfo("Europe/Berlin")).replace(tzinfo=None)
        self.table.insert(1, 10, berlin)
        self.successResultOf(collector.refresh())
        self.assertEqual(scrape(registry)[("bugzfeed_shim_oldest_pending_row_age_seconds", ())], 60)

    def test_backlogLeftOutWhenUnknown(self) -> None:
        """
        Before a refresh succeeds (the database may be down) the backlog is
        left out rather than reported stale.
        """
        self.table.insert(1, 10, datetime.utcfromtimestamp(T0))
        self.refreshAndScrape()
        self.table.backlog = lambda: Deferred()  # type: ignore[method-assign]
        self.collector.refresh()
        samples = scrape(self.registry)
        self.assertNotIn(("bugzfeed_shim_rows_pending", ()), samples)
        self.assertEqual(samples[("bugzfeed_shim_publishing", ())], 0)

    def test_publishConfirmAndRepublish(self) -> None:
        """
        Published, deleted and republished rows are counted; each confirm's
        delay goes into the histogram.
        """
        for rowId in (1, 2, 3):
            self.table.insert(rowId, rowId, datetime.utcfromtimestamp(T0))
        self.shim.publisherReady(self.channel)
        self.clock.advance(0.003)
        self.shim.confirmed(1, False, True)
        self.clock.advance(0.3)
        self.shim.confirmed(2, False, False)  # nacked: stays, goes out again
        self.shim.publisherLost()  # row 3 unconfirmed: stays too
        samples = scrape(self.registry)
        self.assertEqual(samples[("bugzfeed_shim_rows_published_total", ())], 3)
        self.assertEqual(samples[("bugzfeed_shim_rows_deleted_total", ())], 1)
        self.assertEqual(samples[("bugzfeed_shim_rows_republished_total", ())], 2)
        self.assertEqual(samples[("bugzfeed_shim_confirm_latency_seconds_count", ())], 2)
        bucket = "bugzfeed_shim_confirm_latency_seconds_bucket"
        self.assertEqual(samples[(bucket, (("le", "0.005"),))], 1)
        self.assertEqual(samples[(bucket, (("le", "0.25"),))], 1)
        self.assertEqual(samples[(bucket, (("le", "0.5"),))], 2)
        self.assertAlmostEqual(
            samples[("bugzfeed_shim_confirm_latency_seconds_sum", ())], 0.306, places=6
        )
        self.shim.publisherReady(FakeChannel())
        self.assertEqual(scrape(self.registry)[("bugzfeed_shim_rows_published_total", ())], 5)
        self.assertEqual(scrape(self.registry)[("bugzfeed_shim_publishing", ())], 1)
        self.flushLoggedErrors()
