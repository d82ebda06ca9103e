"""
Plain HTTP for both daemons: health, readiness and Prometheus metrics for
operators, the example page for tool authors, and the front door that lets
one port serve both HTTP and WebSocket upgrades.

Nothing here knows about feeds, streams or tables: the composition roots
hand in what to ask (a readiness check, a collector registry, which paths
have a feed).
"""

from __future__ import annotations

from importlib.resources import files
from io import BytesIO
from typing import Any, Callable, List, Mapping, Optional

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.application import strports
from twisted.application.service import IService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import IResource, NoResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

#: The paths operators poll.
HEALTH_PATH = b"/healthz"
READY_PATH = b"/readyz"
METRICS_PATH = b"/metrics"

#: Seconds an admin connection may stay idle.
ADMIN_TIMEOUT = 30.0

#: Seconds a scrape waits for values that need I/O (such as a table count)
#: before answering with what it has.
REFRESH_TIMEOUT = 5.0


def _plain(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return text.encode("utf-8")


class HealthResource(Resource):
    """
    C{/healthz}: 200 whenever the process answers at all.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return _plain(request, 200, "ok\n")


class ReadinessResource(Resource):
    """
    C{/readyz}: 200 when C{isReady()} holds, else 503, so that a load
    balancer sends clients only to a node that serves them updates.
    """

    isLeaf = True

    def __init__(self, isReady: Callable[[], bool]) -> None:
        super().__init__()
        self._isReady = isReady

    def render_GET(self, request: Request) -> bytes:
        if self._isReady():
            return _plain(request, 200, "ready\n")
        return _plain(request, 503, "not ready\n")


class MetricsResource(Resource):
    """
    C{/metrics}: the Prometheus text format of one service's own registry.

    @ivar refresh: Called before each scrape, for values that take I/O to
        read; returns a L{Deferred}.  A scrape waits for it at most
        L{REFRESH_TIMEOUT} seconds; if it fails, the scrape still answers
        with the values that need no I/O.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        registry: CollectorRegistry,
        clock: IReactorTime,
        refresh: Optional[Callable[[], Deferred]] = None,
    ) -> None:
        super().__init__()
        self._registry = registry
        self._clock = clock
        self.refresh = refresh

    def render_GET(self, request: Request) -> Any:
        if self.refresh is None:
            return self._render(request)
        # Set when the connection goes before the answer is ready.
        gone: List[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = maybeDeferred(self.refresh).addTimeout(REFRESH_TIMEOUT, self._clock)
        # The daemon logs its outages already: once per scrape would be noise.
        d.addErrback(
            lambda f: self._log.debug("Metrics refresh failed: {error}", error=f.getErrorMessage())
        )

        def answer(_: Any) -> None:
            if gone:
                return
            request.write(self._render(request))
            request.finish()

        d.addCallback(answer)
        return NOT_DONE_YET

    def _render(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self._registry)


def adminResources(
    isReady: Callable[[], bool],
    registry: CollectorRegistry,
    clock: IReactorTime,
    refresh: Optional[Callable[[], Deferred]] = None,
) -> Mapping[bytes, IResource]:
    """
    @return: The operators' resources by path: health, readiness, metrics.
    """
    return {
        HEALTH_PATH: HealthResource(),
        READY_PATH: ReadinessResource(isReady),
        METRICS_PATH: MetricsResource(registry, clock, refresh),
    }


def examplePageHTML() -> bytes:
    """
    @return: The example page, shipped with the package.
    """
    return files("bugzfeed").joinpath("static", "example.html").read_bytes()


class ExamplePage(Resource):
    """
    The example page: a small client of the feed it is served from.
    """

    isLeaf = True

    def __init__(self, html: bytes) -> None:
        super().__init__()
        self._html = html

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        # The page connects back to its own origin only.
        request.setHeader(b"x-content-type-options", b"nosniff")
        return self._html


def isWebSocketUpgrade(request: Request) -> bool:
    """
    @return: Whether C{request} asks to become a WebSocket.
    """
    upgrade = request.getHeader(b"upgrade") or b""
    return b"websocket" in upgrade.lower()


class FrontDoor(Resource):
    """
    Routes every request on a listener by its whole path: a WebSocket
    upgrade to C{websocket} (which answers unknown paths itself), a path in
    C{routes} to its resource, a path C{pageAt} knows to that page, anything
    else to a 404.

    @ivar websocket: Takes over upgrade requests, or L{None} on a listener
        without WebSockets (whose upgrades get the 404).
    """

    isLeaf = True

    def __init__(
        self,
        routes: Mapping[bytes, IResource],
        websocket: Optional[IResource] = None,
        pageAt: Callable[[bytes], Optional[IResource]] = lambda path: None,
    ) -> None:
        super().__init__()
        self.routes = dict(routes)
        self.websocket = websocket
        self._pageAt = pageAt

    def render(self, request: Request) -> Any:
        if self.websocket is not None and isWebSocketUpgrade(request):
            return self.websocket.render(request)
        path = request.path
        resource = self.routes.get(path) or self._pageAt(path)
        if resource is None:
            resource = NoResource("Nothing here.")
        return resource.render(request)


#: The largest request body taken, in bytes.  Nothing here reads one; a
#: body is taken only so that a client may send one with its GET.
MAX_REQUEST_BODY = 65536

_BODY_TOO_LARGE = (
    b"HTTP/1.1 413 Content Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nrequest body too large\n"
)


class SmallBodyRequest(Request):
    """
    A request whose body is kept in memory, up to L{MAX_REQUEST_BODY}
    bytes: Twisted would spool any body, however large, to a temporary
    file, so one client could fill the disk.  A larger one gets 413.
    """

    _refused = False
    _bodyLength = 0

    def gotLength(self, length: Optional[int]) -> None:
        self.content = BytesIO()
        if length is not None and length > MAX_REQUEST_BODY:
            self._refuse()

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._bodyLength += len(data)
        if self._bodyLength > MAX_REQUEST_BODY:
            self._refuse()
        else:
            assert self.content is not None
            self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._refused:
            super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self._refused = True
        self.content = BytesIO()  # let go of what was kept
        transport = self.channel.transport
        assert transport is not None
        transport.write(_BODY_TOO_LARGE)
        transport.loseConnection()


class QuietSite(Site):
    """
    A L{Site} that writes no access log: scrapes and health checks every few
    seconds would drown the daemon's own log.  Request bodies are bounded
    (L{SmallBodyRequest}).
    """

    requestFactory = SmallBodyRequest

    def log(self, request: http.Request) -> None:
        pass


def makeSite(root: IResource, reactor: Any, timeout: float) -> QuietSite:
    """
    @param timeout: Seconds a connection may stay idle before a request
        (for a WebSocket, the handshake) and between requests.
    """
    site = QuietSite(root, timeout=timeout, reactor=reactor)
    site.noisy = False
    return site


def feedFrontDoor(hasPage: Callable[[str], bool], routes: Mapping[bytes, IResource]) -> FrontDoor:
    """
    @param hasPage: Whether a plain GET of a path gets the example page.
    @param routes: Other resources by path, such as L{adminResources}.
    @return: The root of the HTTP side of a listener shared with
        WebSockets (see L{bugzfeed.sharedport}).
    """
    page = ExamplePage(examplePageHTML())
    return FrontDoor(
        routes,
        pageAt=lambda path: page if hasPage(path.decode("utf-8", "replace")) else None,
    )


def adminService(description: str, routes: Mapping[bytes, IResource], reactor: Any) -> IService:
    """
    @return: A service listening on C{description} with C{routes} only,
        named C{admin}.
    """
    service = strports.service(
        description, makeSite(FrontDoor(routes), reactor, ADMIN_TIMEOUT), reactor=reactor
    )
    service.setName("admin")
    return service
