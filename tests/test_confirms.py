"""
Tests for L{bugzfeed.confirms}: which rows the shim may delete.
"""

from datetime import datetime

from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.confirms import ConfirmTracker, PendingRow

T1 = datetime(2014, 4, 3, 21, 13, 45)
T2 = datetime(2014, 4, 3, 21, 13, 46)


def rows(count: int) -> list:
    return [PendingRow(i, 100 + i, T1) for i in range(1, count + 1)]


class ConfirmTrackerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tracker = ConfirmTracker()

    def test_tagsCountFromOne(self) -> None:
        """
        Delivery tags count from 1 on each channel, in publishing order.
        """
        self.assertEqual([self.tracker.published(row) for row in rows(3)], [1, 2, 3])

    def test_singleAck(self) -> None:
        """
        An ack settles only its own row as sent.
        """
        first, second = rows(2)
        self.tracker.published(first)
        self.tracker.published(second)
        self.assertEqual(self.tracker.confirmed(2, False, True), ([second], []))
        self.assertEqual(len(self.tracker), 1)
        self.assertTrue(self.tracker.isPending(first))
        self.assertFalse(self.tracker.isPending(second))

    def test_multipleAck(self) -> None:
        """
        A multiple ack settles every row up to its tag, in order.
        """
        published = rows(5)
        for row in published:
            self.tracker.published(row)
        self.assertEqual(self.tracker.confirmed(3, True, True), (published[:3], []))
        self.assertEqual(self.tracker.confirmed(5, True, True), (published[3:], []))
        self.assertEqual(len(self.tracker), 0)

    def test_nackMeansUnsent(self) -> None:
        """
        A nacked row is unsent: it must stay in the table.
        """
        published = rows(3)
        for row in published:
            self.tracker.published(row)
        self.assertEqual(self.tracker.confirmed(2, True, False), ([], published[:2]))

    def test_returnedThenAckedMeansUnsent(self) -> None:
        """
        A mandatory message the broker could not route is returned, then
        acked: that ack does not make it sent.
        """
        first, second = rows(2)
        self.tracker.published(first)
        self.tracker.published(second)
        self.tracker.returned(first.id)
        self.assertEqual(self.tracker.confirmed(2, True, True), ([second], [first]))

    def test_returnMarksEarliestVersionOfRow(self) -> None:
        """
        With two versions of one row in flight, a return marks the earlier,
        since returns come in publishing order.
        """
        old, new = PendingRow(1, 5, T1), PendingRow(1, 5, T2)
        self.tracker.published(old)
        self.tracker.published(new)
        self.tracker.returned(1)
        self.assertEqual(self.tracker.confirmed(1, False, True), ([], [old]))
        self.assertEqual(self.tracker.confirmed(2, False, True), ([new], []))

    def test_pendingIsPerVersion(self) -> None:
        """
        A row changed in place since it was published is a new version: not
        pending, so it gets published again.
        """
        self.tracker.published(PendingRow(1, 5, T1))
        self.assertTrue(self.tracker.isPending(PendingRow(1, 5, T1)))
        self.assertFalse(self.tracker.isPending(PendingRow(1, 5, T2)))

    def test_unknownTagsIgnored(self) -> None:
        """
        A confirm for a tag not pending settles nothing.
        """
        self.assertEqual(self.tracker.confirmed(7, False, True), ([], []))
        self.assertEqual(self.tracker.confirmed(7, True, True), ([], []))

    def test_abandon(self) -> None:
        """
        Losing the channel hands back every pending row, none deletable.
        """
        published = rows(3)
        for row in published:
            self.tracker.published(row)
        self.tracker.returned(1)
        self.assertEqual(self.tracker.abandon(), published)
        self.assertEqual(len(self.tracker), 0)
        self.assertFalse(self.tracker.isPending(published[0]))
