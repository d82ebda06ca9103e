"""
Tests for L{bugzfeed.amqp}: the field-table codec, the client fed frames
from an in-memory broker (L{txamqp.testing.AMQPump}) on a L{Clock}, the
AMQP URL parser and the spec.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from decimal import Decimal
from typing import Any, List, Tuple

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from txamqp.connection import Frame
from txamqp.message import Message
from txamqp.protocol import AMQChannel

from bugzfeed.amqp import (
    SPEC_PATH,
    BrokerAddress,
    BugzfeedAMQClient,
    BugzfeedAMQFactory,
    loadSpec,
)
from tests.amqpwire import (
    WireAMQPump,
    bodyFrame,
    decodeTable,
    encodeTable,
    headerFrame,
    longbytes,
    methodFrame,
    sentMethods,
    table,
)

DEBIAN_SPEC = "/usr/share/amqp/specs/0-9-1-rabbit/amqp0-9-1.stripped.extended.xml"
SPEC_TOOL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "make_amqp_spec.py"
)


class FieldTableCodecTests(SynchronousTestCase):
    """
    L{FieldTableCodec} reads every field type RabbitMQ defines and writes
    what Bugzfeed puts in tables.
    """

    #: Each field type RabbitMQ defines: letter, encoded value, decoded value.
    EVERY_TYPE = [
        ("b", struct.pack("!b", -5), -5),
        ("B", struct.pack("!B", 250), 250),
        ("s", struct.pack("!h", -300), -300),
        ("u", struct.pack("!H", 65000), 65000),
        ("I", struct.pack("!i", -(2**31)), -(2**31)),
        ("i", struct.pack("!I", 2**32 - 1), 2**32 - 1),
        ("l", struct.pack("!q", -(2**63)), -(2**63)),
        ("f", struct.pack("!f", 1.5), 1.5),
        ("d", struct.pack("!d", 0.1), 0.1),
        ("T", struct.pack("!Q", 1396559625), 1396559625),
        ("t", b"\x01", True),
        ("S", longbytes("caf\u00e9".encode("utf-8")), "caf\u00e9"),
        ("x", longbytes(b"\x00\xff\x10"), b"\x00\xff\x10"),
        ("F", table(("inner", b"t", b"\x00")), {"inner": False}),
        (
            "A",
            longbytes(b"I" + struct.pack("!i", 1) + b"S" + longbytes(b"two") + b"V"),
            [1, "two", None],
        ),
        ("D", struct.pack("!B", 2) + struct.pack("!i", -12345), Decimal("-123.45")),
        ("V", b"", None),
    ]

    def test_decodesEveryFieldType(self) -> None:
        """
        Every field type of AMQP 0-9-1 as RabbitMQ defines its letters is
        read, each in one table, and the table is read to its end.
        """
        data = table(*[(kind, kind.encode(), value) for kind, value, _ in self.EVERY_TYPE])
        decoded = decodeTable(data)
        self.assertEqual(
            [(kind, decoded[kind]) for kind, _, _ in self.EVERY_TYPE],
            [(kind, expected) for kind, _, expected in self.EVERY_TYPE],
        )
        # Types, not just values: 1 == True == Decimal(1).
        self.assertEqual(
            [type(decoded[kind]) for kind, _, _ in self.EVERY_TYPE],
            [type(expected) for _, _, expected in self.EVERY_TYPE],
        )

    def test_roundTrip(self) -> None:
        """
        What the codec writes, it reads back equal: booleans, integers of
        both widths, strings, byte strings, nested tables and void.
        """
        value = {
            "yes": True,
            "no": False,
            "small": -7,
            "offset": 2**40,
            "negative": -(2**40),
            "queue-type": "stream",
            "raw": b"\x00\xff",
            "nested": {"deeper": {"n": 1}, "empty": {}},
            "nothing": None,
        }
        decoded = decodeTable(encodeTable(value))
        self.assertEqual(decoded, value)
        self.assertEqual(
            {key: type(item) for key, item in decoded.items()},
            {key: type(item) for key, item in value.items()},
        )

    def test_roundTripEveryDecodedValue(self) -> None:
        """
        A table read from the broker can be written back and read again
        unchanged, for the types the codec writes.
        """
        writable = [
            # Non-ASCII strings: see test_nonASCIIStringsRoundTrip.
            (kind, data, value) if kind != "S" else ("S", longbytes(b"stream"), "stream")
            for kind, data, value in self.EVERY_TYPE
            # Floats, arrays and decimals are read but never written.
            if kind not in "fdAD"
        ]
        decoded = decodeTable(table(*[(kind, kind.encode(), data) for kind, data, _ in writable]))
        self.assertEqual(decodeTable(encodeTable(decoded)), decoded)

    def test_integerWidths(self) -> None:
        """
        An integer within signed 32 bits is written as C{I}; one outside,
        such as a stream offset, as C{l}; a boolean as C{t}.
        """
        cases = [
            (0, b"I"),
            (2**31 - 1, b"I"),
            (-(2**31), b"I"),
            (2**31, b"l"),
            (-(2**31) - 1, b"l"),
            (2**40, b"l"),
            (2**63 - 1, b"l"),
            (True, b"t"),
        ]
        for value, kind in cases:
            data = encodeTable({"k": value})
            # size (4), name length (1), name (1), then the type letter.
            self.assertEqual((value, data[6:7]), (value, kind))
            self.assertEqual(decodeTable(data), {"k": value})

    def test_unknownFieldTypeRefused(self) -> None:
        """
        A field type letter outside AMQP 0-9-1 is refused with
        L{ValueError}, inside a table and inside an array.
        """
        self.assertRaises(ValueError, decodeTable, table(("k", b"Z", b"")))
        self.assertRaises(ValueError, decodeTable, table(("k", b"A", longbytes(b"Z"))))

    def test_unknownPythonTypeRefused(self) -> None:
        """
        A value the codec cannot write is refused with L{TypeError} rather
        than written wrongly.
        """
        self.assertRaises(TypeError, encodeTable, {"k": object()})

    def test_nonASCIIStringsRoundTrip(self) -> None:
        """
        Names and string values outside ASCII are written with their length
        in octets, so they read back equal.
        """
        value = {"caf\u00e9": "cr\u00e8me br\u00fbl\u00e9e"}
        self.assertEqual(decodeTable(encodeTable(value)), value)


class BugzfeedAMQClientTests(SynchronousTestCase):
    """
    A client built by L{BugzfeedAMQFactory} on a L{Clock}, connected to an
    L{AMQPump} standing in for RabbitMQ.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        # Runs last, once every connect() cleanup has lost its connection.
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))
        self.factory = BugzfeedAMQFactory(self.clock)
        self.client, self.pump = self.connect()
        self.delivered: List[Tuple[AMQChannel, Message]] = []
        self.confirms: List[Tuple[int, bool, bool]] = []
        self.returned: List[Message] = []
        self.cancelled: List[str] = []
        self.client.setHandlers(
            onDeliver=lambda channel, message: self.delivered.append((channel, message)),
            onConfirm=lambda *confirm: self.confirms.append(confirm),
            onReturn=self.returned.append,
            onCancel=self.cancelled.append,
        )

    def connect(self) -> Tuple[BugzfeedAMQClient, WireAMQPump]:
        """
        @return: A new client from the factory and the pump it is connected
            to; the connection is lost at the end of the test.
        """
        client = self.factory.buildProtocol(None)
        pump = WireAMQPump()
        pump.connect(client)
        self.addCleanup(pump.loseConnection)
        return client, pump

    def methodFrame(self, channel: int, klass: str, method: str, **fields: Any) -> bytes:
        return methodFrame(self.client, channel, klass, method, **fields)

    def headerFrame(self, channel: int, bodySize: int, headers: bytes = b"") -> bytes:
        return headerFrame(channel, bodySize, headers)

    def bodyFrame(self, channel: int, body: bytes) -> bytes:
        return bodyFrame(channel, body)

    def sentMethods(self, channel: int) -> List[str]:
        return sentMethods(self.pump, channel)

    def assertStillConnected(self) -> None:
        self.assertTrue(self.pump.connected)
        self.assertFalse(self.client.closed)

    def test_deliveryWithStreamOffset(self) -> None:
        """
        A delivery whose header carries C{x-stream-offset} as a signed
        64-bit (C{l}) value, as a stream sends it, is decoded and handed to
        C{onDeliver}, and the connection stays open.
        """
        headers = table(("x-stream-offset", b"l", struct.pack("!q", 2**40)))
        body = b'{"payload":{"id":1}}'
        self.pump.receive(
            self.methodFrame(
                1,
                "basic",
                "deliver",
                consumer_tag="bugzfeed-1",
                delivery_tag=5,
                exchange="e",
                routing_key="1",
            )
            + self.headerFrame(1, len(body), headers)
            + self.bodyFrame(1, body)
        )
        [(channel, message)] = self.delivered
        self.assertEqual(channel.id, 1)
        self.assertEqual(
            (message.consumer_tag, message.delivery_tag, message.routing_key),
            ("bugzfeed-1", 5, "1"),
        )
        self.assertEqual(message.content.properties, {"headers": {"x-stream-offset": 2**40}})
        self.assertEqual(message.content.body, body)
        self.assertStillConnected()

    def test_nonASCIIBodyArrivesAsBytes(self) -> None:
        """
        A body that is valid non-ASCII UTF-8 arrives as the exact bytes,
        whether it comes in one body frame or in two split inside a
        character.
        """
        body = ("\u00e9" * 3).encode("utf-8")
        for tag, frames in [(1, [body]), (2, [body[:1], body[1:]])]:
            self.pump.receive(
                self.methodFrame(1, "basic", "deliver", consumer_tag="bugzfeed-1", delivery_tag=tag)
                + self.headerFrame(1, len(body))
                + b"".join(self.bodyFrame(1, frame) for frame in frames)
            )
        self.assertEqual(
            [(message.delivery_tag, message.content.body) for _, message in self.delivered],
            [(1, b"\xc3\xa9\xc3\xa9\xc3\xa9"), (2, b"\xc3\xa9\xc3\xa9\xc3\xa9")],
        )
        self.assertStillConnected()

    def deliveries(self, count: int) -> bytes:
        """
        @return: C{count} encoded deliveries, tags 1 to C{count}, bodies
            naming their tag.
        """
        frames = []
        for tag in range(1, count + 1):
            body = b'{"tag":%d}' % tag
            frames.append(
                self.methodFrame(1, "basic", "deliver", consumer_tag="bugzfeed-1", delivery_tag=tag)
                + self.headerFrame(1, len(body))
                + self.bodyFrame(1, body)
            )
        return b"".join(frames)

    def test_framesSplitAnywhereAreReadWhole(self) -> None:
        """
        However the bytes of many frames are cut into reads (all at once,
        one byte at a time, or in chunks that split headers and bodies),
        every delivery arrives once, in order, whole.
        """
        data = self.deliveries(200)
        for chunk in (len(data), 1, 7, 4096):
            self.delivered.clear()
            for start in range(0, len(data), chunk):
                self.pump.receive(data[start : start + chunk])
            self.assertEqual(
                [(m.delivery_tag, m.content.body) for _, m in self.delivered],
                [(tag, b'{"tag":%d}' % tag) for tag in range(1, 201)],
                f"chunks of {chunk}",
            )
        self.assertStillConnected()

    def test_frameOverFrameMaxClosesTheConnection(self) -> None:
        """
        A frame longer than the agreed C{frame_max} is reported, and the
        connection closed rather than read as garbage.
        """
        self.client.MAX_LENGTH = 4096
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        body = b"x" * 5000
        self.pump.receive(self.bodyFrame(1, body)[:4200])
        self.assertFalse(self.pump.connected)
        self.assertIn("more than agreed", formatEvent(logged[-1]))

    def test_confirms(self) -> None:
        """
        The broker's C{basic.ack} and C{basic.nack} reach C{onConfirm} as
        C{(delivery_tag, multiple, acked)}.
        """
        self.pump.receive(
            self.methodFrame(1, "basic", "ack", delivery_tag=7, multiple=True)
            + self.methodFrame(1, "basic", "nack", delivery_tag=8, multiple=False, requeue=False)
        )
        self.assertEqual(self.confirms, [(7, True, True), (8, False, False)])
        self.assertStillConnected()

    def test_returnReachesOnReturn(self) -> None:
        """
        A C{basic.return} (an unroutable mandatory message) reaches
        C{onReturn} with its body.
        """
        self.pump.pumpMethod(
            1,
            "basic",
            "return",
            reply_code=312,
            reply_text="NO_ROUTE",
            exchange="e",
            routing_key="42",
        )
        self.pump.pumpHeader(1, "basic", 0, 4)
        self.pump.pumpBody(1, b"body")
        [message] = self.returned
        self.assertEqual((message.reply_code, message.routing_key), (312, "42"))
        self.assertEqual(message.content.body, b"body")
        self.assertStillConnected()

    def test_brokerCancelCallsOnCancel(self) -> None:
        """
        A C{basic.cancel} from the broker (as RabbitMQ sends when a consumed
        queue is deleted, with C{no-wait} set) calls C{onCancel} with the
        consumer tag; nothing is answered and the connection stays open.
        """
        self.pump.channel(1).basic_cancel(consumer_tag="bugzfeed-1", no_wait=True)
        self.assertEqual(self.cancelled, ["bugzfeed-1"])
        self.assertEqual(self.sentMethods(1), [])
        self.assertStillConnected()

    def test_brokerCancelAnswered(self) -> None:
        """
        A C{basic.cancel} from the broker without C{no-wait} is answered
        with C{basic.cancel-ok}.
        """
        self.pump.channel(1).basic_cancel(consumer_tag="bugzfeed-1", no_wait=False)
        self.assertEqual(self.sentMethods(1), ["basic.cancel-ok"])
        self.assertEqual(self.pump.outgoing[1][0].payload.args, ("bugzfeed-1",))
        self.assertEqual(self.cancelled, ["bugzfeed-1"])

    def test_brokerCancelWithoutHandlerCloses(self) -> None:
        """
        Without C{onCancel}, a C{basic.cancel} from the broker closes the
        connection, so that the reconnect consumes anew.
        """
        self.client.setHandlers(onCancel=None)
        self.pump.channel(1).basic_cancel(consumer_tag="bugzfeed-1", no_wait=True)
        self.assertFalse(self.pump.connected)
        self.assertTrue(self.client.closed)

    def test_channelClosedByBrokerClosesConnection(self) -> None:
        """
        A channel the broker closes (here: a queue not found) is
        acknowledged with C{channel.close-ok}, then the whole connection is
        closed, so that L{ClientService} reconnects.
        """
        self.pump.channel(1).channel_close(
            reply_code=404, reply_text="NOT_FOUND", class_id=50, method_id=10
        )
        self.assertEqual(self.sentMethods(1), ["channel.close-ok"])
        self.assertFalse(self.pump.connected)
        self.assertTrue(self.client.closed)

    def test_channelClosedByBrokerCallsHandler(self) -> None:
        """
        With C{onChannelClosed} set, a channel the broker closes is handed
        to it with the broker's reason, and the connection stays open.
        """
        closed: List[Tuple[AMQChannel, Any]] = []
        self.client.setHandlers(
            onChannelClosed=lambda channel, reason: closed.append((channel, reason))
        )
        self.pump.channel(1).channel_close(
            reply_code=404, reply_text="NOT_FOUND", class_id=50, method_id=10
        )
        [(channel, reason)] = closed
        self.assertEqual(channel.id, 1)
        self.assertEqual(reason.value.reply_code, 404)
        self.assertStillConnected()

    def test_unknownHandlerRefused(self) -> None:
        """
        C{setHandlers} refuses a name that is not one of the C{on*}
        callables, rather than setting a handler nobody calls.
        """
        self.assertRaises(TypeError, self.client.setHandlers, onDelivery=print)
        self.assertRaises(TypeError, self.client.setHandlers, close=print)

    def openConnection(self, client: BugzfeedAMQClient, pump: WireAMQPump, heartbeat: int) -> None:
        """
        Play the broker's side of connection.start, tune and open.
        """
        d = client.start({"LOGIN": "guest", "PASSWORD": "guest"})
        broker = pump.channel(0)
        broker.connection_start(
            version_major=0, version_minor=9, mechanisms="AMQPLAIN", locales="en_US"
        )
        broker.connection_tune(channel_max=0, frame_max=131072, heartbeat=heartbeat)
        broker.connection_open_ok()
        self.successResultOf(d)
        self.assertEqual(
            [frame.payload.method.name for frame in pump.outgoing[0]],
            ["start-ok", "tune-ok", "open"],
        )

    def test_heartbeatSentOnClock(self) -> None:
        """
        With a heartbeat set on the factory (as L{AMQEndpoint} does), the
        client sends a heartbeat frame every interval of the factory's
        clock once the connection is tuned.
        """
        self.factory.set_heartbeat(5)
        client, pump = self.connect()
        self.openConnection(client, pump, heartbeat=5)

        def heartbeats() -> int:
            return sum(frame.payload.type == Frame.HEARTBEAT for frame in pump.outgoing[0])

        self.clock.advance(4.9)
        self.assertEqual(heartbeats(), 0)
        self.clock.advance(0.1)
        self.assertEqual(heartbeats(), 1)
        self.clock.advance(5)
        self.assertEqual(heartbeats(), 2)
        self.assertTrue(pump.connected)

    def test_silentBrokerDropped(self) -> None:
        """
        A broker silent for three heartbeat intervals of the factory's clock
        is dropped.
        """
        self.factory.set_heartbeat(5)
        client, pump = self.connect()
        self.openConnection(client, pump, heartbeat=5)
        self.clock.advance(14.9)
        self.assertTrue(pump.connected)
        self.clock.advance(0.1)
        self.assertTrue(pump.aborted)


