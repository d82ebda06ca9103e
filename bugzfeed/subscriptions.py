"""
The subscription registry: which connection holds which bug, and fan-out of
updates to them.  Pure Python: it knows subscribers only through
L{ISubscriber}.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Set

from twisted.logger import Logger
from zope.interface import Interface

from bugzfeed.model import BugUpdate


class ISubscriber(Interface):
    """
    Something that can be pushed updates: in practice, one WebSocket
    connection.
    """

    def sendUpdate(update: BugUpdate, payload: bytes) -> None:
        """
        Push C{update}, encoded once for all its subscribers as C{payload}.
        """


class SubscriptionRegistry:
    """
    Bug id ↔ subscribers, both ways, so that fan-out and a subscriber's
    departure are each proportional to what they touch.

    No entry is kept for a subscriber that holds no bug, nor for a bug that
    nobody holds.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._subscribersByBug: Dict[int, Set[ISubscriber]] = {}
        self._bugsBySubscriber: Dict[ISubscriber, Set[int]] = {}
        #: Updates pushed, one per subscriber (for metrics).
        self.deliveries = 0

    def subscribe(self, subscriber: ISubscriber, bugs: Iterable[int]) -> List[int]:
        """
        Add C{bugs} to what C{subscriber} holds.

        @return: All the bugs C{subscriber} now holds, sorted.
        """
        held = self._bugsBySubscriber.setdefault(subscriber, set())
        for bug in bugs:
            held.add(bug)
            self._subscribersByBug.setdefault(bug, set()).add(subscriber)
        if not held:
            del self._bugsBySubscriber[subscriber]
        return sorted(held)

    def unsubscribe(self, subscriber: ISubscriber, bugs: Iterable[int]) -> List[int]:
        """
        Remove C{bugs} from what C{subscriber} holds; a bug not held is
        ignored.

        @return: All the bugs C{subscriber} still holds, sorted.
        """
        held = self._bugsBySubscriber.get(subscriber)
        if held is None:
            return []
        for bug in bugs:
            if bug in held:
                held.discard(bug)
                self._forget(bug, subscriber)
        if not held:
            del self._bugsBySubscriber[subscriber]
        return sorted(held)

    def unsubscribeAll(self, subscriber: ISubscriber) -> None:
        """
        Forget C{subscriber} entirely; fine for one that never subscribed.
        """
        for bug in self._bugsBySubscriber.pop(subscriber, ()):
            self._forget(bug, subscriber)

    def subscriptions(self, subscriber: ISubscriber) -> List[int]:
        """
        @return: The bugs C{subscriber} holds, sorted.
        """
        return sorted(self._bugsBySubscriber.get(subscriber, ()))

    def heldCount(self, subscriber: ISubscriber) -> int:
        """
        @return: How many bugs C{subscriber} holds.
        """
        return len(self._bugsBySubscriber.get(subscriber, ()))

    def wouldHold(self, subscriber: ISubscriber, bugs: Iterable[int]) -> int:
        """
        @return: How many bugs C{subscriber} would hold after subscribing
            to C{bugs}.
        """
        held = self._bugsBySubscriber.get(subscriber, set())
        return len(held) + len(set(bugs) - held)

    def subscribers(self, bug: int) -> Set[ISubscriber]:
        """
        @return: A copy of the set of subscribers holding C{bug}.
        """
        return set(self._subscribersByBug.get(bug, ()))

    def publish(self, update: BugUpdate) -> int:
        """
        Push C{update} to every subscriber holding its bug, encoding it once.

        A subscriber that raises is logged and skipped: one broken
        connection must not starve the others.

        @return: The number of subscribers pushed to.
        """
        subscribers = self._subscribersByBug.get(update.bug)
        if not subscribers:
            return 0
        payload = update.toJSON()
        self.deliveries += len(subscribers)
        # A push may close its connection and so change the set: iterate a copy.
        for subscriber in tuple(subscribers):
            try:
                subscriber.sendUpdate(update, payload)
            except Exception:
                self._log.failure("Pushing update of bug {bug} failed", bug=update.bug)
        return len(subscribers)

    @property
    def subscriberCount(self) -> int:
        """The number of subscribers holding at least one bug."""
        return len(self._bugsBySubscriber)

    @property
    def bugCount(self) -> int:
        """The number of bugs held by at least one subscriber."""
        return len(self._subscribersByBug)

    def _forget(self, bug: int, subscriber: ISubscriber) -> None:
        subscribers = self._subscribersByBug[bug]
        subscribers.discard(subscriber)
        if not subscribers:
            del self._subscribersByBug[bug]
