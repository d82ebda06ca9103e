"""
Tests for L{bugzfeed.reconnect}, and for the server's shutdown telling
each client, in its 1001 close, when to come back.
"""

from __future__ import annotations

import calendar
import random

import txaio
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.limits import ClientLimits
from bugzfeed.protocol import makeFactory
from bugzfeed.reconnect import MAX_SPREAD, adviceIn, goingAwayReason, reconnectSpread
from tests.fakes import makeFeed
from tests.wsframes import InMemoryWebSocketClient


class AdviceTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """
        The delay a reason advises reads back, to a tenth of a second.
        """
        for delay in [0.0, 0.04, 2.46, 29.99]:
            self.assertEqual(adviceIn(goingAwayReason(delay)), round(delay, 1))

    def test_reasonFitsAClose(self) -> None:
        """
        A close reason holds at most 123 bytes.
        """
        self.assertLessEqual(len(goingAwayReason(MAX_SPREAD).encode("utf-8")), 123)

    def test_noAdvice(self) -> None:
        """
        A reason without advice, or no reason, advises nothing.
        """
        for reason in [None, "", "server shutting down", "reconnect in soon"]:
            self.assertIsNone(adviceIn(reason))

    def test_spreadGrowsWithClients(self) -> None:
        """
        Reconnects are spread at a thousand a second, over one second at
        least and L{MAX_SPREAD} at most.
        """
        self.assertEqual(
            [reconnectSpread(n) for n in [0, 10, 1000, 10000, 10**6]],
            [1.0, 1.0, 1.0, 10.0, MAX_SPREAD],
        )


class CloseAllAdviceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(calendar.timegm((2026, 12, 3, 0, 0, 0)))
        self.patch(txaio.config, "loop", Clock())
        self.factory = makeFactory(
            [makeFeed(self.clock, path="/")],
            reactor=self.clock,
            pingInterval=30,
            pingTimeout=30,
            handshakeTimeout=5,
            limits=ClientLimits(maxMessageSize=1024),
        )

    def openClient(self) -> InMemoryWebSocketClient:
        client = InMemoryWebSocketClient(self.factory)
        self.addCleanup(client.connectionLost)
        self.assertEqual(client.open("/").status, 101)
        return client

    def test_eachClientGetsItsOwnAdviceAndShutdownIsLogged(self) -> None:
        """
        Each client's 1001 carries the reason made for it; the factory logs
        how many clients it told, how many it dropped, and how long it
        took.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clients = [self.openClient() for _ in range(3)]
        rng = random.Random(4)
        d = self.factory.closeAll(5, reason=lambda: goingAwayReason(rng.uniform(0, 10)))
        advised = []
        for client in clients:
            [frame] = client.receive()
            self.assertEqual(frame.closeCode, 1001)
            advised.append(adviceIn(frame.payload[2:].decode("utf-8")))
        self.assertEqual(len(set(advised)), 3, advised)
        self.assertTrue(all(a is not None and 0 <= a <= 10 for a in advised))
        clients[0].sendClose(1001)
        clients[0].deliverDisconnect()
        self.clock.advance(5)
        for client in clients[1:]:
            client.deliverDisconnect()
        self.successResultOf(d)
        texts = [event["log_format"] for event in events if "log_format" in event]
        self.assertIn("Told {count} clients the server is going (1001)", texts)
        [dropped] = [e for e in events if "Dropping" in e.get("log_format", "")]
        self.assertEqual(dropped["count"], 2)
        [gone] = [e for e in events if "clients gone after" in e.get("log_format", "")]
        self.assertEqual((gone["count"], gone["seconds"]), (3, 5.0))
        self.assertEqual(self.clock.getDelayedCalls(), [])