class BrokerAddressTests(SynchronousTestCase):
    """
    L{BrokerAddress.fromURL} reads an C{amqp://} URL.
    """

    def test_fullURL(self) -> None:
        """
        User, percent-decoded password, host, port and virtual host are all
        taken from the URL; the password is not shown.
        """
        address = BrokerAddress.fromURL("amqp://user:p%40ss@host:5673/vhost")
        self.assertEqual(
            (address.host, address.port, address.username, address.password, address.vhost),
            ("host", 5673, "user", "p@ss", "vhost"),
        )
        self.assertNotIn("p%40ss", repr(address) + address.url)

    def test_defaults(self) -> None:
        """
        Without credentials, port or path, the URL means guest/guest on port
        5672 and the virtual host C{/}.
        """
        for url in ["amqp://host", "amqp://host/"]:
            address = BrokerAddress.fromURL(url)
            self.assertEqual(
                (address.port, address.username, address.password, address.vhost),
                (5672, "guest", "guest", "/"),
                url,
            )

    def test_encodedVirtualHostAndIPv6(self) -> None:
        """
        A percent-encoded virtual host is decoded (C{%2F} is C{/}), and an
        IPv6 host loses its brackets.
        """
        address = BrokerAddress.fromURL("amqp://[::1]:5673/%2F")
        self.assertEqual((address.host, address.port, address.vhost), ("::1", 5673, "/"))

    def test_notAnAMQPURL(self) -> None:
        """
        A URL of another scheme, without a host or with a bad port, is
        refused with L{ValueError}, and the message does not repeat the
        password.
        """
        for url in [
            "http://user:secret@host/",
            "amqps://user:secret@host/",
            "host:5672",
            "amqp:///vhost",
            "amqp://user:secret@host:99999/",
            "amqp://user:secret@[::1/",
        ]:
            error = self.assertRaises(ValueError, BrokerAddress.fromURL, url)
            self.assertNotIn("secret", str(error))


