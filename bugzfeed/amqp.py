"""
txAMQP, fixed for Python 3 and for what Bugzfeed asks of RabbitMQ.

Stock txAMQP 0.8 on Python 3:
  - ships no AMQP spec: we load our own, L{SPEC_PATH};
  - decodes only four field-table types, while a stream delivery carries
    its offset as a signed 64-bit (C{l}) header;
  - encodes every integer in a table as unsigned 32-bit, and gives
    non-ASCII strings their length in characters rather than bytes;
  - turns message bodies that happen to be UTF-8 into C{str} (and then
    miscounts their length);
  - has no delegate methods for publisher confirms (C{basic.ack},
    C{basic.nack}) or a consumer cancelled by the broker, so the first
    confirm kills the connection.

L{BugzfeedAMQClient} decodes and encodes frames with L{FieldTableCodec} and
keeps bodies as bytes; L{BugzfeedDelegate} routes confirms, returns,
deliveries and cancels to callables on the client.
"""

from __future__ import annotations

import os
import struct
from decimal import Decimal
from functools import lru_cache
from io import BytesIO
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import unquote, urlsplit

import attr
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.logger import Logger
from txamqp.client import TwistedDelegate
from txamqp.codec import Codec
from txamqp.connection import Body, Frame, Header, Method
from txamqp.content import Content
from txamqp.factory import AMQFactory
from txamqp.message import Message
from txamqp.protocol import AMQChannel, AMQClient, GarbageException
from txamqp.spec import Spec, load, pythonize
from zope.interface import implementer

from bugzfeed.config import redactURL

_log = Logger()

#: The AMQP 0-9-1 spec with RabbitMQ's extensions, structure only; made by
#: C{tools/make_amqp_spec.py}.
SPEC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "amqp0-9-1.xml")

_INT32 = range(-(2**31), 2**31)


@lru_cache(maxsize=None)
def loadSpec(path: str = SPEC_PATH) -> Spec:
    """
    Load (once) the spec at C{path}.
    """
    return load(path)


class FieldTableCodec(Codec):
    """
    A codec that reads every AMQP 0-9-1 field type, as RabbitMQ defines
    their letters, and writes integers at the width they need.
    """

    _FIXED = {
        b"b": "!b",
        b"B": "!B",
        b"s": "!h",
        b"u": "!H",
        b"I": "!i",
        b"i": "!I",
        b"l": "!q",
        b"f": "!f",
        b"d": "!d",
        b"T": "!Q",
    }

    def enc_str(self, fmt: str, s: Any) -> None:
        # Codec.enc_str counts characters, then writes UTF-8 bytes.
        if isinstance(s, str):
            s = s.encode("utf-8")
        self.pack(fmt, len(s))
        self.write(s)

    def decode_table(self) -> Dict[str, Any]:
        size = self.decode_long()
        start = self.nread
        result = {}
        while self.nread - start < size:
            key = self.decode_shortstr()
            result[key] = self._decodeValue(self.read(1))
        return result

    def _decodeValue(self, kind: bytes) -> Any:
        if kind in self._FIXED:
            return self.unpack(self._FIXED[kind])
        if kind == b"t":
            return self.decode_octet() != 0
        if kind == b"S":
            return self.decode_longstr()
        if kind == b"x":
            return self.decode_longbytes()
        if kind == b"F":
            return self.decode_table()
        if kind == b"A":
            size = self.decode_long()
            start = self.nread
            values = []
            while self.nread - start < size:
                values.append(self._decodeValue(self.read(1)))
            return values
        if kind == b"D":
            places = self.decode_octet()
            return Decimal(self.unpack("!i")).scaleb(-places)
        if kind == b"V":
            return None
        raise ValueError(f"unknown field type {kind!r}")

    def encode_table(self, tbl: Dict[str, Any]) -> None:
        inner = FieldTableCodec(BytesIO())
        for key, value in tbl.items():
            inner.encode_shortstr(key)
            inner._encodeValue(value)
        data = inner.stream.getvalue()
        self.encode_long(len(data))
        self.write(data)

    def _encodeValue(self, value: Any) -> None:
        if isinstance(value, bool):
            self.write(b"t")
            self.encode_octet(1 if value else 0)
        elif isinstance(value, int):
            if value in _INT32:
                self.write(b"I")
                self.pack("!i", value)
            else:
                self.write(b"l")
                self.pack("!q", value)
        elif isinstance(value, str):
            self.write(b"S")
            self.encode_longstr(value)
        elif isinstance(value, bytes):
            self.write(b"x")
            self.encode_longbytes(value)
        elif isinstance(value, dict):
            self.write(b"F")
            self.encode_table(value)
        elif value is None:
            self.write(b"V")
        else:
            raise TypeError(f"cannot encode {type(value).__name__} in a field table")


