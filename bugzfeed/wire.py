"""
The write path of pushed updates: WebSocket frames built once per update,
and written with one C{send()} at once when nothing waits ahead of them.

A fan-out writes the same small frame to many connections, each nearly
always with an empty buffer.  Through C{transport.write} every such frame
costs a reactor turn and an epoll register and unregister around one
C{send()}; through Autobahn's C{sendMessage} it is also framed and logged
once per subscriber.  Here it is framed once, and sent at once where Twisted
has nothing buffered for that connection; anything C{send()} leaves, and
every frame written while data is buffered, goes through C{transport.write},
so the order on the wire never changes.  See docs/performance.md for what
this saves.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import tcp

#: WebSocket text frame, final fragment, no extension bits.
_FIN_TEXT = 0x81

# Transports whose socket may be written to directly: plain TCP, as
# Twisted's reactors make them.  Anything else (TLS, test transports) goes
# through its own write.
_PLAIN_TCP = (tcp.Server, tcp.Client)


def serverTextFrame(payload: bytes) -> bytes:
    """
    @return: A final, unmasked WebSocket text frame (what a server sends)
        holding C{payload}, as RFC 6455 section 5.2 lays it out.
    """
    length = len(payload)
    if length < 126:
        return bytes((_FIN_TEXT, length)) + payload
    if length < 65536:
        return bytes((_FIN_TEXT, 126)) + length.to_bytes(2, "big") + payload
    return bytes((_FIN_TEXT, 127)) + length.to_bytes(8, "big") + payload


class FrameCache:
    """
    The frame of the payload framed last, kept by identity.

    The registry hands every subscriber of an update the same C{bytes}
    object, so across one fan-out only the first subscriber builds the
    frame.  Holding the payload keeps its identity from being reused.
    """

    def __init__(self) -> None:
        self._payload: Optional[bytes] = None
        self._frame = b""

    def frameFor(self, payload: bytes) -> bytes:
        """
        @return: L{serverTextFrame} of C{payload}.
        """
        if payload is not self._payload:
            self._payload, self._frame = payload, serverTextFrame(payload)
        return self._frame


def writeNow(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}: with one C{send()} now when it is plain
    TCP with nothing buffered, else (and for what C{send()} leaves) through
    C{transport.write}.
    """
    if (
        type(transport) in _PLAIN_TCP
        and transport.connected
        and not transport.disconnecting
        and not transport.dataBuffer
        and not transport._tempDataBuffer
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # EAGAIN, or an error that Twisted's own write will meet and
            # report as the connection's loss.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
