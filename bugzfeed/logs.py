"""
JSON lines logs for log shippers:
C{twistd --logger=bugzfeed.logs.jsonObserver bugzfeed ...} writes one JSON
object a line to standard output, such as::

  {"time": "2026-12-03T19:01:02.345678Z", "level": "info",
   "namespace": "bugzfeed.consumer.FeedConsumer",
   "text": "Consuming bugzfeed.exchange/bugzilla/simple from offset first",
   "stream": "bugzfeed.exchange/bugzilla/simple", "offset": "first"}

C{time} is UTC, C{level} one of C{debug}, C{info}, C{warn}, C{error},
C{critical}, C{text} the formatted message (with the traceback, if any, in
C{traceback}); the event's own fields follow where JSON can hold them.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO, Any, Dict, Optional

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

#: Keys of the record itself; event fields of these names are left out.
_RECORD_KEYS = frozenset({"time", "level", "namespace", "text", "traceback", "system"})

#: Legacy (twisted.python.log) keys that only repeat what the record says.
_LEGACY_KEYS = frozenset({"message", "format", "isError", "failure", "why", "time"})

#: Nesting kept in a field's value; deeper values are dropped.
_MAX_DEPTH = 8


def _jsonSafe(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if depth >= _MAX_DEPTH:
        return False
    if isinstance(value, (list, tuple)):
        return all(_jsonSafe(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and _jsonSafe(item, depth + 1) for key, item in value.items()
        )
    return False


def eventAsRecord(event: Dict[str, Any]) -> Dict[str, Any]:
    """
    @return: C{event} as a flat, JSON-safe record: C{time}, C{level},
        C{namespace}, C{text}, C{traceback} if a failure is attached, then
        the event's own JSON-safe fields.
    """
    level = event.get("log_level", LogLevel.info)
    record: Dict[str, Any] = {
        "time": _isoTime(event.get("log_time")),
        "level": getattr(level, "name", str(level)),
        "namespace": event.get("log_namespace", "-"),
        "text": formatEvent(event),
    }
    system = event.get("log_system")
    if isinstance(system, str) and system != "-":
        record["system"] = system
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = repr(failure)
    legacy = "log_legacy" in event or "log_text" in event
    for key, value in event.items():
        if key.startswith("log_") or key in _RECORD_KEYS or key in record:
            continue
        if legacy and key in _LEGACY_KEYS:
            continue
        if _jsonSafe(value):
            record[key] = value
    return record


def _isoTime(seconds: Optional[float]) -> Optional[str]:
    if not isinstance(seconds, (int, float)):
        return None
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@implementer(ILogObserver)
class JSONLinesObserver:
    """
    Writes each event as one line of JSON to a text file.
    """

    def __init__(self, output: IO[str]) -> None:
        self._output = output

    def __call__(self, event: Dict[str, Any]) -> None:
        try:
            line = json.dumps(eventAsRecord(event), ensure_ascii=False, separators=(",", ":"))
        except Exception as e:
            # An observer must not raise; say what could not be written.
            line = json.dumps({"level": "error", "text": f"unloggable event: {e!r}"})
        self._output.write(line + "\n")
        # A pipe (journald, a shipper) would otherwise hold lines back.
        self._output.flush()


def jsonObserver() -> JSONLinesObserver:
    """
    The observer factory for C{twistd --logger}: JSON lines on the standard
    output twistd started with (taken now, before twistd redirects
    C{sys.stdout} into the log).
    """
    return JSONLinesObserver(sys.stdout)
