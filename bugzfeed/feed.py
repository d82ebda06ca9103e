"""
A feed: one exchange's updates, with their own subscriptions and history,
served at one WebSocket path.
"""

from __future__ import annotations

import attr

from bugzfeed.history import UpdateHistory
from bugzfeed.model import BugUpdate, streamName
from bugzfeed.subscriptions import SubscriptionRegistry


@attr.s(eq=False, slots=True, auto_attribs=True)
class Feed:
    """
    @ivar path: The WebSocket path clients connect to, such as C{/dev/}.
    @ivar exchange: The RabbitMQ exchange the feed's updates come from.
    """

    path: str
    exchange: str
    registry: SubscriptionRegistry
    history: UpdateHistory
    #: Updates received as news (for metrics).
    received: int = attr.ib(default=0, init=False)

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
