"""
Tests for L{bugzfeed.protocol}: the WebSocket server driven over an
in-memory transport, from the opening handshake to the closing one, on a
L{MemoryReactorClock}.
"""

from __future__ import annotations

import calendar
from datetime import datetime
from typing import Any, List, Optional

import attr
import txaio
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.feed import Feed
from bugzfeed.limits import ClientLimits
from bugzfeed.model import BugUpdate
from bugzfeed.protocol import makeFactory
from tests.fakes import makeFeed
from tests.wsframes import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    InMemoryWebSocketClient,
    acceptFor,
)

PING_INTERVAL = 30.0
PING_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 5.0
MAX_MESSAGE_SIZE = 1024


def ok(command: str, **fields: Any) -> dict:
    return {"command": command, "result": "ok", **fields}


def updateMessage(bug: int, when: str) -> dict:
    return {"command": "update", "bug": bug, "when": when}


class ServerTestCase(SynchronousTestCase):
    """
    One or more clients of a factory serving the feeds C{/dev/} and
    C{/prod/}, with the limits of the class.
    """

    limits = ClientLimits(maxMessageSize=MAX_MESSAGE_SIZE)
    allowedOrigins: Optional[List[str]] = None

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(calendar.timegm((2014, 4, 4, 0, 0, 0)))
        # txaio keeps one loop for the whole process, the global reactor
        # unless told otherwise.  Pin it to a throwaway clock, so that no
        # test leaves calls on the global reactor, and check that closing
        # every connection leaves nothing scheduled there either.
        self.strayClock = Clock()
        self.patch(txaio.config, "loop", self.strayClock)
        self.feed = makeFeed(self.clock, path="/dev/")
        self.otherFeed = makeFeed(self.clock, path="/prod/")
        self.factory = makeFactory(
            [self.feed, self.otherFeed],
            reactor=self.clock,
            pingInterval=PING_INTERVAL,
            pingTimeout=PING_TIMEOUT,
            handshakeTimeout=HANDSHAKE_TIMEOUT,
            limits=self.limits,
            allowedOrigins=self.allowedOrigins,
        )
        # Cleanups run last-registered first: this one runs after every
        # connection has been closed by the cleanups connect() adds.
        self.addCleanup(self.assertNothingScheduled)

    def assertNothingScheduled(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.strayClock.getDelayedCalls(), [])

    def connect(self) -> InMemoryWebSocketClient:
        """
        @return: A client connected over TCP, before the opening handshake;
            its connection is lost at the end of the test if still open.
        """
        client = InMemoryWebSocketClient(self.factory)
        self.addCleanup(client.connectionLost)
        return client

    def openClient(self, path: str = "/dev/") -> InMemoryWebSocketClient:
        """
        @return: A client that completed the opening handshake at C{path}.
        """
        client = self.connect()
        response = client.open(path)
        self.assertEqual(response.status, 101)
        return client

    def closeClient(self, client: InMemoryWebSocketClient) -> None:
        """
        Run the closing handshake from the client's side, discarding
        whatever the server sent before.
        """
        client.receive()
        client.sendClose(1000)
        self.assertEqual([frame.opcode for frame in client.receive()], [CLOSE])
        self.assertTrue(client.disconnected)

    def assertRegistryEmpty(self, feed: Feed) -> None:
        self.assertEqual((feed.registry.subscriberCount, feed.registry.bugCount), (0, 0))


