"""
Named fakes shared by the unit tests.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from bugzfeed.confirms import PendingRow
from bugzfeed.feed import Feed
from bugzfeed.history import UpdateHistory
from bugzfeed.model import BugUpdate
from bugzfeed.subscriptions import ISubscriber, SubscriptionRegistry


@implementer(ISubscriber)
class RecordingSubscriber:
    """
    A subscriber that keeps what it is pushed.
    """

    def __init__(self) -> None:
        self.payloads: List[bytes] = []

    def sendUpdate(self, update: BugUpdate, payload: bytes) -> None:
        self.payloads.append(payload)

    @property
    def messages(self) -> List[Dict[str, Any]]:
        """The pushed payloads, decoded."""
        return [json.loads(payload) for payload in self.payloads]


def makeFeed(clock: Any, path: str = "/", window: float = 86400, maxCount: int = 1000) -> Feed:
    """
    @return: A feed with an empty registry and history.
    """
    return Feed(
        path=path,
        exchange="exchange/test",
        registry=SubscriptionRegistry(),
        history=UpdateHistory(clock, window, maxCount),
    )


class FakePushNotifyTable:
    """
    An in-memory C{push_notify}: rows by id, with the same compare-and-delete
    rule as the real one.  Queries can be held to test what happens while
    they are in progress.

    @ivar rows: id -> (bug, delta_ts).
    """

    table = "push_notify"

    def __init__(self) -> None:
        self.rows: Dict[int, Tuple[int, datetime]] = {}
        self.fetches: List[Tuple[int, int]] = []
        self.deleteCalls: List[List[PendingRow]] = []
        self.failNextFetch: Optional[Exception] = None
        self.holdDeletes = False
        self.heldDeletes: List[Tuple[Deferred, List[PendingRow]]] = []

    def insert(self, rowId: int, bug: int, deltaTs: datetime) -> None:
        self.rows[rowId] = (bug, deltaTs)

    def fetch(self, afterId: int, limit: int) -> Deferred:
        self.fetches.append((afterId, limit))
        if self.failNextFetch is not None:
            error, self.failNextFetch = self.failNextFetch, None
            from twisted.internet.defer import fail

            return fail(error)
        ids = sorted(rowId for rowId in self.rows if rowId > afterId)[:limit]
        return succeed([PendingRow(rowId, *self.rows[rowId]) for rowId in ids])

    def backlog(self) -> Deferred:
        if not self.rows:
            return succeed((0, None))
        return succeed((len(self.rows), min(deltaTs for _, deltaTs in self.rows.values())))

    def deleteUnchanged(self, rows: List[PendingRow]) -> Deferred:
        self.deleteCalls.append(list(rows))
        if self.holdDeletes:
            d: Deferred = Deferred()
            self.heldDeletes.append((d, list(rows)))
            return d.addCallback(lambda _: self._delete(rows))
        return succeed(self._delete(rows))

    def _delete(self, rows: List[PendingRow]) -> int:
        deleted = 0
        for row in rows:
            if self.rows.get(row.id) == (row.bug, row.deltaTs):
                del self.rows[row.id]
                deleted += 1
        return deleted


class FakeChannel:
    """
    A confirm-mode channel that records what is published.
    """

    def __init__(self) -> None:
        self.published: List[Dict[str, Any]] = []

    def basic_publish(self, **kwargs: Any) -> Deferred:
        self.published.append(kwargs)
        return succeed(None)

    @property
    def bodies(self) -> List[Dict[str, Any]]:
        """The published bodies, decoded."""
        return [json.loads(message["content"].body) for message in self.published]
