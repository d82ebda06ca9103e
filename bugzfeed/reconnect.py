"""
The reconnect advice a stopping server gives each client in its close
reason (code 1001), so that thousands of clients told to go at once do not
all come back in the same second.
"""

from __future__ import annotations

import re
from typing import Optional

#: Reconnects a second that the advice spreads a shutdown's clients over.
RECONNECTS_PER_SECOND = 1000.0

#: The longest delay advised, in seconds.
MAX_SPREAD = 30.0

_ADVICE = re.compile(r"\breconnect in (\d{1,6}(?:\.\d+)?)s\b")


def reconnectSpread(clients: int) -> float:
    """
    @return: Seconds to spread C{clients} reconnects over: at least one, at
        most L{MAX_SPREAD}.
    """
    return min(MAX_SPREAD, max(1.0, clients / RECONNECTS_PER_SECOND))


def goingAwayReason(delay: float) -> str:
    """
    @return: The close reason telling a client to come back in C{delay}
        seconds, such as C{server shutting down; reconnect in 2.4s}.
    """
    return f"server shutting down; reconnect in {delay:.1f}s"


def adviceIn(reason: Optional[str]) -> Optional[float]:
    """
    @return: The delay advised in a close reason, in seconds, or L{None}.
    """
    match = _ADVICE.search(reason or "")
    return float(match.group(1)) if match else None
