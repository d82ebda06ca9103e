"""
Tests for L{bugzfeed.consumer}'s stream cursor: where each connection
resumes, and what reaches the feed.
"""

from datetime import datetime, timedelta, timezone
from typing import Dict, Optional, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.amqp import BugzfeedAMQFactory
from bugzfeed.consumer import (
    ACK_BATCH,
    CATCH_UP_QUIET,
    PROBE_QUIET,
    FeedConsumer,
    StreamCursor,
    epochOf,
)
from bugzfeed.model import BugUpdate, encodePulseEnvelope
from tests.amqpwire import (
    WireAMQPump,
    bodyFrame,
    headerFrame,
    methodFrame,
    sentArguments,
    sentMethods,
    table,
)
from tests.fakes import RecordingSubscriber, makeFeed

CHANGED = datetime(2014, 4, 3, 21, 13, 45, tzinfo=timezone.utc)


def envelope(bug: int, sent: datetime = CHANGED) -> bytes:
    return encodePulseEnvelope(bug, CHANGED, "exchange/test", sent)


class StreamCursorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(CHANGED.timestamp())
        self.feed = makeFeed(self.clock)
        self.cursor = StreamCursor(
            self.feed, historyWindow=86400, startedAt=CHANGED.timestamp(), clock=self.clock
        )

    def test_firstConnectionStartsAtHistoryWindow(self) -> None:
        """
        Before any message, consuming starts from the history window, as an
        interval RabbitMQ understands.
        """
        self.assertEqual(self.cursor.startOffset(), "86400s")
        self.assertEqual(StreamCursor(self.feed, 0.2, 0, self.clock).startOffset(), "1s")

    def test_reconnectResumesAfterLastHandled(self) -> None:
        """
        After a message, the next connection resumes just past its offset:
        nothing is lost or repeated.
        """
        self.cursor.handle(envelope(1), 41)
        self.cursor.handle(envelope(2), 42)
        self.assertEqual(self.cursor.startOffset(), 43)

    def test_updatesReachFeedWithTheirOffset(self) -> None:
        """
        Each message becomes an update, with its offset as C{seq}, remembered
        and pushed to subscribers.
        """
        subscriber = RecordingSubscriber()
        self.feed.registry.subscribe(subscriber, [7])
        self.cursor.handle(envelope(7), 5)
        expected = BugUpdate(7, datetime(2014, 4, 3, 21, 13, 45), 5)
        self.assertEqual(subscriber.payloads, [expected.toJSON()])
        self.assertEqual(self.feed.history.since([7], datetime(2014, 1, 1)), [expected])

    def test_replayIsRememberedNotPushed(self) -> None:
        """
        Messages sent before the node started rebuild its history without
        being pushed as news; from the first one sent since, everything is
        pushed.
        """
        subscriber = RecordingSubscriber()
        self.feed.registry.subscribe(subscriber, [7])
        old = envelope(7, sent=CHANGED - timedelta(hours=1))
        self.cursor.handle(old, 1)
        self.cursor.handle(envelope(7, sent=CHANGED - timedelta(seconds=6)), 2)
        self.assertEqual((subscriber.payloads, len(self.feed.history)), ([], 2))
        self.assertTrue(self.cursor.replaying)
        # Within the allowed clock skew: news.
        self.cursor.handle(envelope(7, sent=CHANGED - timedelta(seconds=4)), 3)
        self.cursor.handle(old, 4)
        self.assertEqual([m["seq"] for m in subscriber.messages], [3, 4])
        self.assertFalse(self.cursor.replaying)

    def test_malformedMessageSkipped(self) -> None:
        """
        A message that is not a bug envelope is logged and skipped; the
        cursor moves past it so it cannot block the stream.
        """
        self.cursor.handle(b"garbage", 9)
        self.assertEqual((len(self.feed.history), self.cursor.startOffset()), (0, 10))