class FeedServerProtocolTests(ServerTestCase):
    """
    The protocol as clients use it.
    """

    def test_handshakeAccepted(self) -> None:
        """
        The opening handshake at a feed's path gets a 101 with the accept
        value RFC 6455 derives from the client's key.
        """
        client = self.connect()
        response = client.open("/dev/", key="dGhlIHNhbXBsZSBub25jZQ==")
        self.assertEqual(response.status, 101)
        self.assertEqual(response.headers["upgrade"].lower(), "websocket")
        self.assertEqual(
            response.headers["sec-websocket-accept"], acceptFor("dGhlIHNhbXBsZSBub25jZQ==")
        )
        # The example of RFC 6455, section 1.3.
        self.assertEqual(acceptFor("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        self.assertFalse(client.disconnected)

    def test_subscribeRepliesWithSortedBugs(self) -> None:
        """
        A C{subscribe} over the wire is answered with an C{ok} text frame
        listing every bug the connection holds, sorted.
        """
        client = self.openClient()
        # Chosen so that neither arrival order nor a set's iteration order
        # is sorted.
        client.sendJSON({"command": "subscribe", "bugs": [17, 3]})
        self.assertEqual(client.receiveJSON(), [ok("subscribe", bugs=[3, 17])])
        client.sendJSON({"command": "subscribe", "bugs": [10]})
        self.assertEqual(client.receiveJSON(), [ok("subscribe", bugs=[3, 10, 17])])

    def test_updateReachesSubscribersOnly(self) -> None:
        """
        An update published to the feed's registry is pushed to the
        connection holding its bug and to no other.
        """
        subscribed, other = self.openClient(), self.openClient()
        subscribed.sendJSON({"command": "subscribe", "bugs": [1]})
        other.sendJSON({"command": "subscribe", "bugs": [2]})
        subscribed.receive()
        other.receive()

        self.feed.registry.publish(BugUpdate(1, datetime(2014, 4, 3, 21, 13, 45), seq=7))

        self.assertEqual(
            subscribed.receiveJSON(),
            [{"command": "update", "bug": 1, "when": "2014-04-03T21:13:45", "seq": 7}],
        )
        self.assertEqual(other.receive(), [])

    def test_unsubscribedConnectionGetsNoUpdate(self) -> None:
        """
        After C{unsubscribe}, updates of that bug no longer reach the
        connection.
        """
        client = self.openClient()
        client.sendJSON({"command": "subscribe", "bugs": [1, 2]})
        client.sendJSON({"command": "unsubscribe", "bugs": [1]})
        self.assertEqual(
            client.receiveJSON(), [ok("subscribe", bugs=[1, 2]), ok("unsubscribe", bugs=[2])]
        )
        self.feed.registry.publish(BugUpdate(1, datetime(2014, 4, 3, 21, 13, 45)))
        self.assertEqual(client.receive(), [])

    def test_feedsAreSeparate(self) -> None:
        """
        A connection is bound to the feed at its path: updates of another
        feed do not reach it.
        """
        dev, prod = self.openClient("/dev/"), self.openClient("/prod/")
        dev.sendJSON({"command": "subscribe", "bugs": [1]})
        prod.sendJSON({"command": "subscribe", "bugs": [1]})
        dev.receive()
        prod.receive()
        self.otherFeed.registry.publish(BugUpdate(1, datetime(2014, 4, 3, 21, 13, 45)))
        self.assertEqual(dev.receive(), [])
        self.assertEqual(len(prod.receive()), 1)

    def test_unknownPathRefused(self) -> None:
        """
        The opening handshake at a path no feed is served at gets a 404 and
        the connection is closed; no feed registers anything.
        """
        client = self.connect()
        response = client.open("/staging/")
        self.assertEqual(response.status, 404)
        self.assertTrue(client.disconnected)
        self.assertRegistryEmpty(self.feed)
        self.assertRegistryEmpty(self.otherFeed)

    def test_pathWithAndWithoutTrailingSlash(self) -> None:
        """
        C{/dev} and C{/dev/} reach the same feed.
        """
        withSlash, withoutSlash = self.openClient("/dev/"), self.openClient("/dev")
        for client in (withSlash, withoutSlash):
            client.sendJSON({"command": "subscribe", "bugs": [5]})
            client.receive()
        self.assertEqual(self.feed.registry.subscriberCount, 2)
        self.feed.registry.publish(BugUpdate(5, datetime(2014, 4, 3, 21, 13, 45)))
        self.assertEqual(
            [client.receiveJSON() for client in (withSlash, withoutSlash)],
            [[updateMessage(5, "2014-04-03T21:13:45")]] * 2,
        )

    def assertBadInputAnswered(self, send: Any, error: str) -> None:
        """
        What C{send} sends gets an error reply with C{"command": null}, and
        the connection stays open: a valid command still works after it.
        """
        client = self.openClient()
        send(client)
        self.assertEqual(
            client.receiveJSON(), [{"command": None, "result": "error", "error": error}]
        )
        self.assertFalse(client.disconnected)
        client.sendJSON({"command": "subscribe", "bugs": [1]})
        self.assertEqual(client.receiveJSON(), [ok("subscribe", bugs=[1])])

    def test_nonJSONText(self) -> None:
        """
        Text that is not JSON gets an error reply; the connection stays
        usable.
        """
        self.assertBadInputAnswered(
            lambda client: client.sendText("subscribe 1"), "invalid message; must be JSON"
        )

    def test_binaryFrame(self) -> None:
        """
        A binary frame, even one holding a valid command, gets an error
        reply; the connection stays usable.
        """
        self.assertBadInputAnswered(
            lambda client: client.sendFrame(BINARY, b'{"command":"version"}'),
            "invalid message; binary frames are not supported",
        )

    def test_jsonArray(self) -> None:
        """
        A JSON value other than an object gets an error reply; the
        connection stays usable.
        """
        self.assertBadInputAnswered(
            lambda client: client.sendJSON([{"command": "subscribe", "bugs": [1]}]),
            "invalid message; must be a JSON object",
        )

    def test_missingCommand(self) -> None:
        """
        An object without C{command} gets an error reply; the connection
        stays usable.
        """
        self.assertBadInputAnswered(
            lambda client: client.sendJSON({"bugs": [1]}), "missing mandatory arg: 'command'"
        )

    def test_fragmentedMessageAnswered(self) -> None:
        """
        A message split over several frames is answered once, as a whole.
        """
        client = self.openClient()
        client.sendFrame(TEXT, b'{"command":"subscribe",', fin=False)
        self.assertEqual(client.receive(), [])
        client.sendFrame(CONTINUATION, b'"bugs":[2,1]}')
        self.assertEqual(client.receiveJSON(), [ok("subscribe", bugs=[1, 2])])

    def test_tooManyFragmentsClosedWith1009(self) -> None:
        """
        A message may come in at most 256 frames: empty or tiny fragments
        do not count against the size limit, but must not grow the server
        without end.
        """
        client = self.openClient()
        client.sendFrame(TEXT, b'{"command":', fin=False)
        for _ in range(254):
            client.sendFrame(CONTINUATION, b"", fin=False)
        client.sendFrame(CONTINUATION, b'"version"}')
        self.assertEqual(client.receiveJSON()[0]["command"], "version")
        client.sendFrame(TEXT, b"{", fin=False)
        for _ in range(256):
            client.sendFrame(CONTINUATION, b"", fin=False)
        self.assertClosedForSize(client)

    def assertClosedForSize(self, client: InMemoryWebSocketClient) -> None:
        """
        The server sent a close frame with code 1009 (message too big) and
        waits for the client's close reply instead of dropping TCP; the
        reply ends the connection.
        """
        [frame] = client.receive()
        self.assertEqual((frame.opcode, frame.closeCode), (CLOSE, 1009))
        self.assertFalse(client.transport.disconnecting)
        client.sendClose(1009)
        self.assertTrue(client.disconnected)
        self.assertEqual(client.receive(), [])

    def test_oversizedMessageClosedWith1009(self) -> None:
        """
        A message larger than C{maxMessageSize} is answered with a close
        frame carrying 1009, not a silent TCP drop; the connection's
        subscriptions go with it.
        """
        client = self.openClient()
        client.sendJSON({"command": "subscribe", "bugs": [1]})
        client.receive()
        client.sendJSON({"command": "subscribe", "bugs": [1] * MAX_MESSAGE_SIZE})
        self.assertClosedForSize(client)
        self.assertRegistryEmpty(self.feed)

    def test_messageAtSizeLimitAnswered(self) -> None:
        """
        A message of exactly C{maxMessageSize} octets is still answered.
        """
        client = self.openClient()
        prefix = b'{"command":"version","padding":"'
        payload = prefix + b"x" * (MAX_MESSAGE_SIZE - len(prefix) - 2) + b'"}'
        self.assertEqual(len(payload), MAX_MESSAGE_SIZE)
        client.sendFrame(TEXT, payload)
        [reply] = client.receiveJSON()
        self.assertEqual(reply["result"], "ok")

    def test_oversizedFragmentedMessageClosedWith1009(self) -> None:
        """
        A message whose frames are each within the limit but which adds up
        to more than C{maxMessageSize} is closed with 1009 too.
        """
        client = self.openClient()
        half = b" " * (MAX_MESSAGE_SIZE // 2 + 1)
        client.sendFrame(TEXT, half, fin=False)
        client.sendFrame(CONTINUATION, half)
        self.assertClosedForSize(client)

    def test_closeHandshakeForgetsConnection(self) -> None:
        """
        After the client's close frame, the server answers with its own and
        every registry entry of that connection is gone; another
        connection's are kept.
        """
        leaving, staying = self.openClient(), self.openClient()
        leaving.sendJSON({"command": "subscribe", "bugs": [1, 2]})
        staying.sendJSON({"command": "subscribe", "bugs": [2, 3]})
        self.closeClient(leaving)
        self.assertEqual((self.feed.registry.subscriberCount, self.feed.registry.bugCount), (1, 2))
        self.assertEqual(self.feed.registry.subscribers(1), set())
        self.assertEqual(self.feed.registry.subscribers(2), {staying.protocol})
        self.assertEqual(self.feed.registry.subscriptions(leaving.protocol), [])

    def test_connectionLostForgetsConnection(self) -> None:
        """
        A connection lost without any closing handshake leaves no registry
        entry behind.
        """
        client = self.openClient()
        client.sendJSON({"command": "subscribe", "bugs": [1, 2]})
        client.receive()
        client.connectionLost()
        self.assertRegistryEmpty(self.feed)
        self.feed.registry.publish(BugUpdate(1, datetime(2014, 4, 3, 21, 13, 45)))
        self.assertEqual(client.transport.value(), b"")

    def test_closingNeverSubscribedConnection(self) -> None:
        """
        Closing a connection that never subscribed, by handshake or by a
        lost connection, is fine and leaves other connections' entries
        alone.
        """
        staying = self.openClient()
        staying.sendJSON({"command": "subscribe", "bugs": [1]})
        self.closeClient(self.openClient())
        self.openClient().connectionLost()
        self.assertEqual(self.feed.registry.subscriptions(staying.protocol), [1])
        self.assertEqual(self.feed.registry.bugCount, 1)

    def test_closingBeforeHandshake(self) -> None:
        """
        A connection lost before, or while refusing, the opening handshake
        is fine: it never reached a feed.
        """
        self.connect().connectionLost()
        self.connect().open("/nowhere/")
        self.assertRegistryEmpty(self.feed)

    def test_sinceRepliesThenRememberedUpdatesOldestFirst(self) -> None:
        """
        A C{subscribe} with C{since} gets its reply first, then the newest
        remembered update of each of its bugs changed at or after C{since},
        oldest first whatever order they arrived in.
        """
        for bug, when, seq in [
            (1, datetime(2014, 4, 3, 21, 10), 1),
            (2, datetime(2014, 4, 3, 21, 5), 2),
            (1, datetime(2014, 4, 3, 21, 0), 3),
            (3, datetime(2014, 4, 3, 21, 1), 4),
            (2, datetime(2014, 4, 3, 20, 59), 5),
        ]:
            self.feed.receive(BugUpdate(bug, when, seq))
        client = self.openClient()
        client.sendJSON({"command": "subscribe", "bugs": [2, 1], "since": "2014-04-03T21:00:00"})
        self.assertEqual(
            client.receiveJSON(),
            [
                ok("subscribe", bugs=[1, 2]),
                {"command": "update", "bug": 1, "when": "2014-04-03T21:00:00", "seq": 3},
                {"command": "update", "bug": 2, "when": "2014-04-03T21:05:00", "seq": 2},
            ],
        )

    def test_handshakeTimeout(self) -> None:
        """
        A client that never completes the opening handshake is dropped
        once C{handshakeTimeout} has passed, not before.
        """
        client = self.connect()
        client.send(b"GET /dev/ HTTP/1.1\r\nHost: localhost\r\n")
        self.assertDroppedAfter(client, HANDSHAKE_TIMEOUT)
        self.assertTrue(client.transport.disconnected, "expected an abort")
        self.assertEqual(client.transport.value(), b"")

    def test_completedHandshakeNotTimedOut(self) -> None:
        """
        Completing the opening handshake cancels its timeout.
        """
        client = self.openClient()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1, "expected only the keep-alive ping")
        self.clock.advance(HANDSHAKE_TIMEOUT)
        self.assertFalse(client.transport.disconnecting)

    def assertDroppedAfter(self, client: InMemoryWebSocketClient, delay: float) -> None:
        """
        Check that C{client} is still connected just before C{delay} has
        passed, and dropped when it has.
        """
        self.clock.advance(delay - 0.5)
        client.deliverDisconnect()
        self.assertFalse(client.disconnected)
        self.clock.advance(0.5)
        client.deliverDisconnect()
        self.assertTrue(client.disconnected)

    def receivePing(self, client: InMemoryWebSocketClient) -> bytes:
        """
        Let C{pingInterval} pass and return the payload of the ping the
        server then sends.
        """
        self.clock.advance(PING_INTERVAL - 0.5)
        self.assertEqual(client.receive(), [])
        self.clock.advance(0.5)
        frames = client.receive()
        self.assertEqual([frame.opcode for frame in frames], [PING])
        return frames[0].payload

    def test_pingWithoutPongCloses(self) -> None:
        """
        C{pingInterval} after the handshake the server pings; without a pong
        within C{pingTimeout} the connection is dropped and forgotten.
        """
        client = self.openClient()
        client.sendJSON({"command": "subscribe", "bugs": [1]})
        client.receive()
        self.receivePing(client)
        self.assertDroppedAfter(client, PING_TIMEOUT)
        self.assertRegistryEmpty(self.feed)

    def test_trafficWithoutPongStillTimesOut(self) -> None:
        """
        A client that keeps sending commands but never answers a ping (it
        does not read) is dropped all the same.
        """
        client = self.openClient()
        self.receivePing(client)
        for _ in range(4):
            self.clock.advance(PING_TIMEOUT / 4 - 0.1)
            client.sendJSON({"command": "version"})
        self.clock.advance(0.5)
        client.deliverDisconnect()
        self.assertTrue(client.disconnected)

    def test_replyLargerThanMessageLimitIsSent(self) -> None:
        """
        The message size limit is for what clients send: a reply listing
        more bugs than fit in it still goes out, and the connection stays.
        """
        client = self.openClient()
        bugs = list(range(1000000, 1000000 + MAX_MESSAGE_SIZE // 16))
        client.sendJSON({"command": "subscribe", "bugs": bugs})
        client.receive()
        client.sendJSON({"command": "subscribe", "bugs": [b + 500000 for b in bugs]})
        [frame] = client.receive()
        self.assertGreater(len(frame.payload), MAX_MESSAGE_SIZE)
        self.assertEqual(len(frame.json()["bugs"]), 2 * len(bugs))
        self.assertFalse(client.disconnected)

    def test_closeAllSays1001AndWaits(self) -> None:
        """
        Shutting down sends every client a close frame with code 1001 and
        fires once they have all gone.
        """
        first, second = self.openClient(), self.openClient()
        d = self.factory.closeAll(timeout=5)
        self.assertEqual([frame.closeCode for frame in first.receive()], [1001])
        self.assertNoResult(d)
        first.sendClose(1001)
        first.deliverDisconnect()
        self.assertEqual([frame.closeCode for frame in second.receive()], [1001])
        second.sendClose(1001)
        second.deliverDisconnect()
        self.successResultOf(d)
        self.assertEqual(self.factory.connectionCount, 0)

    def test_closeAllDropsClientsThatDoNotAnswer(self) -> None:
        """
        A client that does not answer the close is dropped after the
        timeout.
        """
        client = self.openClient()
        d = self.factory.closeAll(timeout=5)
        self.clock.advance(5)
        client.deliverDisconnect()
        self.assertTrue(client.disconnected)
        self.successResultOf(d)

    def test_pongKeepsConnection(self) -> None:
        """
        A client that answers each ping with its pong stays connected, and
        is pinged again every C{pingInterval}.
        """
        client = self.openClient()
        payload = self.receivePing(client)
        client.sendFrame(PONG, payload)
        self.clock.advance(PING_TIMEOUT)
        client.deliverDisconnect()
        self.assertFalse(client.disconnected)
        # The next ping is due pingInterval after the pong.
        self.clock.advance(PING_INTERVAL - PING_TIMEOUT)
        frames = client.receive()
        self.assertEqual([frame.opcode for frame in frames], [PING])
        self.assertNotEqual(frames[0].payload, payload)


class LimitsTests(ServerTestCase):
    """
    Limits, slow clients and bad input: each gets a clear error or close
    code, and other clients carry on.
    """

    limits = ClientLimits(
        maxMessageSize=MAX_MESSAGE_SIZE,
        maxSubscriptions=3,
        commandsPerSecond=5,
        maxPending=2,
        slowClientTimeout=20,
        resumeTimeout=10,
    )
    allowedOrigins = ["http://localhost", "https://bugzilla.example.com", "https://*.example.org"]

    def test_tooManyCommandsGetErrorsThenClose1008(self) -> None:
        """
        Past the burst (twice the rate), each command gets an error reply;
        a client that keeps going regardless is closed with 1008; others
        are unaffected.
        """
        client, other = self.openClient(), self.openClient()
        for _ in range(11):
            client.sendJSON({"command": "subscriptions"})
        replies = client.receiveJSON()
        self.assertEqual([r["result"] for r in replies], ["ok"] * 10 + ["error"])
        self.assertEqual(replies[-1]["error"], "too many commands; at most 5 per second")
        self.assertEqual(replies[-1]["command"], "subscriptions")
        self.clock.advance(1)
        client.sendJSON({"command": "subscriptions"})
        self.assertEqual(client.receiveJSON()[0]["result"], "ok")
        for _ in range(11):
            client.sendJSON({"command": "subscriptions"})
        self.assertClosedWith(client, 1008)
        other.sendJSON({"command": "subscriptions"})
        self.assertEqual(other.receiveJSON()[0]["result"], "ok")

    def test_maxConnectionsRefusedWith503(self) -> None:
        self.factory.limits = attr.evolve(self.limits, maxConnections=3)
        clients = [self.openClient() for _ in range(3)]
        response = self.connect().open("/dev/")
        self.assertEqual(response.status, 503)
        self.closeClient(clients[0])
        self.assertEqual(self.connect().open("/dev/").status, 101)

    def test_maxSubscriptions(self) -> None:
        client = self.openClient()
        client.sendJSON({"command": "subscribe", "bugs": [1, 2, 3, 4]})
        [reply] = client.receiveJSON()
        self.assertEqual(reply["error"], "too many subscriptions; at most 3 bugs per connection")

    def test_slowClientKeepsNewestPerBugAndCatchesUp(self) -> None:
        """
        While the transport is full, the client's updates are coalesced to
        the newest per bug, and sent in stream order when it drains.
        """
        client = self.openClient()
        client.sendJSON({"command": "subscribe", "bugs": [1, 2]})
        client.receive()
        producer = client.transport.producer
        self.assertIsNotNone(producer)
        producer.pauseProducing()
        for seq, bug in [(1, 1), (2, 2), (3, 1)]:
            self.feed.registry.publish(BugUpdate(bug, datetime(2014, 4, 3), seq))
        self.assertEqual(client.receive(), [])
        producer.resumeProducing()
        self.assertEqual([m["seq"] for m in client.receiveJSON()], [2, 3])

    def test_stuckClientClosed4001AndFreed(self) -> None:
        """
        A client that stays paused past C{slowClientTimeout} is closed with
        4001, and what it held is freed at once.
        """
        client, other = self.openClient(), self.openClient()
        client.sendJSON({"command": "subscribe", "bugs": [1]})
        other.sendJSON({"command": "subscribe", "bugs": [1]})
        client.receive()
        other.receive()
        client.transport.producer.pauseProducing()
        self.feed.registry.publish(BugUpdate(1, datetime(2014, 4, 3), 1))
        self.clock.advance(20)
        [close] = client.receive()
        self.assertEqual(close.closeCode, 4001)
        self.assertEqual(self.feed.registry.subscribers(1), {other.protocol})
        self.assertEqual(self.factory.slowClientCloses, 1)
        self.assertEqual([m["seq"] for m in other.receiveJSON()], [1])
        self.clock.advance(10)  # the close handshake times out
        client.deliverDisconnect()
        self.assertTrue(client.disconnected)

    def test_tooManyPendingBugsClosed4001(self) -> None:
        client = self.openClient()
        client.sendJSON({"command": "subscribe", "bugs": [1, 2, 3]})
        client.receive()
        client.transport.producer.pauseProducing()
        for bug in (1, 2, 3):
            self.feed.registry.publish(BugUpdate(bug, datetime(2014, 4, 3), bug))
        self.assertClosedWith(client, 4001)
        self.assertEqual(self.feed.registry.bugCount, 0)

    def test_replayCountsAsCommands(self) -> None:
        """
        A replay counts once more per hundred updates it sends: a client
        cannot make the server encode its whole history many times a
        second.
        """
        self.factory.limits = attr.evolve(self.limits, maxSubscriptions=1000)
        self.feed.epoch = "e"
        self.feed.markCaughtUp()
        for seq in range(1, 401):
            self.feed.receive(BugUpdate(seq, datetime(2014, 4, 3), seq))
        client = self.openClient()
        for first in (1, 101, 201, 301):
            bugs = list(range(first, first + 100))
            client.sendJSON({"command": "subscribe", "bugs": bugs, "after": 0, "epoch": "e"})
            [reply, *updates] = client.receiveJSON()
            self.assertEqual((reply["recovered"], len(updates)), (True, 100))
        # 10 at once, less four resumes and their hundred updates each.
        for _ in range(3):
            client.sendJSON({"command": "subscriptions"})
        replies = client.receiveJSON()
        self.assertEqual([r["result"] for r in replies], ["ok"] * 2 + ["error"])

    def test_clientNotReadWhileItsUpdatesWait(self) -> None:
        """
        While a client's transport is full, the server stops reading from
        it: replies to its commands and pongs to its pings would only pile
        up behind what it does not read.  Once it reads, so does the server.
        """
        client = self.openClient()
        client.transport.producer.pauseProducing()
        self.assertEqual(client.transport.producerState, "paused")
        client.transport.producer.resumeProducing()
        self.assertEqual(client.transport.producerState, "producing")

    def test_resumeOverTheWire(self) -> None:
        """
        A resume waits while the feed is behind; commands sent meanwhile
        are answered after it, in order.
        """
        self.feed.epoch = "e"
        self.feed.receive(BugUpdate(1, datetime(2014, 4, 3), 5))
        client = self.openClient()
        client.sendJSON({"command": "subscribe", "bugs": [1], "after": 4, "epoch": "e"})
        client.sendJSON({"command": "subscriptions"})
        self.assertEqual(client.receive(), [])
        self.feed.markCaughtUp()
        replies = client.receiveJSON()
        self.assertEqual(
            [(r["command"], r.get("recovered"), r.get("seq")) for r in replies],
            [("subscribe", True, None), ("update", None, 5), ("subscriptions", None, None)],
        )

    def test_closingWhileAResumeWaitsLeavesNothing(self) -> None:
        client = self.openClient()
        client.sendJSON({"command": "subscribe", "bugs": [1], "after": 4})
        client.connectionLost()
        self.feed.markCaughtUp()
        self.assertEqual(self.feed.registry.bugCount, 0)

    def test_originNotAllowedRefused(self) -> None:
        """
        With an allowlist, a browser from elsewhere is refused; listed
        origins (wildcards too) are let in.
        """
        self.assertEqual(
            self.connect().open("/dev/", origin="https://evil.example.net").status, 403
        )
        self.assertEqual(
            self.connect().open("/dev/", origin="https://bugzilla.example.com").status, 101
        )
        self.assertEqual(self.connect().open("/dev/", origin="https://a.example.org").status, 101)

    def test_permessageDeflateDeclined(self) -> None:
        """
        Compression offers are declined, so no compression bomb can reach
        the server.
        """
        response = self.connect().open(
            "/dev/", extra=["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"]
        )
        self.assertEqual(response.status, 101)
        self.assertNotIn("sec-websocket-extensions", response.headers)

    def assertClosedWith(self, client: InMemoryWebSocketClient, code: int) -> None:
        """
        The server's last frame to C{client} is a close with C{code}; the
        client answers it, ending the connection.
        """
        frames = client.receive()
        self.assertEqual(frames[-1].closeCode, code)
        client.sendClose(code)
        self.assertTrue(client.disconnected)
        # Autobahn leaves its close-handshake timer to run out even once
        # the connection is gone; it does nothing then.
        self.clock.advance(1)

    def test_protocolViolations(self) -> None:
        """
        Unmasked frames and unknown opcodes close with 1002, invalid UTF-8
        with 1007; another client carries on.
        """
        other = self.openClient()
        unmasked = self.openClient()
        unmasked.send(b"\x81\x02hi")
        self.assertClosedWith(unmasked, 1002)
        opcode = self.openClient()
        opcode.sendFrame(0x3, b"x")
        self.assertClosedWith(opcode, 1002)
        utf8 = self.openClient()
        utf8.sendFrame(TEXT, b"\xff\xfe")
        self.assertClosedWith(utf8, 1007)
        other.sendJSON({"command": "version"})
        self.assertEqual(other.receiveJSON()[0]["result"], "ok")
