"""
Value types shared by the shim and the server: a bug update, its JSON form
for clients, and the Mozilla Pulse envelope it travels in through RabbitMQ.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Optional

import attr

#: Bug ids are PostgreSQL C{integer}s: positive and below 2**31.
MAX_BUG_ID = 2**31 - 1


#: Prefix of the stream that carries an exchange's updates to the server;
#: the rest is the exchange name, so two exchanges never share a stream.
STREAM_PREFIX = "bugzfeed."

#: AMQP's limit on exchange and queue names, in bytes.
MAX_NAME_BYTES = 255

#: The longest exchange name whose stream name still fits.
MAX_EXCHANGE_BYTES = MAX_NAME_BYTES - len(STREAM_PREFIX)


def streamName(exchange: str) -> str:
    """
    @return: The name of the RabbitMQ stream bound to C{exchange}.
    """
    return STREAM_PREFIX + exchange


class MalformedEnvelope(ValueError):
    """
    A message body is not a Pulse envelope carrying a bug update.
    """


def toUTC(when: datetime) -> datetime:
    """
    Return C{when} as a naive UTC datetime, to the second.

    A naive C{when} is taken to be UTC already.
    """
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when.replace(microsecond=0)


def formatWhen(when: datetime) -> str:
    """
    Format a naive UTC datetime as clients expect it: ISO 8601 to the
    second, no zone suffix (C{2014-04-03T21:13:45}).
    """
    return when.isoformat(timespec="seconds")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class BugUpdate:
    """
    One change of one bug.

    @ivar bug: The bug id.
    @ivar when: The change's C{delta_ts}, naive UTC, to the second.
    @ivar seq: The update's offset in its feed's stream, or L{None} before
        it has been read back from one.
    """

    bug: int
    when: datetime
    seq: Optional[int] = None

    def toJSON(self) -> bytes:
        """
        Encode this update as the C{update} message pushed to clients.
        """
        # Formatted by hand, as json.dumps would (ints and an ASCII date):
        # a replay encodes thousands of these at once.
        when = formatWhen(self.when)
        if self.seq is None:
            return b'{"command":"update","bug":%d,"when":"%s"}' % (self.bug, when.encode())
        return b'{"command":"update","bug":%d,"when":"%s","seq":%d}' % (
            self.bug,
            when.encode(),
            self.seq,
        )


def encodePulseEnvelope(bug: int, deltaTs: datetime, exchange: str, sent: datetime) -> bytes:
    """
    Wrap a change in Mozilla Pulse's envelope, so that existing Pulse
    consumers can read what the shim publishes.

    @param deltaTs: The change time, zone-aware.
    @param sent: The time of publishing, zone-aware.
    """
    envelope = {
        "payload": {"id": bug, "delta_ts": deltaTs.isoformat()},
        "_meta": {
            "exchange": exchange,
            "routing_key": str(bug),
            "serializer": "json",
            "sent": sent.isoformat(),
        },
    }
    return json.dumps(envelope, separators=(",", ":")).encode("utf-8")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class PulseMessage:
    """
    What the server reads from a Pulse envelope.

    @ivar update: The bug update it carries.
    @ivar sent: When the shim published it (zone-aware), if it says.
    """

    update: BugUpdate
    sent: Optional[datetime]


def decodePulseEnvelope(body: bytes, seq: Optional[int] = None) -> PulseMessage:
    """
    Read the bug update, and the time it was sent, out of a Pulse envelope.

    @raise MalformedEnvelope: If C{body} is not an envelope with a valid bug
        id and change time.
    """
    try:
        envelope = json.loads(body)
        payload = envelope["payload"]
        bug = payload["id"]
        deltaTs = datetime.fromisoformat(payload["delta_ts"])
        update = BugUpdate(bug=bug, when=toUTC(deltaTs), seq=seq)
    except (ValueError, TypeError, KeyError, OverflowError) as e:
        raise MalformedEnvelope(f"not a Pulse bug envelope: {e!r}") from e
    if type(bug) is not int or not 0 < bug <= MAX_BUG_ID:
        raise MalformedEnvelope(f"invalid bug id {bug!r}")
    return PulseMessage(update, _sentTime(envelope))


def _sentTime(envelope: dict) -> Optional[datetime]:
    try:
        sent = datetime.fromisoformat(envelope["_meta"]["sent"])
    except (ValueError, TypeError, KeyError):
        return None
    return sent if sent.tzinfo is not None else sent.replace(tzinfo=timezone.utc)