#: The size field of a frame's header: after its type (1 byte) and channel (2).
_FRAME_SIZE = struct.Struct("!I")


def _decodeMethod(spec: Spec, codec: Codec) -> Method:
    inner = FieldTableCodec(BytesIO(codec.decode_longbytes()))
    klass = spec.classes.byid[inner.decode_short()]
    method = klass.methods.byid[inner.decode_short()]
    return Method(method, *[inner.decode(field.type) for field in method.fields])


def _encodeMethod(payload: Method, codec: Codec) -> None:
    inner = FieldTableCodec(BytesIO())
    inner.encode_short(payload.method.klass.id)
    inner.encode_short(payload.method.id)
    for field, arg in zip(payload.method.fields, payload.args):
        inner.encode(field.type, arg)
    inner.flush()
    codec.encode_longbytes(inner.stream.getvalue())


def _decodeHeader(spec: Spec, codec: Codec) -> Header:
    inner = FieldTableCodec(BytesIO(codec.decode_longbytes()))
    klass = spec.classes.byid[inner.decode_short()]
    weight = inner.decode_short()
    size = inner.decode_longlong()
    present: List[bool] = []
    while True:
        flags = inner.decode_short()
        present.extend(bool(flags >> bit & 1) for bit in range(15, 0, -1))
        # The lowest bit says whether another flags word follows.
        if not flags & 1:
            break
    properties = {
        str(field.name): inner.decode(field.type)
        for isPresent, field in zip(present, klass.fields)
        if isPresent
    }
    return Header(klass, weight, size, **properties)


