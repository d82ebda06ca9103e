"""
What one client connection may do, and the rate limiter that holds it to
its commands per second.  Every limit is announced to clients by C{hello}.
"""

from __future__ import annotations

from typing import Any, Dict

import attr
from twisted.internet.interfaces import IReactorTime

#: A replay (C{since} or C{after}) counts as one more command for every
#: this many updates it sends: encoding them is most of its cost, and a
#: client must not make the server replay its whole history a hundred
#: times a second.
REPLAYED_UPDATES_PER_COMMAND = 100


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ClientLimits:
    """
    @ivar maxMessageSize: Largest client message, in bytes (close 1009).
    @ivar maxSubscriptions: Bugs one connection may hold.
    @ivar commandsPerSecond: Commands one connection may send per second,
        on average; twice as many may come at once (L{commandBurst}).  A
        command that replays updates counts once more for every
        L{REPLAYED_UPDATES_PER_COMMAND} updates it replays.
    @ivar maxPending: Bugs with an update waiting for a client that does not
        read, before it is closed (4001).
    @ivar slowClientTimeout: Seconds a client may leave its updates unread
        before it is closed (4001).
    @ivar maxConnections: Open connections per node; more are refused with
        HTTP 503.
    @ivar resumeTimeout: Seconds a resume (C{after}) waits for a node that
        is still reading its stream before it is answered C{recovered: false}.
    """

    maxMessageSize: int = 65536
    maxSubscriptions: int = 1000
    commandsPerSecond: float = 100.0
    maxPending: int = 1000
    slowClientTimeout: float = 30.0
    maxConnections: int = 50000
    resumeTimeout: float = 10.0

    @property
    def commandBurst(self) -> float:
        """
        How many commands a connection that was quiet may send at once.
        """
        return 2 * self.commandsPerSecond

    def announce(self) -> Dict[str, Any]:
        """
        @return: The limits a client must keep to, as C{hello} sends them.
        """
        return {
            "maxMessageSize": self.maxMessageSize,
            "maxSubscriptions": self.maxSubscriptions,
            "commandsPerSecond": _number(self.commandsPerSecond),
            "commandBurst": _number(self.commandBurst),
            "replayedUpdatesPerCommand": REPLAYED_UPDATES_PER_COMMAND,
            "maxPending": self.maxPending,
            "slowClientTimeout": _number(self.slowClientTimeout),
        }


def _number(value: float) -> float:
    """
    @return: C{value}, as an C{int} when it is whole, so that clients see
        C{30} rather than C{30.0}.
    """
    return int(value) if float(value).is_integer() else value


class RateLimiter:
    """
    A token bucket: C{rate} tokens a second, holding at most C{burst}.
    Costly work can be charged beyond what the bucket holds: the debt is
    paid off, at C{rate}, before anything more is allowed.
    """

    def __init__(self, clock: IReactorTime, rate: float, burst: float) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._updated = clock.seconds()

    def allow(self) -> bool:
        """
        Take a token if there is one.

        @return: Whether the action may go ahead.
        """
        if self._rate <= 0:
            return True
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def charge(self, tokens: float) -> None:
        """
        Take C{tokens} more for work already done, going into debt if the
        bucket holds fewer.
        """
        if self._rate <= 0:
            return
        self._refill()
        self._tokens -= tokens

    def _refill(self) -> None:
        now = self._clock.seconds()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
