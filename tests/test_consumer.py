"""
Tests for L{bugzfeed.consumer}'s stream cursor: where each connection
resumes, and what reaches the feed.
"""

from datetime import datetime, timezone

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.consumer import StreamCursor
from bugzfeed.model import BugUpdate, encodePulseEnvelope
from tests.fakes import RecordingSubscriber, makeFeed

CHANGED = datetime(2014, 4, 3, 21, 13, 45, tzinfo=timezone.utc)


def envelope(bug: int) -> bytes:
    return encodePulseEnvelope(bug, CHANGED, "exchange/test", CHANGED)


class StreamCursorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(CHANGED.timestamp())
        self.feed = makeFeed(self.clock)
        self.cursor = StreamCursor(self.feed, historyWindow=86400)

    def test_firstConnectionStartsAtHistoryWindow(self) -> None:
        """
        Before any message, consuming starts from the history window, as an
        interval RabbitMQ understands.
        """
        self.assertEqual(self.cursor.startOffset(), "86400s")
        self.assertEqual(StreamCursor(self.feed, 0.2).startOffset(), "1s")

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

    def test_malformedMessageSkipped(self) -> None:
        """
        A message that is not a bug envelope is logged and skipped; the
        cursor moves past it so it cannot block the stream.
        """
        self.cursor.handle(b"garbage", 9)
        self.assertEqual((len(self.feed.history), self.cursor.startOffset()), (0, 10))