class BugzfeedAMQClient(AMQClient):
    """
    An L{AMQClient} whose frames go through L{FieldTableCodec}, whose bodies
    stay bytes, and which hands broker events to callables:

    @ivar onDeliver: Called with C{(channel, message)} for each delivery.
    @ivar onConfirm: Called with C{(deliveryTag, multiple, acked)} for each
        publisher confirm.
    @ivar onReturn: Called with the returned message.
    @ivar onCancel: Called with the consumer tag the broker cancelled; by
        default the connection is closed, so that a reconnect consumes anew.
    @ivar onChannelClosed: Called with C{(channel, reason)} when the broker
        closes a channel; by default the connection is closed.
    """

    _log = Logger()
    # Made by AMQClient when heartbeats are on.
    checkHB: IDelayedCall

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lastFrameAt = self.clock.seconds()
        self._deliveries: Dict[int, _DeliveryInProgress] = {}
        # The start of a frame that has not arrived whole.
        self._unread = b""
        self.onDeliver: Optional[Callable[[AMQChannel, Message], None]] = None
        self.onConfirm: Optional[Callable[[int, bool, bool], None]] = None
        self.onReturn: Optional[Callable[[Message], None]] = None
        self.onCancel: Optional[Callable[[str], None]] = None
        self.onChannelClosed: Optional[Callable[[AMQChannel, Any], None]] = None

    def setHandlers(self, **handlers: Optional[Callable[..., None]]) -> None:
        """
        Set some of the C{on*} callables, by name.

        A method rather than attribute assignment, because L{ClientService}
        hands C{prepareConnection} a proxy that forwards only look-ups.
        """
        for name, handler in handlers.items():
            if not hasattr(self, name) or not name.startswith("on"):
                raise TypeError(f"no handler named {name}")
            setattr(self, name, handler)

    def dataReceived(self, data: bytes) -> Any:
        """
        Cut frames out of what arrived by offset.  txAMQP's own reader
        copies the rest of its buffer after every frame, so a 64 KiB read of
        small frames costs it megabytes of copying.
        """
        if not self.frame_mode:
            return super().dataReceived(data)
        buffer = self._unread + data if self._unread else data
        offset = 0
        try:
            while self.frame_mode and not self.paused:
                if len(buffer) - offset >= self.HEADER_LENGTH:
                    (length,) = _FRAME_SIZE.unpack_from(buffer, offset + 3)
                    end = offset + self.HEADER_LENGTH + length
                    if end <= len(buffer):
                        frame = self._unpack_frame(buffer[offset:end])
                        offset = end
                        why = self.frame_received(frame)
                        if why or self.transport and self.transport.disconnecting:
                            return why
                        continue
                if len(buffer) - offset > self.MAX_LENGTH:
                    tooLong, buffer, offset = buffer[offset:], b"", 0
                    return self.frameLengthExceeded(tooLong)
                break
        finally:
            self._unread = buffer[offset:]
        return None

    def frameLengthExceeded(self, data: bytes) -> None:
        """
        The broker sent a frame longer than the C{frame_max} it agreed to:
        the stream cannot be trusted past it.
        """
        self._log.error(
            "Broker sent a frame of over {limit} bytes, more than agreed; closing the connection",
            limit=self.MAX_LENGTH,
        )
        if self.transport is not None:
            self.transport.loseConnection()

    def _unpack_frame(self, data: bytes) -> Frame:
        codec = FieldTableCodec(BytesIO(data))
        frameType = pythonize(self.spec.constants.byid[codec.decode_octet()].name)
        channel = codec.decode_short()
        if frameType == Frame.METHOD:
            payload = _decodeMethod(self.spec, codec)
        elif frameType == Frame.HEADER:
            payload = _decodeHeader(self.spec, codec)
        elif frameType == Frame.BODY:
            payload = Body(codec.decode_longbytes())
        else:
            payload = Frame.DECODERS[frameType].decode(self.spec, codec)
        end = codec.decode_octet()
        if end != self.FRAME_END:
            raise GarbageException(f"frame error: expected {self.FRAME_END!r}, got {end!r}")
        return Frame(channel, payload)

    def _pack_frame(self, frame: Frame) -> bytes:
        codec = FieldTableCodec(BytesIO())
        codec.encode_octet(self.spec.constants.bypyname[frame.payload.type].id)
        codec.encode_short(frame.channel)
        if isinstance(frame.payload, Method):
            _encodeMethod(frame.payload, codec)
        else:
            frame.payload.encode(codec)
        codec.encode_octet(self.FRAME_END)
        return codec.stream.getvalue()

    def process_frame(self, frame: Frame) -> Any:
        """
        Assemble deliveries here, synchronously, and hand them straight to
        the delegate; everything else takes txAMQP's own path.

        txAMQP runs every frame through a lock, two queues and several
        generator-based Deferreds: about four fifths of a consumer's time
        at stream-replay rates.
        """
        channel = self.channels.get(frame.channel)
        payload = frame.payload
        delivery = self._deliveries.get(frame.channel)
        if channel is None or payload.type == Frame.HEARTBEAT:
            return super().process_frame(frame)
        if payload.type == Frame.METHOD and payload.method.name == "deliver" and delivery is None:
            self._deliveries[frame.channel] = _DeliveryInProgress(payload)
        elif delivery is not None and payload.type in (Frame.HEADER, Frame.BODY):
            message = delivery.add(payload)
            if message is not None:
                del self._deliveries[frame.channel]
                try:
                    self.delegate.dispatch(channel, message)
                except Exception:
                    self._log.failure("Handling a delivery failed; closing the connection")
                    self.close()
        else:
            channel.dispatch(frame, self.work)
        self.reschedule_check_heartbeat()
        return None

    def reschedule_check_heartbeat(self) -> None:
        # Called for every frame: note the time, and let the pending check
        # push itself back, rather than cancelling and scheduling a call per
        # frame.
        self._lastFrameAt = self.clock.seconds()
        if self.heartbeatInterval > 0 and not self.closed and not self.checkHB.active():
            self.checkHB = self.clock.callLater(self._heartbeatLimit(), self.check_heartbeat)

    def check_heartbeat(self) -> None:
        silence = self.clock.seconds() - self._lastFrameAt
        if silence < self._heartbeatLimit():
            self.checkHB = self.clock.callLater(
                self._heartbeatLimit() - silence, self.check_heartbeat
            )
            return
        super().check_heartbeat()

    def _heartbeatLimit(self) -> float:
        return float(self.heartbeatInterval * self.MAX_UNSEEN_HEARTBEAT)

    def channel_failed(self, channel: AMQChannel, reason: Any) -> None:
        if self.onChannelClosed is not None:
            self.onChannelClosed(channel, reason)
            return
        self._log.error(
            "Broker closed channel {channel}: {reason}; reconnecting",
            channel=channel.id,
            reason=reason.value,
        )
        if self.transport is not None:
            self.transport.loseConnection()


