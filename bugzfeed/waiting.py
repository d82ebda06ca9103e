"""
Waiting for something to happen, without sleeping: the Deferreds of those
who asked, fired together when it does.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import Deferred


class Waiters:
    """
    The callers waiting for one thing to happen.
    """

    def __init__(self) -> None:
        self._waiting: List[Deferred] = []

    def wait(self) -> Deferred:
        """
        @return: A L{Deferred} fired by the next L{fire}.
        """
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    def fire(self, result: Any = None) -> None:
        """
        Fire, with C{result}, every L{Deferred} handed out since the last
        time; those asked for meanwhile wait for the next.
        """
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)
