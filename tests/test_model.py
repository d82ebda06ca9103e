"""
Tests for L{bugzfeed.model}.
"""

import json
from datetime import datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.model import (
    BugUpdate,
    MalformedEnvelope,
    decodePulseEnvelope,
    encodePulseEnvelope,
    toUTC,
)


class BugUpdateTests(SynchronousTestCase):
    def test_jsonHasCommandBugWhenAndSeq(self) -> None:
        """
        An update is pushed as C{update} with the bug, its time in UTC to the
        second with no zone suffix, and its stream offset.
        """
        update = BugUpdate(1234, datetime(2014, 4, 3, 21, 13, 45), seq=4711)
        self.assertEqual(
            json.loads(update.toJSON()),
            {"command": "update", "bug": 1234, "when": "2014-04-03T21:13:45", "seq": 4711},
        )

    def test_jsonWithoutSeq(self) -> None:
        """
        An update not read from a stream carries no C{seq}.
        """
        self.assertNotIn("seq", json.loads(BugUpdate(1, datetime(2014, 1, 1)).toJSON()))

    def test_jsonIsCompactJSON(self) -> None:
        """
        The hand-formatted encoding is byte for byte what C{json.dumps}
        writes, for any bug, offset and time (four-digit years too, and
        never a fraction of a second).
        """
        for update in [
            BugUpdate(1, datetime(2014, 4, 3, 21, 13, 45), seq=0),
            BugUpdate(2**31 - 1, datetime(1, 1, 1), seq=2**63 - 1),
            BugUpdate(7, datetime(999, 12, 31, 23, 59, 59, 999999)),
        ]:
            message = {"command": "update", "bug": update.bug, "when": ""}
            message["when"] = update.when.replace(microsecond=0).isoformat()
            if update.seq is not None:
                message["seq"] = update.seq
            self.assertEqual(update.toJSON(), json.dumps(message, separators=(",", ":")).encode())

    def test_toUTCConvertsZonesAndDropsMicroseconds(self) -> None:
        """
        A zone-aware time becomes naive UTC; a naive one is taken as UTC.
        """
        zoned = datetime(2014, 4, 3, 23, 13, 45, 999, tzinfo=timezone(timedelta(hours=2)))
        self.assertEqual(toUTC(zoned), datetime(2014, 4, 3, 21, 13, 45))
        self.assertEqual(
            toUTC(datetime(2014, 4, 3, 21, 13, 45, 5)), datetime(2014, 4, 3, 21, 13, 45)
        )


class PulseEnvelopeTests(SynchronousTestCase):
    def test_envelopeShape(self) -> None:
        """
        The shim's message is Mozilla Pulse's envelope: the payload with the
        bug id and change time, and C{_meta} with exchange, routing key,
        serializer and the time sent with its zone.
        """
        changed = datetime(2014, 4, 3, 21, 13, 45, tzinfo=timezone.utc)
        sent = datetime(2014, 4, 3, 21, 13, 46, tzinfo=timezone.utc)
        envelope = json.loads(encodePulseEnvelope(1234, changed, "exchange/x", sent))
        self.assertEqual(
            envelope,
            {
                "payload": {"id": 1234, "delta_ts": "2014-04-03T21:13:45+00:00"},
                "_meta": {
                    "exchange": "exchange/x",
                    "routing_key": "1234",
                    "serializer": "json",
                    "sent": "2014-04-03T21:13:46+00:00",
                },
            },
        )

    def test_roundTrip(self) -> None:
        """
        What the shim encodes, the server decodes to the same bug and time in
        UTC, with the offset it was read at.
        """
        changed = datetime(2014, 4, 3, 23, 13, 45, tzinfo=timezone(timedelta(hours=2)))
        body = encodePulseEnvelope(7, changed, "x", datetime.now(timezone.utc))
        self.assertEqual(
            decodePulseEnvelope(body, seq=3).update,
            BugUpdate(7, datetime(2014, 4, 3, 21, 13, 45), 3),
        )

    def test_sentTime(self) -> None:
        """
        The time the shim sent a message is read back; a missing or bad one
        is L{None}, not an error.
        """
        changed = datetime(2014, 4, 3, 21, 13, 45, tzinfo=timezone.utc)
        body = encodePulseEnvelope(7, changed, "x", changed + timedelta(seconds=2))
        self.assertEqual(decodePulseEnvelope(body).sent, changed + timedelta(seconds=2))
        for meta in [None, {}, {"sent": "soon"}, {"sent": 5}]:
            envelope = json.loads(body)
            envelope["_meta"] = meta
            self.assertIsNone(decodePulseEnvelope(json.dumps(envelope).encode()).sent)

    def test_malformed(self) -> None:
        """
        Bodies that are not bug envelopes raise L{MalformedEnvelope}, never
        anything else.
        """
        for body in [
            b"",
            b"\xff",
            b"[]",
            b"{}",
            b'{"payload": 5}',
            b'{"payload": {"id": 1}}',
            b'{"payload": {"id": 1, "delta_ts": "yesterday"}}',
            b'{"payload": {"id": "1", "delta_ts": "2014-04-03T21:13:45"}}',
            b'{"payload": {"id": 0, "delta_ts": "2014-04-03T21:13:45"}}',
            b'{"payload": {"id": true, "delta_ts": "2014-04-03T21:13:45"}}',
            b'{"payload": {"id": 2147483648, "delta_ts": "2014-04-03T21:13:45"}}',
            b'{"payload": {"id": 1, "delta_ts": 5}}',
        ]:
            self.assertRaises(MalformedEnvelope, decodePulseEnvelope, body)
