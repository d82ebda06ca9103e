"""
Tests for L{bugzfeed.web}: the operators' resources, the example page and
the front door that shares one port between HTTP and WebSockets; and the
readiness of both daemons as their composition roots wire it.
"""

from __future__ import annotations

from typing import Any, List

import txaio
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from bugzfeed.limits import ClientLimits
from bugzfeed.protocol import makeFactory
from bugzfeed.sharedport import SharedPortFactory
from bugzfeed.shimtap import ShimConfig, ShimService
from bugzfeed.tap import BugzfeedServer, ServerConfig
from bugzfeed.web import (
    REFRESH_TIMEOUT,
    ExamplePage,
    FrontDoor,
    HealthResource,
    MetricsResource,
    ReadinessResource,
    adminResources,
    examplePageHTML,
    feedFrontDoor,
    makeSite,
)
from tests.fakes import FakeChannel, makeFeed
from tests.wsframes import (
    DEFAULT_KEY,
    TEXT,
    TCPLikeStringTransport,
    acceptFor,
    clientFrame,
    handshakeRequest,
    parseHandshakeResponse,
    parseServerFrames,
)


def render(resource: Any, path: bytes = b"/", method: bytes = b"GET", **headers: bytes) -> Any:
    """
    Render C{resource} for a request of C{path}.

    @return: The L{DummyRequest}, finished unless rendering goes on.
    """
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.method = method
    request.path = path
    request.uri = path
    for name, value in headers.items():
        request.requestHeaders.setRawHeaders(name.encode("ascii"), [value])
    result = resource.render(request)
    if result is not NOT_DONE_YET:
        request.write(result)
        request.finish()
    if request.responseCode is None:  # DummyRequest leaves the default unset
        request.responseCode = 200
    return request


def body(request: DummyRequest) -> bytes:
    """
    @return: What has been written to C{request} so far.
    """
    return b"".join(request.written)


class _Constant(Collector):
    def __init__(self, value: float) -> None:
        self.value = value

    def collect(self) -> Any:
        yield GaugeMetricFamily("test_value", "A value.", value=self.value)


