"""
Tests for L{bugzfeed.history}.
"""

from datetime import datetime, timedelta

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.history import UpdateHistory
from bugzfeed.model import BugUpdate

NOW = datetime(2014, 4, 4, 12, 0, 0)


class UpdateHistoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance((NOW - datetime(1970, 1, 1)).total_seconds())

    def test_sinceFiltersByBugAndTime(self) -> None:
        """
        C{since} returns the newest update of each requested bug changed at
        or after the time, oldest first.
        """
        history = UpdateHistory(self.clock, 3600, 100)
        for seq, (bug, minutes) in enumerate([(1, 50), (2, 40), (1, 30), (1, 10), (3, 5)]):
            history.add(BugUpdate(bug, NOW - timedelta(minutes=minutes), seq))
        found = history.since([1, 3], NOW - timedelta(minutes=30))
        self.assertEqual([(u.bug, u.seq) for u in found], [(1, 3), (3, 4)])
        self.assertEqual(history.since([2], NOW - timedelta(minutes=30)), [])

    def test_boundedByCount(self) -> None:
        """
        At most C{maxCount} updates are kept: the oldest go first, and their
        bugs' index entries with them.
        """
        history = UpdateHistory(self.clock, 3600, 3)
        for seq in range(5):
            history.add(BugUpdate(seq + 1, NOW, seq))
        self.assertEqual(len(history), 3)
        self.assertEqual([u.seq for u in history.since(range(1, 6), NOW)], [2, 3, 4])
        self.assertEqual(sorted(history._byBug), [3, 4, 5])

    def test_boundedByWindow(self) -> None:
        """
        Updates older than the window are forgotten as time passes.
        """
        history = UpdateHistory(self.clock, 600, 100)
        history.add(BugUpdate(1, NOW - timedelta(seconds=500), 1))
        history.add(BugUpdate(1, NOW, 2))
        self.assertEqual(len(history), 2)
        self.clock.advance(200)
        self.assertEqual([u.seq for u in history.since([1], NOW - timedelta(days=1))], [2])
        self.clock.advance(600)
        self.assertEqual(history.since([1], NOW - timedelta(days=1)), [])
        self.assertEqual((len(history), history._byBug), (0, {}))

    def test_zeroCountRemembersNothing(self) -> None:
        """
        A count of zero switches history off.
        """
        history = UpdateHistory(self.clock, 600, 0)
        history.add(BugUpdate(1, NOW, 1))
        self.assertEqual(len(history), 0)


class ExactResumeTests(SynchronousTestCase):
    """
    What L{UpdateHistory} knows of stream offsets, for resumes with
    C{after}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance((NOW - datetime(1970, 1, 1)).total_seconds())
        self.history = UpdateHistory(self.clock, 3600, 3)

    def test_afterReturnsEachBugsNewestUpdateInStreamOrder(self) -> None:
        """
        After a cursor: the newest update of each bug that changed since,
        in stream order (12 supersedes 10).
        """
        for seq, bug in [(10, 1), (11, 2), (12, 1)]:
            self.history.add(BugUpdate(bug, NOW, seq))
        self.assertEqual([u.seq for u in self.history.after([1, 2], 10)], [11, 12])
        self.assertEqual([u.seq for u in self.history.after([1, 2], 9)], [11, 12])
        self.assertEqual([u.seq for u in self.history.after([1, 2], 11)], [12])
        self.assertEqual(self.history.after([1, 2], 12), [])
        self.assertEqual((self.history.oldest, self.history.latest), (10, 12))

    def test_coversFromJustBeforeTheOldest(self) -> None:
        """
        A cursor is covered when every offset after it is remembered: from
        one before the oldest on.
        """
        self.assertFalse(self.history.covers(0))
        self.history.add(BugUpdate(1, NOW, 10))
        self.assertEqual(
            [self.history.covers(c) for c in (8, 9, 10, 11)], [False, True, True, True]
        )

    def test_forgettingMovesOldest(self) -> None:
        """
        Past C{maxCount}, the oldest update is forgotten and cursors before
        it are no longer covered.
        """
        for seq in range(10, 14):
            self.history.add(BugUpdate(1, NOW, seq))
        self.assertEqual(self.history.oldest, 11)
        self.assertFalse(self.history.covers(9))
        self.assertTrue(self.history.covers(10))

    def test_skippedOffsetsCount(self) -> None:
        """
        An offset that carried no update (a malformed message) still moves
        the end of the history.
        """
        self.history.add(BugUpdate(1, NOW, 10))
        self.history.passed(11)
        self.assertEqual(self.history.latest, 11)

    def test_skipToStartsAnEmptyHistoryAfterTheTail(self) -> None:
        """
        A node that read nothing (all before its window) covers cursors at
        the stream's last offset, and no earlier.
        """
        self.history.skipTo(41)
        self.assertEqual((self.history.oldest, self.history.latest), (42, 41))
        self.assertTrue(self.history.covers(41))
        self.assertFalse(self.history.covers(40))
        self.history.skipTo(99)
        self.assertEqual(self.history.latest, 41)

    def test_clearForgetsOffsets(self) -> None:
        self.history.add(BugUpdate(1, NOW, 10))
        self.history.clear()
        self.assertEqual(
            (len(self.history), self.history.oldest, self.history.latest), (0, None, None)
        )
