"""
Publisher-confirm bookkeeping for the shim: which published row each
delivery tag stands for, and which rows the broker has taken.  Pure Python.
"""

from __future__ import annotations

from datetime import datetime
from itertools import takewhile
from typing import Dict, List, Optional, Set, Tuple

import attr

#: What identifies one version of a row: its id and C{delta_ts}.
RowKey = Tuple[int, Optional[datetime]]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class PendingRow:
    """
    One row of C{push_notify}, as read.

    @ivar deltaTs: The change time exactly as stored (naive, in the
        database's zone), so that a delete can check the row is unchanged;
        L{None} if it is out of the range Python can hold.
    """

    id: int
    bug: int
    deltaTs: Optional[datetime]

    @property
    def key(self) -> RowKey:
        """What identifies this version of the row."""
        return (self.id, self.deltaTs)


class ConfirmTracker:
    """
    Tracks the rows published on one confirm-mode channel until the broker
    confirms or refuses each.

    Delivery tags count from 1 per channel.  With C{mandatory} set, an
    unroutable message is returned (C{basic.return}, carrying its
    C{message-id}, the row id) before it is acked: such an ack means "not
    sent".
    """

    def __init__(self) -> None:
        # Insertion order is tag order, which a multiple ack relies on.
        self._rowsByTag: Dict[int, PendingRow] = {}
        self._tagsByRowId: Dict[int, List[int]] = {}
        self._returnedTags: Set[int] = set()
        self._keys: Set[RowKey] = set()
        self._lastTag = 0

    def __len__(self) -> int:
        return len(self._rowsByTag)

    def isPending(self, row: PendingRow) -> bool:
        """
        @return: Whether this version of C{row} awaits its confirm.
        """
        return row.key in self._keys

    def published(self, row: PendingRow) -> int:
        """
        Record that C{row} was just published.

        @return: Its delivery tag.
        """
        self._lastTag += 1
        tag = self._lastTag
        self._rowsByTag[tag] = row
        self._tagsByRowId.setdefault(row.id, []).append(tag)
        self._keys.add(row.key)
        return tag

    def returned(self, rowId: int) -> None:
        """
        Record that the broker returned the message of row C{rowId}: the
        earliest such message not yet marked, since returns come in
        publishing order.
        """
        for tag in self._tagsByRowId.get(rowId, ()):
            if tag not in self._returnedTags:
                self._returnedTags.add(tag)
                return

    def confirmed(
        self, deliveryTag: int, multiple: bool, acked: bool
    ) -> Tuple[List[PendingRow], List[PendingRow]]:
        """
        Settle the rows a C{basic.ack} or C{basic.nack} covers.

        @return: C{(sent, unsent)}: the rows the broker has taken, which may
            be deleted, and the rows it refused or returned, which must stay.
        """
        if multiple:
            tags = list(takewhile(lambda tag: tag <= deliveryTag, self._rowsByTag))
        else:
            tags = [deliveryTag] if deliveryTag in self._rowsByTag else []
        sent: List[PendingRow] = []
        unsent: List[PendingRow] = []
        for tag in tags:
            row = self._forget(tag)
            wasReturned = tag in self._returnedTags
            self._returnedTags.discard(tag)
            (sent if acked and not wasReturned else unsent).append(row)
        return sent, unsent

    def abandon(self) -> List[PendingRow]:
        """
        Forget everything pending, as when the channel is lost: none of it
        may be deleted, all of it will be published again.

        @return: The rows that were pending.
        """
        rows = list(self._rowsByTag.values())
        self._rowsByTag.clear()
        self._tagsByRowId.clear()
        self._returnedTags.clear()
        self._keys.clear()
        return rows

    def _forget(self, tag: int) -> PendingRow:
        row = self._rowsByTag.pop(tag)
        tags = self._tagsByRowId[row.id]
        tags.remove(tag)
        if not tags:
            del self._tagsByRowId[row.id]
        self._keys.discard(row.key)
        return row
