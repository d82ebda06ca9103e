"""
Tests for L{bugzfeed.limits}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.limits import ClientLimits, RateLimiter


class RateLimiterTests(SynchronousTestCase):
    def test_burstThenRate(self) -> None:
        """
        A full bucket allows a burst; after that, C{rate} per second.
        """
        clock = Clock()
        limiter = RateLimiter(clock, rate=10, burst=10)
        self.assertEqual([limiter.allow() for _ in range(11)], [True] * 10 + [False])
        clock.advance(0.5)
        self.assertEqual([limiter.allow() for _ in range(6)], [True] * 5 + [False])
        clock.advance(100)
        self.assertEqual(sum(limiter.allow() for _ in range(20)), 10)

    def test_chargeGoesIntoDebt(self) -> None:
        """
        Work charged beyond what the bucket holds is paid off at C{rate}
        before anything more is allowed.
        """
        clock = Clock()
        limiter = RateLimiter(clock, rate=10, burst=10)
        limiter.charge(25)
        clock.advance(1.4)  # -15 + 14
        self.assertFalse(limiter.allow())
        clock.advance(0.25)  # -1 + 2.5
        self.assertEqual([limiter.allow(), limiter.allow()], [True, False])

    def test_zeroRateMeansNoLimit(self) -> None:
        limiter = RateLimiter(Clock(), rate=0, burst=0)
        limiter.charge(1000)
        self.assertTrue(all(limiter.allow() for _ in range(1000)))


class ClientLimitsTests(SynchronousTestCase):
    def test_announced(self) -> None:
        """
        The limits a client must keep to are announced by name; defaults
        leave room for normal use (1,000 bugs a connection).
        """
        announced = ClientLimits().announce()
        self.assertEqual(announced["maxSubscriptions"], 1000)
        # Whole numbers of seconds and commands read as integers.
        self.assertEqual(repr(announced["slowClientTimeout"]), "30")
        self.assertEqual(repr(announced["commandsPerSecond"]), "100")
        self.assertEqual(repr(announced["commandBurst"]), "200")
        self.assertEqual(ClientLimits(slowClientTimeout=2.5).announce()["slowClientTimeout"], 2.5)
        self.assertEqual(
            sorted(announced),
            [
                "commandBurst",
                "commandsPerSecond",
                "maxMessageSize",
                "maxPending",
                "maxSubscriptions",
                "replayedUpdatesPerCommand",
                "slowClientTimeout",
            ],
        )
