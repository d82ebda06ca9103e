"""
The client protocol's commands: parse, validate and answer them.  No I/O:
L{answer} turns one incoming frame into the frames to send back.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional

from bugzfeed import __version__
from bugzfeed.feed import Feed
from bugzfeed.model import MAX_BUG_ID, BugUpdate, toUTC
from bugzfeed.subscriptions import ISubscriber

INVALID_COMMAND = "invalid command"
MISSING_BUGS = "missing mandatory arg: 'bugs'"
INVALID_BUG_ID = "invalid bug id; must be integer"
BUG_ID_OUT_OF_RANGE = f"invalid bug id; must be between 1 and {MAX_BUG_ID}"
INVALID_SINCE = "invalid since; must be an ISO 8601 date and time"
NOT_JSON = "invalid message; must be JSON"
NOT_AN_OBJECT = "invalid message; must be a JSON object"
BINARY = "invalid message; binary frames are not supported"
MISSING_COMMAND = "missing mandatory arg: 'command'"


#: A bug id as a string: ASCII digits, short enough that int() is cheap.
_NUMERIC = re.compile(r"^\s*[0-9]{1,20}\s*$")


class BadRequest(Exception):
    """
    A command that cannot be carried out; its text is sent to the client.
    """


def _encode(message: Dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def errorReply(command: Optional[str], error: str) -> bytes:
    """
    @return: An error reply echoing C{command}.
    """
    return _encode({"command": command, "result": "error", "error": error})


def okReply(command: str, **fields: Any) -> bytes:
    """
    @return: A successful reply to C{command} carrying C{fields}.
    """
    return _encode({"command": command, "result": "ok", **fields})


def parseBugIds(request: Dict[str, Any]) -> List[int]:
    """
    Read C{bugs}: a list of ids, one id, or one id as a numeric string.

    @raise BadRequest: If C{bugs} is missing or holds anything but ids.
    """
    if "bugs" not in request:
        raise BadRequest(MISSING_BUGS)
    bugs = request["bugs"]
    if not isinstance(bugs, list):
        bugs = [bugs]
    return [_parseBugId(bug) for bug in bugs]


def _parseBugId(value: Any) -> int:
    # Existing clients send ids as numbers or numeric strings; a bool is an
    # int to Python but not an id to anyone.
    if isinstance(value, bool):
        raise BadRequest(INVALID_BUG_ID)
    if isinstance(value, int):
        bug = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        bug = int(value)
    elif isinstance(value, str) and _NUMERIC.match(value):
        bug = int(value)
    else:
        raise BadRequest(INVALID_BUG_ID)
    if not 0 < bug <= MAX_BUG_ID:
        raise BadRequest(BUG_ID_OUT_OF_RANGE)
    return bug


def parseSince(request: Dict[str, Any]) -> Optional[datetime]:
    """
    Read the optional C{since}: absent, null or empty means no catch-up.

    @return: A naive UTC datetime, or L{None}.
    @raise BadRequest: If C{since} is not a date.
    """
    since = request.get("since")
    if since is None or since == "":
        return None
    if not isinstance(since, str):
        raise BadRequest(INVALID_SINCE)
    try:
        return toUTC(datetime.fromisoformat(since.strip()))
    except (ValueError, OverflowError):
        # OverflowError: a zone that moves year 1 or 9999 out of range.
        raise BadRequest(INVALID_SINCE) from None


def _subscribe(request: Dict[str, Any], subscriber: ISubscriber, feed: Feed) -> List[bytes]:
    bugs = parseBugIds(request)
    since = parseSince(request)
    held = feed.registry.subscribe(subscriber, bugs)
    frames = [okReply("subscribe", bugs=held)]
    if since is not None:
        missed: List[BugUpdate] = feed.history.since(bugs, since)
        frames.extend(update.toJSON() for update in missed)
    return frames


def _unsubscribe(request: Dict[str, Any], subscriber: ISubscriber, feed: Feed) -> List[bytes]:
    bugs = parseBugIds(request)
    return [okReply("unsubscribe", bugs=feed.registry.unsubscribe(subscriber, bugs))]


def _subscriptions(request: Dict[str, Any], subscriber: ISubscriber, feed: Feed) -> List[bytes]:
    return [okReply("subscriptions", bugs=feed.registry.subscriptions(subscriber))]


def _version(request: Dict[str, Any], subscriber: ISubscriber, feed: Feed) -> List[bytes]:
    return [okReply("version", version=__version__)]


_COMMANDS: Dict[str, Callable[[Dict[str, Any], ISubscriber, Feed], List[bytes]]] = {
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "subscriptions": _subscriptions,
    "version": _version,
}


def answer(payload: bytes, isBinary: bool, subscriber: ISubscriber, feed: Feed) -> List[bytes]:
    """
    Carry out one client frame.

    @return: The frames to send back, in order: always a reply first, then
        any catch-up updates.
    """
    if isBinary:
        return [errorReply(None, BINARY)]
    try:
        request = json.loads(payload)
    except (ValueError, RecursionError):
        return [errorReply(None, NOT_JSON)]
    if not isinstance(request, dict):
        return [errorReply(None, NOT_AN_OBJECT)]
    if "command" not in request:
        return [errorReply(None, MISSING_COMMAND)]
    command = request["command"]
    echoed = command if isinstance(command, str) else None
    handler = _COMMANDS.get(command) if isinstance(command, str) else None
    if handler is None:
        return [errorReply(echoed, INVALID_COMMAND)]
    try:
        return handler(request, subscriber, feed)
    except BadRequest as e:
        return [errorReply(command, str(e))]
