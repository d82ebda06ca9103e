"""
AMQP on the wire for tests: frames encoded independently of the client under
test, and an L{AMQPump} that feeds them through the client's own decoder.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any, List, Tuple

from txamqp.connection import Frame, Method
from txamqp.protocol import AMQClient, FrameReceiver
from txamqp.spec import Method as MethodSpec
from txamqp.spec import pythonize
from txamqp.testing import AMQPump

from bugzfeed.amqp import FieldTableCodec

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_END = 1, 2, 3, 0xCE
BASIC_CLASS = 60
#: The C{headers} bit of basic's property flags (its third property).
HEADERS_FLAG = 1 << 13


def shortstr(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("!B", len(data)) + data


def longbytes(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def table(*entries: Tuple[str, bytes, bytes]) -> bytes:
    """
    Encode a field table by hand, independently of the codec under test.

    @param entries: C{(name, type letter, encoded value)}.
    """
    return longbytes(b"".join(shortstr(name) + kind + value for name, kind, value in entries))


def decodeTable(data: bytes) -> Any:
    """
    Decode C{data} with L{FieldTableCodec}, checking it reads all of it.
    """
    codec = FieldTableCodec(BytesIO(data))
    result = codec.decode_table()
    if codec.nread != len(data):
        raise AssertionError(f"read {codec.nread} of {len(data)} octets")
    return result


def encodeTable(value: Any) -> bytes:
    codec = FieldTableCodec(BytesIO())
    codec.encode_table(value)
    data: bytes = codec.stream.getvalue()
    return data


class WireAMQPump(AMQPump):
    """
    An L{AMQPump} that can also deliver encoded frames, so that they go
    through the client's own decoder, as they do from a socket; the stock
    pump hands the client frames already decoded.
    """

    @property
    def disconnecting(self) -> bool:
        """Read by L{FrameReceiver.dataReceived} after each frame."""
        return not self.connected

    def receive(self, data: bytes) -> None:
        """
        Deliver C{data}, one or more encoded frames, to the client.
        """
        self.client.dataReceived(data)


def methodFrame(client: AMQClient, channel: int, klass: str, method: str, **fields: Any) -> bytes:
    """
    Encode a method frame with txAMQP's stock encoder, not the client's.
    """
    spec = client.spec.classes.byname[klass].methods.byname[method]
    args = [
        fields.pop(pythonize(field.name), MethodSpec.DEFAULTS[field.type]) for field in spec.fields
    ]
    if fields:
        raise TypeError(f"unknown fields {sorted(fields)}")
    return FrameReceiver._pack_frame(client, Frame(channel, Method(spec, *args)))


def headerFrame(channel: int, bodySize: int, headers: bytes = b"") -> bytes:
    """
    Encode a basic content header by hand, with C{headers} (an encoded
    table) as its only property, if given.
    """
    flags = HEADERS_FLAG if headers else 0
    payload = struct.pack("!HHQH", BASIC_CLASS, 0, bodySize, flags) + headers
    return struct.pack("!BHI", FRAME_HEADER, channel, len(payload)) + payload + bytes([FRAME_END])


def bodyFrame(channel: int, body: bytes) -> bytes:
    return struct.pack("!BHI", FRAME_BODY, channel, len(body)) + body + bytes([FRAME_END])


def sentMethods(pump: AMQPump, channel: int) -> List[str]:
    """
    @return: The names (C{class.method}) of the methods the client sent on
        C{channel}.
    """
    return [
        f"{frame.payload.method.klass.name}.{frame.payload.method.name}"
        for frame in pump.outgoing.get(channel, [])
        if frame.payload.type == Frame.METHOD
    ]


def sentArguments(pump: AMQPump, channel: int, name: str) -> dict:
    """
    @return: The fields of the last C{class.method} the client sent on
        C{channel}, by name.
    """
    for frame in reversed(pump.outgoing.get(channel, [])):
        payload = frame.payload
        if (
            payload.type == Frame.METHOD
            and f"{payload.method.klass.name}.{payload.method.name}" == name
        ):
            return {
                pythonize(field.name): arg
                for field, arg in zip(payload.method.fields, payload.args)
            }
    raise AssertionError(f"{name} was not sent on channel {channel}")
