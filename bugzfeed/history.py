"""
What a node remembers of recent updates, so that a client can catch up on
what it missed: by time (C{since}) or exactly, after the last stream offset
it saw (C{after}).
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Deque, Dict, Iterable, List, Optional

from twisted.internet.interfaces import IReactorTime

from bugzfeed.model import BugUpdate


class UpdateHistory:
    """
    The updates of the last C{window} seconds (by their change time), at
    most C{maxCount} of them, indexed by bug.

    @ivar window: How far back, in seconds, updates are remembered.
    @ivar maxCount: How many updates are remembered at most.
    @ivar oldest: The lowest stream offset from which every update is
        remembered (offsets are C{seq}s), or L{None} before any.
    @ivar latest: The highest stream offset handled, or L{None} before any.
    """

    def __init__(self, clock: IReactorTime, window: float, maxCount: int) -> None:
        self.clock = clock
        self.window = window
        self.maxCount = maxCount
        self._arrivals: Deque[BugUpdate] = deque()
        self._byBug: Dict[int, Deque[BugUpdate]] = {}
        self.oldest: Optional[int] = None
        self.latest: Optional[int] = None

    def __len__(self) -> int:
        return len(self._arrivals)

    def add(self, update: BugUpdate) -> None:
        """
        Remember C{update}, forgetting what has fallen out of the window or
        past the count.
        """
        if update.seq is not None:
            self.passed(update.seq)
        if self.maxCount <= 0:
            self.oldest = None
            return
        self._arrivals.append(update)
        self._byBug.setdefault(update.bug, deque()).append(update)
        self._expire()

    def passed(self, offset: int) -> None:
        """
        The stream has been read up to C{offset}, which may carry no update
        (a malformed message that was skipped).
        """
        if self.oldest is None:
            self.oldest = offset
        if self.latest is None or offset > self.latest:
            self.latest = offset

    def skipTo(self, offset: int) -> None:
        """
        The node has caught up with a stream whose last offset is
        C{offset}: when it read nothing (everything up to C{offset} lay
        before its window), history starts just after C{offset}.
        """
        if self.latest is None:
            self.latest = offset
            self.oldest = offset + 1

    def clear(self) -> None:
        """
        Forget everything: the stream was recreated, so old offsets mean
        nothing.
        """
        self._arrivals.clear()
        self._byBug.clear()
        self.oldest = self.latest = None

    def covers(self, cursor: int) -> bool:
        """
        @return: Whether every update after offset C{cursor} is remembered.
        """
        self._expire()
        return self.oldest is not None and cursor >= self.oldest - 1

    def after(self, bugs: Iterable[int], cursor: int) -> List[BugUpdate]:
        """
        @return: The newest remembered update of each of C{bugs} that
            changed after stream offset C{cursor}, in stream order.
            Updates are hints that a bug changed: an older one of the same
            bug tells nothing the newest does not, and replaying only the
            newest keeps a replay's cost to one update per bug.
        """
        self._expire()
        found = []
        for bug in set(bugs):
            updates = self._byBug.get(bug)
            # A bug's updates are kept in stream order: the last is newest.
            newest = updates[-1] if updates else None
            if newest is not None and newest.seq is not None and newest.seq > cursor:
                found.append(newest)
        found.sort(key=lambda update: update.seq or 0)
        return found

    def since(self, bugs: Iterable[int], since: datetime) -> List[BugUpdate]:
        """
        @param since: A naive UTC datetime.
        @return: The newest remembered update of each of C{bugs} that
            changed at or after C{since}, oldest first.
        """
        self._expire()
        found = []
        for bug in set(bugs):
            newest = next(
                (update for update in reversed(self._byBug.get(bug, ())) if update.when >= since),
                None,
            )
            if newest is not None:
                found.append(newest)
        found.sort(key=lambda update: (update.when, update.seq or 0))
        return found

    def _expire(self) -> None:
        now = datetime.fromtimestamp(self.clock.seconds(), timezone.utc)
        horizon = now.replace(tzinfo=None) - timedelta(seconds=self.window)
        arrivals = self._arrivals
        # Arrivals are close to change-time order, so looking at the oldest
        # arrival alone is enough: a straggler is dropped a little late.
        while arrivals and (len(arrivals) > self.maxCount or arrivals[0].when < horizon):
            oldest = arrivals.popleft()
            if oldest.seq is not None:
                # Offsets up to this one are no longer all remembered.
                self.oldest = oldest.seq + 1
            ofBug = self._byBug[oldest.bug]
            ofBug.popleft()
            if not ofBug:
                del self._byBug[oldest.bug]
