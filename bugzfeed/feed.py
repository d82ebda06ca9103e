"""
A feed: one exchange's updates, with their own subscriptions and history,
served at one WebSocket path.
"""

from __future__ import annotations

from typing import Optional

import attr
from twisted.internet.defer import Deferred, succeed

from bugzfeed.history import UpdateHistory
from bugzfeed.model import BugUpdate, streamName
from bugzfeed.subscriptions import SubscriptionRegistry
from bugzfeed.waiting import Waiters


@attr.s(eq=False, slots=True, auto_attribs=True)
class Feed:
    """
    @ivar path: The WebSocket path clients connect to, such as C{/dev/}.
    @ivar exchange: The RabbitMQ exchange the feed's updates come from.
    @ivar epoch: Names the incarnation of the feed's stream: offsets (and so
        C{seq} cursors) are comparable only within one.  L{None} while the
        stream is empty.
    @ivar caughtUp: Whether the node has read its stream up to what it held
        when the node (re)connected: until then the history's end is not the
        stream's end, and exact resumes wait.
    """

    path: str
    exchange: str
    registry: SubscriptionRegistry
    history: UpdateHistory
    epoch: Optional[str] = None
    caughtUp: bool = False
    _caughtUpWaiters: Waiters = attr.ib(factory=Waiters, init=False)
    #: Updates received as news (for metrics).
    received: int = attr.ib(default=0, init=False)
    #: Resumes with C{after}, by outcome, and the updates they replayed.
    replaysRecovered: int = attr.ib(default=0, init=False)
    replaysNotRecovered: int = attr.ib(default=0, init=False)
    replayedUpdates: int = attr.ib(default=0, init=False)

    @property
    def stream(self) -> str:
        """The stream this feed consumes."""
        return streamName(self.exchange)

    def remember(self, update: BugUpdate) -> None:
        """
        Remember C{update} for catch-up without pushing it: an old update
        read again while the node rebuilds its history.
        """
        self.history.add(update)

    def receive(self, update: BugUpdate) -> None:
        """
        Remember C{update} and push it to its bug's subscribers.
        """
        self.received += 1
        self.history.add(update)
        self.registry.publish(update)

    def whenCaughtUp(self) -> Deferred:
        """
        @return: A L{Deferred} that fires once the node has caught up with
            the stream.
        """
        return succeed(None) if self.caughtUp else self._caughtUpWaiters.wait()

    def markCaughtUp(self) -> None:
        """
        The node has read the stream up to its end.
        """
        if not self.caughtUp:
            self.caughtUp = True
            self._caughtUpWaiters.fire()

    def markBehind(self) -> None:
        """
        The node has lost the stream (or not reached its end yet).
        """
        self.caughtUp = False
