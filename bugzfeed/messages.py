"""
The client protocol's commands: parse, validate and answer them.  No I/O:
L{answer} turns one incoming frame into the reply to send back and the
updates to push after it.
"""

from __future__ import annotations

import json
import math
import re
import sys
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import attr
from twisted.internet.defer import Deferred, TimeoutError
from twisted.python.failure import Failure

from bugzfeed import __version__
from bugzfeed.feed import Feed
from bugzfeed.limits import ClientLimits
from bugzfeed.model import MAX_BUG_ID, BugUpdate, toUTC
from bugzfeed.subscriptions import ISubscriber

INVALID_COMMAND = "invalid command"
MISSING_BUGS = "missing mandatory arg: 'bugs'"
INVALID_BUG_ID = "invalid bug id; must be integer"
BUG_ID_OUT_OF_RANGE = f"invalid bug id; must be between 1 and {MAX_BUG_ID}"
INVALID_SINCE = "invalid since; must be an ISO 8601 date and time"
NOT_JSON = "invalid message; must be JSON"
NUMBER_TOO_LONG = "invalid message; a number has more than {digits} digits"
NOT_AN_OBJECT = "invalid message; must be a JSON object"
BINARY = "invalid message; binary frames are not supported"
MISSING_COMMAND = "missing mandatory arg: 'command'"
INVALID_AFTER = "invalid after; must be the seq of an update: an integer of 0 or more"
INVALID_EPOCH = "invalid epoch; must be a string"
SINCE_AND_AFTER = "invalid subscribe; give since or after, not both"
AFTER_TOO_NEW = "invalid after; seq {after} is beyond the latest seq ({latest}) of this feed"
AFTER_ON_EMPTY_FEED = "invalid after; this feed has no updates yet"
TOO_MANY_SUBSCRIPTIONS = "too many subscriptions; at most {limit} bugs per connection"
TOO_MANY_COMMANDS = "too many commands; at most {limit:g} per second"

#: Why a resume could not be exact (C{recovered: false}).
EPOCH_CHANGED = "the feed's stream was recreated; its epoch is now {epoch}"
EPOCH_CHANGED_EMPTY = "the feed's stream was recreated and has no updates yet"
CURSOR_EXPIRED = "seq {after} is older than this node can replay (it keeps from seq {oldest})"
NOT_CAUGHT_UP = "this node is still reading its stream; resume later"

#: The largest C{seq} a stream offset can be.
MAX_SEQ = 2**63 - 1


#: A bug id as a string: ASCII digits, short enough that int() is cheap.
_NUMERIC = re.compile(r"^\s*[0-9]{1,20}\s*$")


def commandOf(payload: bytes, isBinary: bool) -> Optional[str]:
    """
    @return: The C{command} a client frame names, if it is a JSON object
        with a string there, for echoing in a reply that refuses it.
    """
    if isBinary:
        return None
    try:
        request = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    command = request.get("command") if isinstance(request, dict) else None
    return command if isinstance(command, str) else None


class BadRequest(Exception):
    """
    A command that cannot be carried out; its text is sent to the client.
    """