def parseMetrics(body: bytes) -> dict:
    """
    @return: Every sample in a Prometheus text exposition, by name and
        labels.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


class HealthAndReadinessTests(SynchronousTestCase):
    def test_healthAlwaysOK(self) -> None:
        """
        C{/healthz} answers 200 whenever the process answers at all.
        """
        request = render(HealthResource())
        self.assertEqual((request.responseCode, body(request)), (200, b"ok\n"))

    def test_readinessFollowsCheck(self) -> None:
        """
        C{/readyz} answers 503 while the check fails and 200 once it holds,
        asking afresh each time.
        """
        ready: List[bool] = [False]
        resource = ReadinessResource(lambda: ready[0])
        self.assertEqual(render(resource).responseCode, 503)
        ready[0] = True
        self.assertEqual(render(resource).responseCode, 200)
        ready[0] = False
        self.assertEqual(render(resource).responseCode, 503)


class MetricsResourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = _Constant(1.0)
        self.registry.register(self.collector)

    def test_prometheusText(self) -> None:
        """
        C{/metrics} answers the registry's values in the Prometheus text
        format, read at scrape time.
        """
        resource = MetricsResource(self.registry, self.clock)
        request = render(resource)
        self.assertEqual(parseMetrics(body(request)), {("test_value", ()): 1.0})
        self.assertIn(b"text/plain", request.responseHeaders.getRawHeaders(b"content-type")[0])
        self.collector.value = 2.0
        self.assertEqual(parseMetrics(body(render(resource))), {("test_value", ()): 2.0})

    def test_waitsForRefresh(self) -> None:
        """
        With a refresh, the scrape answers once it is done, with what it
        read.
        """
        refreshed: Deferred = Deferred()
        resource = MetricsResource(self.registry, self.clock, lambda: refreshed)
        request = render(resource)
        self.assertEqual(request.finished, 0)
        self.collector.value = 3.0
        refreshed.callback(None)
        self.assertEqual(request.finished, 1)
        self.assertEqual(parseMetrics(body(request)), {("test_value", ()): 3.0})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failedRefreshStillAnswers(self) -> None:
        """
        A refresh that fails still gets an answer, with what needs no I/O.
        """
        resource = MetricsResource(self.registry, self.clock, lambda: fail(ValueError("db down")))
        request = render(resource)
        self.assertEqual(request.finished, 1)
        self.assertEqual(parseMetrics(body(request)), {("test_value", ()): 1.0})
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_slowRefreshTimesOut(self) -> None:
        """
        A refresh that hangs is given up after L{REFRESH_TIMEOUT} seconds.
        """
        resource = MetricsResource(self.registry, self.clock, lambda: Deferred())
        request = render(resource)
        self.clock.advance(REFRESH_TIMEOUT - 0.1)
        self.assertEqual(request.finished, 0)
        self.clock.advance(0.1)
        self.assertEqual(request.finished, 1)
        self.assertEqual(parseMetrics(body(request)), {("test_value", ()): 1.0})

    def test_scraperGoneBeforeRefresh(self) -> None:
        """
        A scraper that hangs up while the refresh runs is not written to.
        """
        refreshed: Deferred = Deferred()
        request = render(MetricsResource(self.registry, self.clock, lambda: refreshed))
        request.processingFailed(Exception("gone"))  # as a lost connection does
        written = list(request.written)
        refreshed.callback(None)
        self.assertEqual(request.written, written)


class FrontDoorTests(SynchronousTestCase):
    """
    Routing by whole path, with WebSocket upgrades taken first.
    """

    def setUp(self) -> None:
        self.websocket = Resource()
        self.upgrades: List[bytes] = []
        self.websocket.render = lambda request: (  # type: ignore[method-assign]
            self.upgrades.append(request.path) or b"upgraded"
        )
        self.page = ExamplePage(b"<html>page</html>")
        self.door = FrontDoor(
            {b"/healthz": HealthResource()},
            websocket=self.websocket,
            pageAt=lambda path: self.page if path in (b"/", b"/dev/") else None,
        )

    def test_upgradeGoesToWebSocketWhateverThePath(self) -> None:
        """
        An upgrade request reaches the WebSocket side, even at a path HTTP
        serves (the WebSocket side refuses paths without a feed itself).
        """
        for path in [b"/", b"/dev/", b"/healthz", b"/nothing"]:
            render(self.door, path, upgrade=b"WebSocket")
        self.assertEqual(self.upgrades, [b"/", b"/dev/", b"/healthz", b"/nothing"])

    def test_plainGetOfFeedPathGetsPage(self) -> None:
        """
        A plain GET of a feed's path gets the example page.
        """
        for path in [b"/", b"/dev/"]:
            request = render(self.door, path)
            self.assertEqual((request.responseCode, body(request)), (200, b"<html>page</html>"))
            self.assertEqual(
                request.responseHeaders.getRawHeaders(b"content-type"),
                [b"text/html; charset=utf-8"],
            )
        self.assertEqual(self.upgrades, [])

    def test_routes(self) -> None:
        """
        A path in the routes gets its resource.
        """
        self.assertEqual(body(render(self.door, b"/healthz")), b"ok\n")

    def test_unknownPathNotFound(self) -> None:
        """
        Any other path is a 404.
        """
        for path in [b"/nothing", b"/healthz/more", b"/dev/x"]:
            self.assertEqual(render(self.door, path).responseCode, 404)

    def test_noWebSocketSide(self) -> None:
        """
        On a listener without WebSockets (an admin listener), an upgrade
        request is routed like any other request.
        """
        door = FrontDoor({b"/healthz": HealthResource()})
        self.assertEqual(render(door, b"/healthz", upgrade=b"websocket").responseCode, 200)
        self.assertEqual(render(door, b"/", upgrade=b"websocket").responseCode, 404)

    def test_otherMethodsRefused(self) -> None:
        """
        Only GET and HEAD are served.
        """
        from twisted.web.error import UnsupportedMethod

        self.assertRaises(UnsupportedMethod, render, self.door, b"/healthz", b"POST")

    def test_adminResources(self) -> None:
        """
        L{adminResources} serves health, readiness and metrics at their
        usual paths.
        """
        routes = adminResources(lambda: False, CollectorRegistry(), Clock())
        self.assertEqual(sorted(routes), [b"/healthz", b"/metrics", b"/readyz"])

    def test_examplePageShipped(self) -> None:
        """
        The example page ships with the package and connects to the feed at
        its own location.
        """
        html = examplePageHTML()
        self.assertTrue(html.startswith(b"<!DOCTYPE html>"))
        self.assertIn(b"location.pathname", html)


class SharedPortTests(SynchronousTestCase):
    """
    One listener for HTTP and WebSockets, driven over an in-memory
    transport: WebSocket clients see what they saw before the port was
    shared.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.strayClock = Clock()
        self.patch(txaio.config, "loop", self.strayClock)
        self.feed = makeFeed(self.clock, path="/")
        self.factory = makeFactory(
            [self.feed],
            reactor=self.clock,
            pingInterval=30,
            pingTimeout=10,
            handshakeTimeout=5,
            limits=ClientLimits(maxMessageSize=1024),
        )
        door = feedFrontDoor(
            lambda path: self.factory.feedAt(path) is not None,
            {b"/healthz": HealthResource()},
        )
        self.site = makeSite(door, self.clock, timeout=5)
        self.shared = SharedPortFactory(self.factory, self.site, self.clock, timeout=5)

    def connect(self) -> Any:
        protocol = self.shared.buildProtocol(None)
        transport = TCPLikeStringTransport()
        # A TCP transport names its protocol; the shared port swaps it.
        transport.protocol = protocol  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        self.addCleanup(
            lambda: transport.disconnecting or protocol.connectionLost(Failure(ConnectionDone()))
        )
        return protocol, transport

    def test_upgradeReachesFeed(self) -> None:
        """
        A WebSocket handshake at a feed's path is accepted (101) and the
        connection is the feed's.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(handshakeRequest("/"))
        response = parseHandshakeResponse(transport.value())
        assert response is not None
        self.assertEqual(response.status, 101)
        self.assertEqual(response.headers["sec-websocket-accept"], acceptFor(DEFAULT_KEY))
        self.assertEqual(self.factory.connectionCount, 1)

    def test_upgradeAtUnknownPathRefused(self) -> None:
        """
        A WebSocket handshake at a path without a feed gets 404, as before.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(handshakeRequest("/nothing/"))
        response = parseHandshakeResponse(transport.value())
        assert response is not None
        self.assertEqual(response.status, 404)
        self.assertEqual(self.factory.connectionCount, 0)

    def test_plainGetServed(self) -> None:
        """
        A plain GET on the same port gets HTTP: the page at a feed's path,
        the admin resources at theirs.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK"))
        self.assertTrue(transport.value().endswith(b"ok\n"))

    def test_pageAtFeedPathsOnly(self) -> None:
        """
        A plain GET gets the example page at a feed's path, with or without
        its trailing slash, and a 404 elsewhere.
        """
        for path, status in [(b"/", b"200"), (b"/?x=1", b"200"), (b"/dev/", b"404")]:
            protocol, transport = self.connect()
            protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 " + status), path)
        self.factory.feeds = {"/dev/": self.feed}
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /dev HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertIn(b"<!DOCTYPE html>", transport.value())

    def test_framesRightBehindTheHandshakeAreKept(self) -> None:
        """
        A client that sends its first message in the same chunk as its
        handshake still gets it answered: the feed's protocol gets every
        byte as received.
        """
        protocol, transport = self.connect()
        message = clientFrame(TEXT, b'{"command": "subscribe", "bugs": [7]}')
        protocol.dataReceived(handshakeRequest("/") + message)
        response = parseHandshakeResponse(transport.value())
        assert response is not None
        self.assertEqual(response.status, 101)
        frames, _ = parseServerFrames(response.body)
        self.assertEqual([frame.json()["bugs"] for frame in frames], [[7]])

    def test_oversizedRequestHeadRefused(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"x" * 20000)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431"))
        self.assertTrue(transport.disconnecting)

    def test_requestBodyBounded(self) -> None:
        """
        A request body is kept in memory up to 64 KiB; past that, declared
        or sent (chunked), the client gets 413 and is disconnected, and
        nothing is spooled to disk.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413"))
        self.assertTrue(transport.disconnecting)
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(5):
            protocol.dataReceived(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413"))
        self.assertTrue(transport.disconnecting)
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK"))

    def test_silentConnectionClosedAfterHandshakeTimeout(self) -> None:
        """
        A connection that never sends its request is closed after the
        handshake timeout.
        """
        protocol, transport = self.connect()
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)