class SpecTests(SynchronousTestCase):
    """
    The AMQP spec Bugzfeed ships, and the tool that makes it.
    """

    def test_loadSpec(self) -> None:
        """
        L{loadSpec} loads the shipped AMQP 0-9-1 spec, once, and it has
        RabbitMQ's publisher confirms: C{confirm.select} and
        C{basic.nack}.
        """
        spec = loadSpec()
        self.assertIs(loadSpec(), spec)
        self.assertEqual((spec.major, spec.minor), (0, 9))
        self.assertIn("select", spec.classes.byname["confirm"].methods.byname)
        nack = spec.classes.byname["basic"].methods.byname["nack"]
        self.assertEqual(
            [field.name for field in nack.fields], ["delivery-tag", "multiple", "requeue"]
        )

    def test_committedSpecIsGenerated(self) -> None:
        """
        The committed C{bugzfeed/amqp0-9-1.xml} is exactly what
        C{tools/make_amqp_spec.py} renders from Debian's AMQP spec.
        """
        if not os.path.exists(DEBIAN_SPEC):
            missing = f"{DEBIAN_SPEC} is not installed (Debian package amqp-specs)"
            # scripts/install installs it: under CI its absence is a fault.
            if os.environ.get("CI") == "true":
                self.fail(missing)
            raise SkipTest(missing)
        moduleSpec = importlib.util.spec_from_file_location("make_amqp_spec", SPEC_TOOL)
        assert moduleSpec is not None and moduleSpec.loader is not None
        tool = importlib.util.module_from_spec(moduleSpec)
        moduleSpec.loader.exec_module(tool)
        with open(SPEC_PATH, "rb") as committed:
            self.assertEqual(tool.renderSpec(DEBIAN_SPEC), committed.read())
