"""
Tests for L{bugzfeed.outbox}: back-pressure and coalescing for one client.
"""

import json
from datetime import datetime
from typing import List

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from bugzfeed.model import BugUpdate
from bugzfeed.outbox import Outbox

WHEN = datetime(2014, 4, 3, 21, 13, 45)


def update(bug: int, seq: int) -> BugUpdate:
    return BugUpdate(bug, WHEN, seq)


class OutboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.sent: List[bytes] = []
        self.closedBecause: List[str] = []
        self.incoming = StringTransport()
        self.outbox = Outbox(
            self.sent.append,
            self.closedBecause.append,
            self.clock,
            maxPending=3,
            slowClientTimeout=30,
            incoming=self.incoming,
        )

    def push(self, bug: int, seq: int) -> None:
        self.outbox.push(update(bug, seq), update(bug, seq).toJSON())

    def sentSeqs(self) -> List[int]:
        return [json.loads(payload)["seq"] for payload in self.sent]

    def test_isAPushProducer(self) -> None:
        verifyObject(IPushProducer, self.outbox)

    def test_sendsAtOnceWhileReading(self) -> None:
        """
        While the client reads, every update is sent at once, none dropped.
        """
        for seq in range(3):
            self.push(1, seq)
        self.assertEqual(self.sentSeqs(), [0, 1, 2])

    def test_pausedKeepsNewestPerBugAndResumesInStreamOrder(self) -> None:
        """
        While paused, only the newest update of each bug is kept; on resume
        they are sent oldest first.
        """
        self.outbox.pauseProducing()
        self.push(1, 10)
        self.push(2, 11)
        self.push(1, 12)
        self.push(3, 13)
        self.assertEqual((self.sent, len(self.outbox), self.outbox.coalesced), ([], 3, 1))
        self.outbox.resumeProducing()
        self.assertEqual(self.sentSeqs(), [11, 12, 13])
        self.assertEqual(len(self.outbox), 0)

    def test_olderUpdateDoesNotReplaceNewer(self) -> None:
        """
        A replayed (older) update of a bug does not displace a newer one
        already kept.
        """
        self.outbox.pauseProducing()
        self.push(1, 12)
        self.push(1, 10)
        self.outbox.resumeProducing()
        self.assertEqual(self.sentSeqs(), [12])

    def test_pausingAgainWhileFlushingKeepsTheRest(self) -> None:
        """
        If the transport fills up again while kept updates are flushed, the
        rest stay kept.
        """
        self.outbox.pauseProducing()
        self.push(1, 1)
        self.push(2, 2)
        sent: List[bytes] = []

        def sendThenPause(payload: bytes) -> None:
            sent.append(payload)
            self.outbox.pauseProducing()

        self.outbox._send = sendThenPause  # type: ignore[method-assign]
        self.outbox.resumeProducing()
        self.assertEqual((len(sent), len(self.outbox)), (1, 1))

    def test_tooManyBugsPendingCloses(self) -> None:
        """
        Falling behind on more bugs than allowed gives up on the client and
        frees what it held.
        """
        self.outbox.pauseProducing()
        for bug in range(4):
            self.push(bug, bug)
        self.assertEqual(len(self.closedBecause), 1)
        self.assertIn("more than 3 bugs", self.closedBecause[0])
        self.assertEqual((len(self.outbox), self.clock.getDelayedCalls()), (0, []))
        self.push(9, 9)
        self.assertEqual(len(self.outbox), 0)

    def test_pausedTooLongCloses(self) -> None:
        """
        A client that reads nothing for C{slowClientTimeout} is given up on;
        one that resumes in time is not.
        """
        self.outbox.pauseProducing()
        self.clock.advance(29)
        self.outbox.resumeProducing()
        self.clock.advance(100)
        self.assertEqual(self.closedBecause, [])
        self.outbox.pauseProducing()
        self.clock.advance(30)
        self.assertEqual(len(self.closedBecause), 1)
        self.assertIn("30 s", self.closedBecause[0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_readsNothingWhilePaused(self) -> None:
        """
        While paused, the client's commands and pings are not read: their
        replies could only pile up behind its unread updates.  Reading
        resumes once everything kept has been sent.
        """
        self.assertEqual(self.incoming.producerState, "producing")
        self.outbox.pauseProducing()
        self.assertEqual(self.incoming.producerState, "paused")
        self.push(1, 1)

        def sendFillingUp(payload: bytes) -> None:
            self.sent.append(payload)
            self.outbox.pauseProducing()

        self.outbox._send = sendFillingUp  # the transport fills up again
        self.outbox.resumeProducing()
        self.assertEqual(self.incoming.producerState, "paused")
        self.outbox._send = self.sent.append
        self.outbox.resumeProducing()
        self.assertEqual(self.incoming.producerState, "producing")

    def test_givingUpReadsAgain(self) -> None:
        """
        A client given up on is read again, so that it can answer the close.
        """
        self.outbox.pauseProducing()
        self.clock.advance(30)
        self.assertEqual(len(self.closedBecause), 1)
        self.assertEqual(self.incoming.producerState, "producing")

    def test_stopProducingForgetsEverything(self) -> None:
        self.outbox.pauseProducing()
        self.push(1, 1)
        self.outbox.stopProducing()
        self.assertEqual((len(self.outbox), self.clock.getDelayedCalls()), (0, []))
        self.outbox.resumeProducing()
        self.assertEqual(self.sent, [])
