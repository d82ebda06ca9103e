"""
Tests for L{bugzfeed.subscriptions}.
"""

from datetime import datetime

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from bugzfeed.model import BugUpdate
from bugzfeed.subscriptions import ISubscriber, SubscriptionRegistry
from tests.fakes import RecordingSubscriber

UPDATE = BugUpdate(1, datetime(2014, 4, 3, 21, 13, 45), 9)


class SubscriptionRegistryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.registry = SubscriptionRegistry()
        self.alice = RecordingSubscriber()
        self.bob = RecordingSubscriber()

    def test_fakeProvidesInterface(self) -> None:
        """
        The recording fake is a real L{ISubscriber}.
        """
        self.assertTrue(verifyObject(ISubscriber, self.alice))

    def test_publishReachesOnlySubscribersOfTheBug(self) -> None:
        """
        An update is pushed, encoded, to the holders of its bug only.
        """
        self.registry.subscribe(self.alice, [1, 2])
        self.registry.subscribe(self.bob, [2])
        self.assertEqual(self.registry.publish(UPDATE), 1)
        self.assertEqual(self.alice.payloads, [UPDATE.toJSON()])
        self.assertEqual(self.bob.payloads, [])

    def test_subscribeIsIdempotent(self) -> None:
        """
        Subscribing twice to a bug holds it once and pushes once.
        """
        self.registry.subscribe(self.alice, [1])
        self.assertEqual(self.registry.subscribe(self.alice, [1, 1]), [1])
        self.registry.publish(UPDATE)
        self.assertEqual(len(self.alice.payloads), 1)

    def test_unsubscribeFreesEntries(self) -> None:
        """
        No entry is left for a subscriber holding nothing or a bug nobody
        holds.
        """
        self.registry.subscribe(self.alice, [1, 2])
        self.registry.subscribe(self.bob, [2])
        self.assertEqual(self.registry.unsubscribe(self.alice, [1, 2, 3]), [])
        self.assertEqual((self.registry.subscriberCount, self.registry.bugCount), (1, 1))
        self.registry.unsubscribe(self.bob, [2])
        self.assertEqual((self.registry.subscriberCount, self.registry.bugCount), (0, 0))

    def test_unsubscribeAllFreesEverything(self) -> None:
        """
        A closing connection leaves nothing behind, and one that never
        subscribed is fine.
        """
        self.registry.subscribe(self.alice, range(1, 100))
        self.registry.subscribe(self.bob, [5])
        self.registry.unsubscribeAll(self.alice)
        self.registry.unsubscribeAll(RecordingSubscriber())
        self.assertEqual((self.registry.subscriberCount, self.registry.bugCount), (1, 1))
        self.assertEqual(self.registry.subscriptions(self.alice), [])
        self.registry.unsubscribeAll(self.bob)
        self.assertEqual((self.registry.subscriberCount, self.registry.bugCount), (0, 0))

    def test_emptySubscribeLeavesNoEntry(self) -> None:
        """
        Subscribing to no bug records nothing.
        """
        self.assertEqual(self.registry.subscribe(self.alice, []), [])
        self.assertEqual(self.registry.subscriberCount, 0)

    def test_failingSubscriberDoesNotStopFanOut(self) -> None:
        """
        A subscriber that raises is logged; the others still get the update.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        class Broken(RecordingSubscriber):
            def sendUpdate(self, update: BugUpdate, payload: bytes) -> None:
                raise RuntimeError("broken pipe")

        broken = Broken()
        self.registry.subscribe(broken, [1])
        self.registry.subscribe(self.alice, [1])
        self.registry.publish(UPDATE)
        self.assertEqual(self.alice.payloads, [UPDATE.toJSON()])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any("log_failure" in event for event in events))

    def test_subscriberLeavingDuringFanOut(self) -> None:
        """
        A subscriber whose push closes it (and so unsubscribes it) does not
        break the fan-out to the rest.
        """
        registry = self.registry

        class Leaving(RecordingSubscriber):
            def sendUpdate(self, update: BugUpdate, payload: bytes) -> None:
                registry.unsubscribeAll(self)

        registry.subscribe(Leaving(), [1])
        registry.subscribe(self.alice, [1])
        registry.publish(UPDATE)
        self.assertEqual(self.alice.payloads, [UPDATE.toJSON()])
