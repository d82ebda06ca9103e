"""
Tests for L{bugzfeed.waiting}.
"""

from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.waiting import Waiters


class WaitersTests(SynchronousTestCase):
    def test_fireWakesEveryWaiter(self) -> None:
        """
        Everyone waiting is woken, with the result, by one fire.
        """
        waiters = Waiters()
        first, second = waiters.wait(), waiters.wait()
        self.assertNoResult(first)
        waiters.fire("done")
        self.assertEqual(
            (self.successResultOf(first), self.successResultOf(second)), ("done", "done")
        )

    def test_laterWaitersWaitForTheNextFire(self) -> None:
        """
        A waiter that arrives after a fire, or during one, waits for the
        next.
        """
        waiters = Waiters()
        reentrant = []
        waiters.wait().addCallback(lambda _: reentrant.append(waiters.wait()))
        waiters.fire()
        self.assertNoResult(reentrant[0])
        waiters.fire()
        self.successResultOf(reentrant[0])