class ServerReadinessTests(SynchronousTestCase):
    """
    The server is ready once running, listening and consuming.
    """

    def setUp(self) -> None:
        self.server = BugzfeedServer(ServerConfig(listen="tcp:0"), MemoryReactorClock())

    def test_transitions(self) -> None:
        """
        Each of running, listening and consuming is needed; losing any one
        (such as the broker connection) makes the node unready again.
        """
        server = self.server
        self.assertFalse(server.isReady())
        server.running = 1
        self.assertFalse(server.isReady())
        server.site.doStart()  # as a port does once listening
        self.assertFalse(server.isReady())
        server.consumer.consuming = True
        self.assertTrue(server.isReady())
        server.consumer.consuming = False
        self.assertFalse(server.isReady())
        server.consumer.consuming = True
        server.site.doStop()
        self.assertFalse(server.isReady())

    def test_adminOnListenerByDefault(self) -> None:
        """
        Without C{--admin}, the WebSocket listener serves the admin
        resources; with it, they move to a listener of their own.
        """
        shared = render(self.server.site.resource, b"/readyz")
        self.assertEqual(shared.responseCode, 503)
        separate = BugzfeedServer(ServerConfig(listen="tcp:0", admin="tcp:0"), MemoryReactorClock())
        self.assertEqual(render(separate.site.resource, b"/readyz").responseCode, 404)
        admin = separate.getServiceNamed("admin")
        self.assertEqual(render(admin.factory.resource, b"/readyz").responseCode, 503)
        self.assertEqual(render(admin.factory.resource, b"/").responseCode, 404)


class ShimReadinessTests(SynchronousTestCase):
    """
    The shim is ready once running, connected to PostgreSQL and to the
    broker.
    """

    def test_noAdminListenerByDefault(self) -> None:
        """
        Without C{--admin} the shim serves no HTTP.
        """
        service = ShimService(ShimConfig(), MemoryReactorClock())
        self.assertNotIn("admin", service.namedServices)

    def test_transitions(self) -> None:
        """
        Both connections are needed; a dead database connection makes the
        shim unready again.
        """
        service = ShimService(ShimConfig(admin="tcp:0"), MemoryReactorClock())
        ready = lambda: (
            render(  # noqa: E731
                service.getServiceNamed("admin").factory.resource, b"/readyz"
            ).responseCode
        )
        self.assertEqual(ready(), 503)
        service.running = 1
        service.database.connected = True
        self.assertEqual(ready(), 503)
        self.patch(service.shim, "drain", lambda: None)  # no table here
        service.shim.publisherReady(FakeChannel())
        self.assertEqual(ready(), 200)
        service._connection.detector.connectionIsDead = True
        self.assertEqual(ready(), 503)
        service._connection.detector.connectionIsDead = False
        service.shim.publisherLost()
        self.assertEqual(ready(), 503)