#: What the client tells the broker about itself at connection start.
CLIENT_PROPERTIES = {
    "product": "bugzfeed",
    "capabilities": {
        "authentication_failure_close": True,
        "consumer_cancel_notify": True,
        "publisher_confirms": True,
    },
}


class _DeliveryInProgress:
    """
    A C{basic.deliver} method frame waiting for its header and body frames,
    which AMQP sends right after it on the same channel.
    """

    def __init__(self, method: Method) -> None:
        self._method = method
        self._header: Optional[Header] = None
        self._chunks: List[bytes] = []
        self._received = 0

    def add(self, payload: Any) -> Optional[Message]:
        """
        Take the next header or body frame.

        @return: The whole message once complete, else L{None}.
        """
        if isinstance(payload, Header):
            self._header = payload
        elif self._header is not None:
            self._chunks.append(payload.content)
            self._received += len(payload.content)
        if self._header is None or self._received < self._header.size:
            return None
        content = Content(b"".join(self._chunks), [], dict(self._header.properties))
        return Message(self._method.method, self._method.args, content)


class BugzfeedDelegate(TwistedDelegate):
    """
    Routes what the broker sends on its own initiative to the client's
    C{on*} callables.
    """

    def connection_start(self, channel: AMQChannel, message: Message) -> None:
        # Ask RabbitMQ to say why it refuses a login, and to tell us when it
        # cancels a consumer; without these capabilities it does neither.
        channel.connection_start_ok(
            client_properties=CLIENT_PROPERTIES,
            mechanism=self.client.mechanism,
            response=self.client.response,
            locale=self.client.locale,
        )

    def basic_deliver(self, channel: AMQChannel, message: Message) -> Any:
        if self.client.onDeliver is None:
            return super().basic_deliver(channel, message)
        self.client.onDeliver(channel, message)

    def basic_ack(self, channel: AMQChannel, message: Message) -> None:
        if self.client.onConfirm is not None:
            self.client.onConfirm(message.delivery_tag, message.multiple, True)

    def basic_nack(self, channel: AMQChannel, message: Message) -> None:
        if self.client.onConfirm is not None:
            self.client.onConfirm(message.delivery_tag, message.multiple, False)

    def basic_return_(self, channel: AMQChannel, message: Message) -> None:
        if self.client.onReturn is not None:
            self.client.onReturn(message)
        else:
            super().basic_return_(channel, message)

    def basic_cancel(self, channel: AMQChannel, message: Message) -> None:
        if not message.no_wait:
            channel.basic_cancel_ok(consumer_tag=message.consumer_tag)
        if self.client.onCancel is not None:
            self.client.onCancel(message.consumer_tag)
        elif self.client.transport is not None:
            self.client.transport.loseConnection()


class BugzfeedAMQFactory(AMQFactory):
    """
    Builds L{BugzfeedAMQClient}s with L{BugzfeedDelegate}s, on the
    project's spec.
    """

    protocol = BugzfeedAMQClient

    def __init__(
        self, clock: Any, vhost: str = "/", heartbeat: int = 0, spec: str = SPEC_PATH
    ) -> None:
        # AMQFactory.__init__ would parse the spec again; share one.
        self._spec = loadSpec(spec)
        self._clock = clock
        self._vhost = vhost
        self._heartbeat = heartbeat

    def buildProtocol(self, addr: Any) -> BugzfeedAMQClient:
        return self.protocol(
            BugzfeedDelegate(),
            vhost=self._vhost,
            spec=self._spec,
            heartbeat=self._heartbeat,
            clock=self._clock,
        )


