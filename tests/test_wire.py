"""
Tests for L{bugzfeed.wire}: update frames, and writing them at once over a
real TCP transport without reordering what Twisted has buffered.
"""

from __future__ import annotations

import socket
from typing import Any, List, Set

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.wire import FrameCache, serverTextFrame, writeNow
from tests.wsframes import TEXT, parseServerFrames


class RecordingFDSet:
    """
    The part of C{IReactorFDSet} a TCP transport uses, recording which
    descriptors want to write: a transport asks for that only when it has
    buffered data.
    """

    def __init__(self) -> None:
        self.writers: Set[Any] = set()
        self.readers: Set[Any] = set()

    def addWriter(self, writer: Any) -> None:
        self.writers.add(writer)

    def removeWriter(self, writer: Any) -> None:
        self.writers.discard(writer)

    def addReader(self, reader: Any) -> None:
        self.readers.add(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.discard(reader)


class FrameTests(SynchronousTestCase):
    def test_framesParseAtEveryLengthEncoding(self) -> None:
        """
        Payloads of every length class (7-bit, 16-bit and 64-bit lengths,
        and the edges between them) make one final, unmasked text frame that
        a client's parser reads back whole.
        """
        for length in (0, 1, 125, 126, 127, 65535, 65536, 70000):
            payload = bytes(48 + i % 10 for i in range(length))
            frames, rest = parseServerFrames(serverTextFrame(payload))
            self.assertEqual(rest, b"", length)
            self.assertEqual(len(frames), 1, length)
            self.assertEqual((frames[0].opcode, frames[0].fin), (TEXT, True), length)
            self.assertEqual(frames[0].payload, payload, length)

    def test_cacheFramesOnePayloadOnce(self) -> None:
        """
        The same payload object gets the very frame built for it before;
        another payload, even an equal one, gets a frame of its own.
        """
        cache = FrameCache()
        payload = b'{"command":"update","bug":1}'
        first = cache.frameFor(payload)
        self.assertIs(cache.frameFor(payload), first)
        other = cache.frameFor(b'{"command":"update","bug":2}')
        self.assertEqual(other, serverTextFrame(b'{"command":"update","bug":2}'))
        self.assertEqual(cache.frameFor(payload), first)


class WriteNowTests(SynchronousTestCase):
    """
    L{writeNow} over a real C{tcp.Server} on one end of a socket pair.
    """

    def setUp(self) -> None:
        self.ours, self.peer = socket.socketpair()
        self.addCleanup(self.peer.close)
        self.addCleanup(self.ours.close)
        self.peer.setblocking(False)
        self.reactor = RecordingFDSet()
        self.transport = tcp.Server(
            self.ours,
            Protocol(),
            ("127.0.0.1", 1),
            None,
            1,
            self.reactor,  # type: ignore[arg-type]
        )
        self.transport.connected = 1

    def received(self) -> bytes:
        chunks: List[bytes] = []
        while True:
            try:
                chunk = self.peer.recv(1 << 20)
            except BlockingIOError:
                return b"".join(chunks)
            chunks.append(chunk)

    def drain(self) -> bytes:
        """
        Let the transport write what it buffered, as the reactor would,
        reading the peer's end as it goes.
        """
        got = b""
        while self.transport in self.reactor.writers:
            self.transport.doWrite()
            got += self.received()
        return got + self.received()

    def test_emptyBufferSendsAtOnce(self) -> None:
        """
        With nothing buffered, the data is on the socket when C{writeNow}
        returns, and the transport never asked the reactor to watch for
        writability.
        """
        writeNow(self.transport, b"frame one")
        self.assertEqual(self.received(), b"frame one")
        self.assertEqual(self.reactor.writers, set())

    def test_bufferedDataStaysAhead(self) -> None:
        """
        While the transport holds buffered data, C{writeNow} queues behind
        it: the peer reads everything in the order it was written.
        """
        self.transport.write(b"reply;")
        writeNow(self.transport, b"update;")
        self.assertEqual(self.received(), b"")
        self.assertEqual(self.drain(), b"reply;update;")

    def test_whatSendLeavesIsBuffered(self) -> None:
        """
        Data larger than the socket takes goes out in part at once; the rest
        is buffered in the transport, ahead of later writes, and all of it
        arrives in order.
        """
        big = bytes(range(256)) * 40000  # 10 MB: more than a socket pair buffers
        writeNow(self.transport, big)
        self.assertIn(self.transport, self.reactor.writers)
        writeNow(self.transport, b"after")
        self.assertEqual(self.drain(), big + b"after")

    def test_disconnectingTransportUsesWrite(self) -> None:
        """
        A transport that is closing gets the data through its own C{write},
        which decides what to do with it: nothing is sent past a close.
        """
        self.transport.disconnecting = True
        writeNow(self.transport, b"late")
        self.assertEqual(self.received(), b"")

    def test_otherTransportsUseWrite(self) -> None:
        """
        Transports other than plain TCP (TLS, test transports) get the data
        through their own C{write}.
        """
        transport = StringTransport()
        writeNow(transport, b"frame")
        self.assertEqual(transport.value(), b"frame")