class FeedConsumerTests(SynchronousTestCase):
    """
    L{FeedConsumer.prepareConnection} against an in-memory broker.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(CHANGED.timestamp())
        self.feeds = [makeFeed(self.clock, "/"), makeFeed(self.clock, "/dev/")]
        self.feeds[1].exchange = "exchange/test/dev"
        self.consumer = FeedConsumer(self.feeds, historyWindow=3600, clock=self.clock)
        self.client = BugzfeedAMQFactory(self.clock).buildProtocol(None)
        self.pump = WireAMQPump()
        self.pump.connect(self.client)
        self.addCleanup(self.pump.loseConnection)

    def brokerAgrees(self, edges: Optional[Dict[int, Tuple[int, int]]] = None) -> None:
        """
        Answer each feed's declarations, probes and consume, as RabbitMQ
        does.

        @param edges: Feed number -> the first and last offsets of its
            stream; by default streams are empty.
        """
        for number, feed in enumerate(self.feeds, start=1):
            broker = self.pump.channel(number)
            broker.channel_open_ok()
            broker.basic_qos_ok()
            broker.exchange_declare_ok()
            broker.queue_declare_ok(queue=feed.stream, message_count=0, consumer_count=0)
            broker.queue_bind_ok()
            probes = [2 * number + 1000, 2 * number + 1001]
            for probe in probes:
                prober = self.pump.channel(probe)
                prober.channel_open_ok()
                prober.basic_qos_ok()
                prober.basic_consume_ok(consumer_tag=f"bugzfeed-probe-{probe}")
            if edges and number in edges:
                first, last = edges[number]
                self.deliver(probes[0], first, envelope(1), 1, f"bugzfeed-probe-{probes[0]}")
                self.deliver(probes[1], last, envelope(2), 1, f"bugzfeed-probe-{probes[1]}")
            self.clock.advance(PROBE_QUIET)
            for probe in probes:
                self.pump.channel(probe).basic_cancel_ok(consumer_tag=f"bugzfeed-probe-{probe}")
            broker.basic_consume_ok(consumer_tag=f"bugzfeed-{number}")

    def deliver(
        self, channel: int, offset: int, body: bytes, deliveryTag: int, tag: str = ""
    ) -> None:
        headers = table(("x-stream-offset", b"l", offset.to_bytes(8, "big", signed=True)))
        self.pump.receive(
            methodFrame(
                self.client,
                channel,
                "basic",
                "deliver",
                consumer_tag=tag or f"bugzfeed-{channel}",
                delivery_tag=deliveryTag,
                exchange="e",
                routing_key="1",
            )
            + headerFrame(channel, len(body), headers)
            + bodyFrame(channel, body)
        )

    def test_declaresStreamBoundToExchangeAndConsumesFromHistory(self) -> None:
        """
        Each feed gets its own channel: a durable topic exchange, a durable
        stream named after it bound with C{#}, a prefetch, and a consume
        from the history window with manual acks.
        """
        d = self.consumer.prepareConnection(self.client)
        self.brokerAgrees()
        self.successResultOf(d)
        self.assertTrue(self.consumer.consuming)
        self.assertEqual(
            sentMethods(self.pump, 2),
            [
                "channel.open",
                "basic.qos",
                "exchange.declare",
                "queue.declare",
                "queue.bind",
                "basic.consume",
            ],
        )
        exchange = sentArguments(self.pump, 2, "exchange.declare")
        self.assertEqual(
            (exchange["exchange"], exchange["type"], exchange["durable"]),
            ("exchange/test/dev", "topic", True),
        )
        declare = sentArguments(self.pump, 2, "queue.declare")
        self.assertEqual(
            (declare["queue"], declare["durable"]), ("bugzfeed.exchange/test/dev", True)
        )
        self.assertEqual(declare["arguments"]["x-queue-type"], "stream")
        bind = sentArguments(self.pump, 2, "queue.bind")
        self.assertEqual(
            (bind["queue"], bind["exchange"], bind["routing_key"]),
            (declare["queue"], "exchange/test/dev", "#"),
        )
        self.assertGreater(sentArguments(self.pump, 2, "basic.qos")["prefetch_count"], 0)
        consume = sentArguments(self.pump, 2, "basic.consume")
        self.assertEqual(
            (consume["no_ack"], consume["arguments"]), (False, {"x-stream-offset": "3600s"})
        )

    def test_deliveryReachesItsFeedAndIsAcked(self) -> None:
        """
        A stream delivery becomes an update of the feed it was consumed for
        (only), and is acked once handed over; a reconnect resumes after it.
        """
        self.consumer.prepareConnection(self.client)
        self.brokerAgrees()
        subscriber, other = RecordingSubscriber(), RecordingSubscriber()
        self.feeds[1].registry.subscribe(subscriber, [7])
        self.feeds[0].registry.subscribe(other, [7])
        self.deliver(2, 2**40, envelope(7), deliveryTag=3)
        self.assertEqual([m["seq"] for m in subscriber.messages], [2**40])
        self.assertEqual(other.payloads, [])
        self.clock.advance(0)
        ack = sentArguments(self.pump, 2, "basic.ack")
        self.assertEqual((ack["delivery_tag"], ack["multiple"]), (3, True))
        self.assertEqual(self.consumer.cursors[1].startOffset(), 2**40 + 1)

    def test_badDeliveryIsAckedAndSkipped(self) -> None:
        """
        A delivery that is no bug envelope is acked and skipped; the
        connection stays up.
        """
        self.consumer.prepareConnection(self.client)
        self.brokerAgrees()
        self.deliver(1, 8, b"\xff not json", deliveryTag=1)
        self.clock.advance(0)
        self.assertEqual(sentArguments(self.pump, 1, "basic.ack")["delivery_tag"], 1)
        self.assertTrue(self.pump.connected)

    def test_acksAreBatched(self) -> None:
        """
        Deliveries are acknowledged together: once per reactor turn, or
        every C{ACK_BATCH} deliveries, whichever comes first, and only after
        they were handed over.
        """
        self.consumer.prepareConnection(self.client)
        self.brokerAgrees()
        for tag in range(1, ACK_BATCH + 3):
            self.deliver(1, tag, envelope(1), deliveryTag=tag)
        acks = lambda: [a for a in sentMethods(self.pump, 1) if a == "basic.ack"]
        self.assertEqual(len(acks()), 1)
        self.assertEqual(sentArguments(self.pump, 1, "basic.ack")["delivery_tag"], ACK_BATCH)
        self.clock.advance(0)
        self.assertEqual(len(acks()), 2)
        self.assertEqual(sentArguments(self.pump, 1, "basic.ack")["delivery_tag"], ACK_BATCH + 2)
        self.assertEqual(len(self.feeds[0].history), ACK_BATCH + 2)

    def test_disconnectStopsConsuming(self) -> None:
        """
        Losing the connection is noticed, so that readiness is honest.
        """
        self.consumer.prepareConnection(self.client)
        self.brokerAgrees()
        self.pump.loseConnection()
        self.assertFalse(self.consumer.consuming)


class CatchingUpTests(SynchronousTestCase):
    """
    How a cursor learns the stream's epoch and end, and when its feed has
    caught up.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(CHANGED.timestamp())
        self.feed = makeFeed(self.clock)
        self.cursor = StreamCursor(self.feed, 86400, CHANGED.timestamp(), self.clock)

    def test_epochFromTheFirstMessage(self) -> None:
        self.cursor.foundEdges((0, b"first"), 9)
        self.assertEqual(self.feed.epoch, epochOf(b"first"))
        self.assertNotEqual(epochOf(b"first"), epochOf(b"other"))

    def test_caughtUpOnceTheTailIsRead(self) -> None:
        """
        Until the stream's last offset (as probed) is read, the feed is
        behind; then caught up.
        """
        self.cursor.foundEdges((0, b"first"), 2)
        self.cursor.consuming()
        self.assertFalse(self.feed.caughtUp)
        self.cursor.handle(envelope(1), 1)
        self.assertFalse(self.feed.caughtUp)
        self.cursor.handle(envelope(1), 2)
        self.assertTrue(self.feed.caughtUp)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_emptyStreamIsCaughtUpAtOnce(self) -> None:
        self.cursor.foundEdges(None, None)
        self.cursor.consuming()
        self.assertTrue(self.feed.caughtUp)
        self.cursor.handle(envelope(1), 0)
        self.assertEqual(self.feed.epoch, epochOf(envelope(1)))

    def test_replayEndsWhenCaughtUp(self) -> None:
        """
        Once the stream is read up to the end it had when the node
        connected, the cursor is no longer replaying (an empty stream at
        once), and what follows is pushed as news even when its sender's
        clock stamped it long before the node started.
        """
        self.cursor.foundEdges(None, None)
        self.cursor.consuming()
        self.assertFalse(self.cursor.replaying)
        self.cursor.handle(envelope(7, sent=CHANGED - timedelta(hours=1)), 0)
        self.assertEqual(self.feed.received, 1)

    def test_nothingInTheWindowStartsHistoryAfterTheTail(self) -> None:
        """
        When everything in the stream is older than the window, nothing is
        delivered: the feed is caught up once that has been quiet a while,
        and cursors at the tail are covered.
        """
        self.cursor.foundEdges((0, b"first"), 41)
        self.cursor.consuming()
        self.clock.advance(CATCH_UP_QUIET)
        self.assertTrue(self.feed.caughtUp)
        self.assertTrue(self.feed.history.covers(41))
        self.assertFalse(self.feed.history.covers(40))

    def test_reconnectingFallsBehindUntilCaughtUpAgain(self) -> None:
        self.cursor.foundEdges((0, b"first"), 1)
        self.cursor.consuming()
        self.cursor.handle(envelope(1), 1)
        self.cursor.stopped()
        self.assertFalse(self.feed.caughtUp)
        self.cursor.foundEdges((0, b"first"), 3)
        self.cursor.consuming()
        self.assertFalse(self.feed.caughtUp)
        self.cursor.handle(envelope(1), 3)
        self.assertTrue(self.feed.caughtUp)

    def test_recreatedStreamForgetsHistory(self) -> None:
        """
        A new first message at an offset not past the old first one: the
        stream was recreated, so the history and cursor are reset and the
        epoch changes.
        """
        self.cursor.foundEdges((0, b"first"), 5)
        self.cursor.handle(envelope(1), 5)
        self.cursor.foundEdges((0, b"new first"), 0)
        self.assertEqual(self.feed.epoch, epochOf(b"new first"))
        self.assertEqual((len(self.feed.history), self.cursor.nextOffset), (0, None))

    def test_truncatedStreamKeepsItsEpoch(self) -> None:
        """
        Retention dropping the oldest messages moves the first offset on:
        same stream, same epoch.
        """
        self.cursor.foundEdges((0, b"first"), 5)
        self.cursor.foundEdges((3, b"third"), 5)
        self.assertEqual(self.feed.epoch, epochOf(b"first"))

    def test_offsetBelowTheResumePointMeansRecreated(self) -> None:
        """
        The broker never delivers below the offset asked for, unless the
        stream is new and shorter: history is forgotten.
        """
        self.cursor.foundEdges(None, None)
        self.cursor.consuming()
        self.cursor.handle(envelope(1), 7)
        self.cursor.stopped()
        self.cursor.consuming()
        self.cursor.handle(envelope(2), 0)
        self.assertEqual([u.seq for u in self.feed.history.after([1, 2], -1)], [0])
        self.assertEqual(self.feed.epoch, epochOf(envelope(2)))