def declareExchange(channel: AMQChannel, exchange: str) -> Deferred:
    """
    Declare C{exchange} as a durable topic exchange, as Pulse's are; the
    shim and the server both do, so either may start first.
    """
    return channel.exchange_declare(exchange=exchange, type="topic", durable=True)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class BrokerAddress:
    """
    Where a broker is and how to log in: an C{amqp://} URL, read.
    """

    host: str
    port: int
    username: str
    password: str = attr.ib(repr=False)
    vhost: str
    url: str = attr.ib(repr=False)

    @classmethod
    def fromURL(cls, url: str) -> "BrokerAddress":
        """
        Read C{amqp://user:password@host:port/vhost}; user and password
        default to C{guest}, the port to 5672, the virtual host to C{/}.

        @raise ValueError: If C{url} is not such a URL.
        """
        try:
            parts = urlsplit(url)
            port = parts.port or 5672
        except ValueError as e:
            raise ValueError(f"not an AMQP URL: {redactURL(url)} ({e})") from None
        if parts.scheme != "amqp":
            raise ValueError(f"not an amqp:// URL: {redactURL(url)}")
        if not parts.hostname:
            raise ValueError(f"no host in AMQP URL: {redactURL(url)}")
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            vhost=unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
            url=redactURL(url),
        )


def _describe(error: BaseException) -> str:
    # txAMQP wraps the broker's connection.close in Closed(Message).
    reason = error.args[0] if error.args else None
    if isinstance(reason, Message):
        return f"{reason.reply_code} {reason.reply_text}"
    return str(reason if reason is not None else error) or type(error).__name__


def brokerService(
    reactor: Any,
    url: str,
    heartbeat: int,
    prepare: Callable[[Any], Any],
    retryPolicy: Any = None,
) -> ClientService:
    """
    A service that keeps one connection to the broker at C{url}: it
    connects, logs in, then runs C{prepare} (declare, consume...) on each new
    connection, and reconnects with backoff whenever any of that fails or the
    connection drops.

    Logging in happens here rather than in the endpoint (as txAMQP's
    C{AMQEndpoint} does), so that a refused login has its reason logged and
    is retried like a dropped connection.
    """
    address = BrokerAddress.fromURL(url)
    backoff = _SetbackBackoff(retryPolicy or backoffPolicy(initialDelay=0.5, maxDelay=15.0))

    def setback(client: Any) -> None:
        backoff.setbacks += 1
        client.transport.loseConnection()

    @inlineCallbacks
    def prepareConnection(client: Any) -> Any:
        # A proxy of a BugzfeedAMQClient (ClientService wraps protocols).
        try:
            yield client.authenticate(address.username, address.password)
        except Exception as e:
            _log.error(
                "Broker {broker} refused the connection: {reason}",
                broker=address.url,
                reason=_describe(e),
            )
            setback(client)
            return
        try:
            yield prepare(client)
        except Exception:
            _log.failure("Setting up the connection to {broker} failed", broker=address.url)
            setback(client)
            return
        backoff.setbacks = 0
        # Succeed even after a setback: ClientService (Twisted 26) has no
        # transition for a connection lost during or after a failed
        # preparation, and logs an error; a connection that "succeeded" and
        # then drops is retried, after a delay the setbacks keep growing.

    return ClientService(
        _ReportingEndpoint(
            HostnameEndpoint(reactor, address.host, address.port, timeout=30), address.url
        ),
        BugzfeedAMQFactory(reactor, vhost=address.vhost, heartbeat=heartbeat),
        retryPolicy=backoff,
        clock=reactor,
        prepareConnection=prepareConnection,
    )


class _SetbackBackoff:
    """
    A retry policy that also counts setbacks: connections that opened but
    could not be used (a refused login, a failed declaration).
    L{ClientService} counts only failed connection attempts, so without this
    such a broker would be retried at the shortest delay forever.
    """

    def __init__(self, policy: Callable[[int], float]) -> None:
        self._policy = policy
        self.setbacks = 0

    def __call__(self, failedAttempts: int) -> float:
        return self._policy(failedAttempts + self.setbacks)


@implementer(IStreamClientEndpoint)
class _ReportingEndpoint:
    """
    Logs why a connection attempt failed; L{ClientService} only says it
    will retry.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, description: str) -> None:
        self._endpoint = endpoint
        self._description = description

    def connect(self, factory: Any) -> Deferred:
        def report(failure: Any) -> Any:
            _log.warn(
                "Cannot reach broker {broker}: {reason}",
                broker=self._description,
                reason=failure.getErrorMessage(),
            )
            return failure

        return self._endpoint.connect(factory).addErrback(report)
