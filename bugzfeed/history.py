"""
What a node remembers of recent updates, so that a client subscribing with
C{since} can catch up on what it missed.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Deque, Dict, Iterable, List

from twisted.internet.interfaces import IReactorTime

from bugzfeed.model import BugUpdate


class UpdateHistory:
    """
    The updates of the last C{window} seconds (by their change time), at
    most C{maxCount} of them, indexed by bug.

    @ivar window: How far back, in seconds, updates are remembered.
    @ivar maxCount: How many updates are remembered at most.
    """

    def __init__(self, clock: IReactorTime, window: float, maxCount: int) -> None:
        self._clock = clock
        self.window = window
        self.maxCount = maxCount
        self._arrivals: Deque[BugUpdate] = deque()
        self._byBug: Dict[int, Deque[BugUpdate]] = {}

    def __len__(self) -> int:
        return len(self._arrivals)

    def add(self, update: BugUpdate) -> None:
        """
        Remember C{update}, forgetting what has fallen out of the window or
        past the count.
        """
        if self.maxCount <= 0:
            return
        self._arrivals.append(update)
        self._byBug.setdefault(update.bug, deque()).append(update)
        self._expire()

    def since(self, bugs: Iterable[int], since: datetime) -> List[BugUpdate]:
        """
        @param since: A naive UTC datetime.
        @return: The remembered updates of C{bugs} with C{when >= since},
            oldest first.
        """
        self._expire()
        found = [
            update
            for bug in set(bugs)
            for update in self._byBug.get(bug, ())
            if update.when >= since
        ]
        found.sort(key=lambda update: (update.when, update.seq or 0))
        return found

    def _expire(self) -> None:
        now = datetime.fromtimestamp(self._clock.seconds(), timezone.utc)
        horizon = now.replace(tzinfo=None) - timedelta(seconds=self.window)
        arrivals = self._arrivals
        # Arrivals are close to change-time order, so looking at the oldest
        # arrival alone is enough: a straggler is dropped a little late.
        while arrivals and (len(arrivals) > self.maxCount or arrivals[0].when < horizon):
            oldest = arrivals.popleft()
            ofBug = self._byBug[oldest.bug]
            ofBug.popleft()
            if not ofBug:
                del self._byBug[oldest.bug]
