"""
Updates on their way to one client, with back-pressure.

The connection's transport tells the outbox to pause once its write buffer
is full (the client is not reading).  While paused the outbox keeps at most
one update per bug, the newest: updates are hints that a bug changed, so
only the latest matters.  When the client reads again, the outbox sends
what it kept, in stream order.  A client that stays paused too long, or
falls behind on too many bugs, is given up on.

While paused the outbox also stops reading from the client: replies to its
commands and pongs to its pings cannot be coalesced, and would otherwise
pile up in the transport behind what the client does not read.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

from bugzfeed.model import BugUpdate


@implementer(IPushProducer)
class Outbox:
    """
    @ivar paused: Whether the client's transport is full.
    @ivar coalesced: How many updates were replaced by a newer one of the
        same bug while paused.
    """

    def __init__(
        self,
        send: Callable[[bytes], None],
        tooSlow: Callable[[str], None],
        clock: IReactorTime,
        maxPending: int,
        slowClientTimeout: float,
        incoming: IPushProducer,
    ) -> None:
        """
        @param incoming: The connection's incoming side (its transport),
            paused while the outbox is.
        """
        self._send = send
        self._tooSlow = tooSlow
        self._clock = clock
        self._maxPending = maxPending
        self._slowClientTimeout = slowClientTimeout
        self._incoming = incoming
        # bug -> (seq, payload) of its newest unsent update
        self._pending: Dict[int, Tuple[int, bytes]] = {}
        self._giveUp: Optional[IDelayedCall] = None
        self.paused = False
        self.closed = False
        self.coalesced = 0

    def __len__(self) -> int:
        return len(self._pending)

    def push(self, update: BugUpdate, payload: bytes) -> None:
        """
        Send C{update} (encoded as C{payload}) now, or keep it until the
        client reads again.
        """
        if self.closed:
            return
        if not self.paused:
            self._send(payload)
            return
        seq = update.seq if update.seq is not None else -1
        held = self._pending.get(update.bug)
        if held is not None:
            self.coalesced += 1
            if held[0] > seq:
                return
        self._pending[update.bug] = (seq, payload)
        if len(self._pending) > self._maxPending:
            self._close(f"too slow: updates of more than {self._maxPending} bugs unread")

    def pauseProducing(self) -> None:
        if self.paused or self.closed:
            return
        self.paused = True
        self._incoming.pauseProducing()
        if self._slowClientTimeout > 0:
            self._giveUp = self._clock.callLater(
                self._slowClientTimeout,
                self._close,
                f"too slow: nothing read for {self._slowClientTimeout:g} s",
            )

    def resumeProducing(self) -> None:
        if self.closed:
            return
        self.paused = False
        self._cancelGiveUp()
        # Oldest first; sending may fill the transport and pause us again.
        for bug, (seq, payload) in sorted(self._pending.items(), key=lambda item: item[1][0]):
            if self.paused or self.closed:
                break
            del self._pending[bug]
            self._send(payload)
        if not self.paused and not self.closed:
            self._incoming.resumeProducing()

    def stopProducing(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._pending.clear()
        self._cancelGiveUp()
        if self.paused:
            # Let a closing handshake be read.
            self._incoming.resumeProducing()

    def _close(self, reason: str) -> None:
        self.stopProducing()
        self._tooSlow(reason)

    def _cancelGiveUp(self) -> None:
        if self._giveUp is not None:
            if self._giveUp.active():
                self._giveUp.cancel()
            self._giveUp = None
