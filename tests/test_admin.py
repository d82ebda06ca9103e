"""
Integration tests of health, readiness and metrics over real HTTP on
loopback, for both daemons, against the real PostgreSQL and RabbitMQ.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from prometheus_client.parser import text_string_to_metric_families
from twisted.application.internet import backoffPolicy
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.web.client import Agent, readBody

from bugzfeed.shimtap import ShimConfig, ShimService
from bugzfeed.tap import BugzfeedServer, ServerConfig
from tests.integration import AMQP_URL, IntegrationTestCase, freePort, waitFor
from tests.test_integration import when


@inlineCallbacks
def get(port: int, path: str) -> Any:
    """
    @return: C{(status, body)} of a GET on 127.0.0.1.
    """
    agent = Agent(reactor)
    response = yield agent.request(b"GET", f"http://127.0.0.1:{port}{path}".encode("ascii"))
    body = yield readBody(response)
    return response.code, body


def samples(body: bytes) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


class ServerAdminTests(IntegrationTestCase):
    def startServer(self, amqp: str, admin: bool) -> Tuple[BugzfeedServer, int, int]:
        port, adminPort = freePort(), freePort()
        server = BugzfeedServer(
            ServerConfig(
                listen=f"tcp:{port}:interface=127.0.0.1",
                amqp=amqp,
                heartbeat=5,
                feeds=(("/", self.exchange("admin")),),
                admin=f"tcp:{adminPort}:interface=127.0.0.1" if admin else None,
            ),
            reactor,
        )
        server.getServiceNamed("amqp")._machine._policy = backoffPolicy(maxDelay=1.0)
        server.startService()
        self.addCleanup(server.stopService)
        return server, port, adminPort

    @inlineCallbacks
    def test_notReadyWithoutBroker(self) -> None:
        """
        With no broker to consume from, the server is alive but not ready,
        on the admin listener of its own; the WebSocket port serves no admin
        paths then.
        """
        server, port, adminPort = self.startServer(
            f"amqp://guest:guest@127.0.0.1:{freePort()}/", True
        )
        status, body = yield get(adminPort, "/healthz")
        self.assertEqual((status, body), (200, b"ok\n"))
        status, _ = yield get(adminPort, "/readyz")
        self.assertEqual(status, 503)
        status, body = yield get(adminPort, "/metrics")
        self.assertEqual(samples(body)[("bugzfeed_consuming", ())], 0)
        status, _ = yield get(port, "/readyz")
        self.assertEqual(status, 404)

    @inlineCallbacks
    def test_readyOnceConsuming(self) -> None:
        """
        On the shared port, readiness turns 200 once the server consumes its
        stream, and metrics are served in the Prometheus text format next to
        the example page.
        """
        server, port, _ = self.startServer(AMQP_URL, False)
        yield server.consumer.whenConsuming()
        status, _ = yield get(port, "/readyz")
        self.assertEqual(status, 200)
        status, body = yield get(port, "/metrics")
        self.assertEqual(samples(body)[("bugzfeed_consuming", ())], 1)
        status, body = yield get(port, "/")
        self.assertEqual(status, 200)
        self.assertIn(b"<title>Bugzfeed</title>", body)


class ShimAdminTests(IntegrationTestCase):
    @inlineCallbacks
    def test_backlogAndReadiness(self) -> None:
        """
        The shim is ready once connected to both PostgreSQL and RabbitMQ,
        and reports the rows it cannot move (no stream bound to its
        exchange, so the broker returns them) as pending, with their age,
        read from the real table.
        """
        database = self.database()
        adminPort = freePort()
        shim = ShimService(
            ShimConfig(
                database=database.dsn,
                amqp=AMQP_URL,
                heartbeat=5,
                exchange=self.exchange("unbound"),
                table=database.table,
                pollInterval=0.5,
                admin=f"tcp:{adminPort}:interface=127.0.0.1",
            ),
            reactor,
        )
        shim.getServiceNamed("amqp")._machine._policy = backoffPolicy(maxDelay=1.0)
        shim.startService()
        self.addCleanup(shim.stopService)
        database.insert(501, when(1))
        database.insert(502, when(2))

        @inlineCallbacks
        def ready() -> Any:
            status, _ = yield get(adminPort, "/readyz")
            return status == 200

        yield waitFor(lambda: shim.isReady(), what="the shim to connect")
        self.assertTrue((yield ready()))
        yield waitFor(lambda: shim.shim.requeued >= 2, what="the broker to return the rows")
        status, body = yield get(adminPort, "/metrics")
        values = samples(body)
        self.assertEqual(values[("bugzfeed_shim_rows_pending", ())], 2)
        self.assertGreater(values[("bugzfeed_shim_oldest_pending_row_age_seconds", ())], 60)
        self.assertGreaterEqual(values[("bugzfeed_shim_rows_republished_total", ())], 2)
        self.assertGreaterEqual(values[("bugzfeed_shim_confirm_latency_seconds_count", ())], 2)