def _encode(message: Dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Answer:
    """
    What one command gets: a reply, then updates (a catch-up or a replay),
    in order.
    """

    reply: bytes
    updates: Sequence[BugUpdate] = ()


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


def parseAfter(request: Dict[str, Any]) -> Optional[int]:
    """
    Read the optional C{after}: the C{seq} of the last update a client saw.

    @raise BadRequest: If C{after} is not a seq.
    """
    after = request.get("after")
    if after is None:
        return None
    if isinstance(after, float) and math.isfinite(after) and after.is_integer():
        after = int(after)
    if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after <= MAX_SEQ:
        raise BadRequest(INVALID_AFTER)
    return after


def parseEpoch(request: Dict[str, Any]) -> Optional[str]:
    """
    Read the optional C{epoch} a resuming client last saw.

    @raise BadRequest: If C{epoch} is not a string.
    """
    epoch = request.get("epoch")
    if epoch is not None and not isinstance(epoch, str):
        raise BadRequest(INVALID_EPOCH)
    return epoch


class _Command:
    """
    One command from one client, with what answering it needs.
    """

    def __init__(
        self,
        request: Dict[str, Any],
        subscriber: ISubscriber,
        feed: Feed,
        limits: ClientLimits,
    ) -> None:
        self.request = request
        self.subscriber = subscriber
        self.feed = feed
        self.limits = limits

    def checkCapacity(self, bugs: List[int]) -> None:
        held = self.feed.registry.wouldHold(self.subscriber, bugs)
        if held > self.limits.maxSubscriptions:
            raise BadRequest(TOO_MANY_SUBSCRIPTIONS.format(limit=self.limits.maxSubscriptions))


def _subscribe(command: _Command) -> Union[Answer, Deferred]:
    request, feed = command.request, command.feed
    bugs = parseBugIds(request)
    since = parseSince(request)
    after = parseAfter(request)
    epoch = parseEpoch(request)
    if since is not None and after is not None:
        raise BadRequest(SINCE_AND_AFTER)
    command.checkCapacity(bugs)
    if after is None:
        held = feed.registry.subscribe(command.subscriber, bugs)
        missed = feed.history.since(bugs, since) if since is not None else []
        return Answer(okReply("subscribe", bugs=held), missed)
    if feed.caughtUp:
        return _resume(command, bugs, after, epoch)
    # The node's history does not reach the stream's end yet: an exact
    # replay must wait for it, or the client would miss what lies between.
    waiting = feed.whenCaughtUp().addTimeout(command.limits.resumeTimeout, feed.history.clock)

    def resume(_: Any) -> Answer:
        return _guarded("subscribe", lambda: _resume(command, bugs, after, epoch))

    def giveUp(failure: Failure) -> Answer:
        failure.trap(TimeoutError)
        return _guarded("subscribe", lambda: _notRecovered(command, bugs, NOT_CAUGHT_UP))

    return waiting.addCallbacks(resume, giveUp)


def _resume(command: _Command, bugs: List[int], after: int, epoch: Optional[str]) -> Answer:
    """
    Subscribe and replay, in one go, the newest remembered update of each of
    C{bugs} changed after C{after}: nothing can arrive in between, so the
    switch from replay to live has no gap and no duplicate.
    """
    feed, history = command.feed, command.feed.history
    if epoch is not None and epoch != feed.epoch:
        if feed.epoch is None:
            return _notRecovered(command, bugs, EPOCH_CHANGED_EMPTY)
        return _notRecovered(command, bugs, EPOCH_CHANGED.format(epoch=feed.epoch))
    if history.latest is None:
        raise BadRequest(AFTER_ON_EMPTY_FEED)
    if after > history.latest:
        raise BadRequest(AFTER_TOO_NEW.format(after=after, latest=history.latest))
    if not history.covers(after):
        return _notRecovered(
            command, bugs, CURSOR_EXPIRED.format(after=after, oldest=history.oldest)
        )
    command.checkCapacity(bugs)
    held = feed.registry.subscribe(command.subscriber, bugs)
    reply = okReply("subscribe", bugs=held, recovered=True, epoch=feed.epoch)
    replayed = history.after(bugs, after)
    feed.replaysRecovered += 1
    feed.replayedUpdates += len(replayed)
    return Answer(reply, replayed)


def _notRecovered(command: _Command, bugs: List[int], reason: str) -> Answer:
    """
    Subscribe for what comes next, and tell the client that what it missed
    must be read from the tracker.
    """
    command.checkCapacity(bugs)
    held = command.feed.registry.subscribe(command.subscriber, bugs)
    command.feed.replaysNotRecovered += 1
    reply = okReply(
        "subscribe", bugs=held, recovered=False, reason=reason, epoch=command.feed.epoch
    )
    return Answer(reply)


def _unsubscribe(command: _Command) -> Answer:
    bugs = parseBugIds(command.request)
    return Answer(
        okReply("unsubscribe", bugs=command.feed.registry.unsubscribe(command.subscriber, bugs))
    )


def _subscriptions(command: _Command) -> Answer:
    return Answer(
        okReply("subscriptions", bugs=command.feed.registry.subscriptions(command.subscriber))
    )


def _describeFeed(command: _Command) -> Dict[str, Any]:
    history = command.feed.history
    return {
        "version": __version__,
        "epoch": command.feed.epoch,
        "oldest": history.oldest,
        "latest": history.latest,
        "limits": command.limits.announce(),
    }


def _version(command: _Command) -> Answer:
    return Answer(okReply("version", **_describeFeed(command)))


def _hello(command: _Command) -> Answer:
    return Answer(okReply("hello", **_describeFeed(command)))


_COMMANDS: Dict[str, Callable[[_Command], Union[Answer, Deferred]]] = {
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "subscriptions": _subscriptions,
    "version": _version,
    "hello": _hello,
}


def _guarded(command: str, handle: Callable[[], Any]) -> Any:
    try:
        return handle()
    except BadRequest as e:
        return Answer(errorReply(command, str(e)))


def _notJSON(payload: bytes) -> str:
    """
    @return: Why C{payload}, which C{json.loads} refused, is not a message.
    """
    # Python refuses to read integers longer than this, for its own safety;
    # such a frame is JSON, and the client should be told what is wrong.
    digits = sys.get_int_max_str_digits()
    if digits and re.search(rb"[0-9]{%d}" % (digits + 1), payload):
        return NUMBER_TOO_LONG.format(digits=digits)
    return NOT_JSON


def answer(
    payload: bytes,
    isBinary: bool,
    subscriber: ISubscriber,
    feed: Feed,
    limits: ClientLimits,
) -> Union[Answer, Deferred]:
    """
    Carry out one client frame.

    @return: An L{Answer}, or a L{Deferred} firing with one for a resume
        that waits for the node to catch up with its stream.
    """
    if isBinary:
        return Answer(errorReply(None, BINARY))
    try:
        request = json.loads(payload)
    except (ValueError, RecursionError):
        return Answer(errorReply(None, _notJSON(payload)))
    if not isinstance(request, dict):
        return Answer(errorReply(None, NOT_AN_OBJECT))
    if "command" not in request:
        return Answer(errorReply(None, MISSING_COMMAND))
    command = request["command"]
    echoed = command if isinstance(command, str) else None
    handler = _COMMANDS.get(command) if isinstance(command, str) else None
    if handler is None:
        return Answer(errorReply(echoed, INVALID_COMMAND))
    return _guarded(command, lambda: handler(_Command(request, subscriber, feed, limits)))
