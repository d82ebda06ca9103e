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
        C{since} returns the requested bugs' updates at or after the time,
        oldest first.
        """
        history = UpdateHistory(self.clock, 3600, 100)
        for seq, (bug, minutes) in enumerate([(1, 50), (2, 40), (1, 30), (1, 10), (3, 5)]):
            history.add(BugUpdate(bug, NOW - timedelta(minutes=minutes), seq))
        found = history.since([1, 3], NOW - timedelta(minutes=30))
        self.assertEqual([(u.bug, u.seq) for u in found], [(1, 2), (1, 3), (3, 4)])

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
        self.assertEqual(len(history.since([1], NOW - timedelta(days=1))), 2)
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
