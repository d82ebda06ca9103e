"""
Tests for L{bugzfeed.systemd}: notifications driven by a fake notifier and
a L{Clock}; the unit files in C{contrib/systemd} checked by
C{systemd-analyze}; and a real C{twistd bugzfeed} talking to a notification
socket of the test's own.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any, List

from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from bugzfeed.systemd import (
    INotifier,
    SocketNotifier,
    SystemdNotifyService,
    systemdService,
    watchdogInterval,
    whenListening,
)
from tests.integration import AMQP_URL, REPOSITORY, IntegrationTestCase, freePort, waitFor

UNITS = os.path.join(REPOSITORY, "contrib", "systemd")
INSTALLED_TWISTD = "/opt/bugzfeed/.venv/bin/twistd"


@implementer(INotifier)
class RecordingNotifier:
    """
    Keeps every notification, split into its assignments.
    """

    def __init__(self) -> None:
        self.sent: List[List[str]] = []

    def notify(self, state: str) -> None:
        self.sent.append(state.split("\n"))

    def assignments(self) -> List[str]:
        return [line for state in self.sent for line in state]

    def take(self) -> List[str]:
        """The assignments sent since the last call."""
        lines = self.assignments()
        self.sent = []
        return lines


class WatchdogIntervalTests(SynchronousTestCase):
    def test_halfOfWatchdogUsec(self) -> None:
        """
        The watchdog is fed every half C{WATCHDOG_USEC}, as systemd advises.
        """
        self.assertEqual(watchdogInterval({"WATCHDOG_USEC": "30000000"}, 7), 15.0)

    def test_offWithoutUsableUsec(self) -> None:
        """
        No, an empty, a zero or a garbled C{WATCHDOG_USEC} means no watchdog.
        """
        for environ in [{}, {"WATCHDOG_USEC": ""}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "x"}]:
            self.assertIsNone(watchdogInterval(environ, 7), environ)

    def test_watchdogPidMustBeOurs(self) -> None:
        """
        A C{WATCHDOG_PID} naming another process means the watchdog is not
        ours to feed.
        """
        environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}
        self.assertIsNone(watchdogInterval(environ, 7))
        self.assertEqual(watchdogInterval(dict(environ, WATCHDOG_PID="7"), 7), 1.0)


class SystemdNotifyServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.notifier = RecordingNotifier()
        self.ready: Deferred = Deferred()
        self.status = "starting up"
        self.healthy = True
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def makeService(self, watchdog: Any = None) -> SystemdNotifyService:
        service = SystemdNotifyService(
            self.notifier,
            self.clock,
            lambda: self.ready,
            lambda: self.status,
            watchdogInterval=watchdog,
            healthy=lambda: self.healthy,
            statusInterval=10.0,
        )
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def test_fakeNotifierProvidesTheInterface(self) -> None:
        """
        The fake and the real notifier both provide L{INotifier}.
        """
        verifyObject(INotifier, self.notifier)
        verifyObject(INotifier, SocketNotifier())

    def test_readyOnceTheDaemonServes(self) -> None:
        """
        C{READY=1} goes out when the readiness L{Deferred} fires, not before,
        with the status of the moment.
        """
        service = self.makeService()
        self.assertEqual(self.notifier.take(), ["STATUS=starting up"])
        self.clock.advance(30)
        self.assertNotIn("READY=1", self.notifier.assignments())
        self.status = "12 clients; consuming"
        self.ready.callback(None)
        self.assertEqual(self.notifier.take(), ["READY=1", "STATUS=12 clients; consuming"])
        self.assertTrue(service.ready)

    def test_statusSentWhenItChanges(self) -> None:
        """
        The status line is refreshed every status interval, and only sent
        when it changed.
        """
        self.makeService()
        self.notifier.take()
        self.clock.advance(10)
        self.assertEqual(self.notifier.take(), [])
        self.status = "waiting for\nthe broker"
        self.clock.advance(10)
        self.assertEqual(self.notifier.take(), ["STATUS=waiting for the broker"])

    def test_watchdogFedWhileHealthy(self) -> None:
        """
        With a watchdog, C{WATCHDOG=1} goes out every interval, even before
        ready (the start may wait long for a broker), and stops while the
        health check fails.
        """
        self.makeService(watchdog=15.0)
        self.notifier.take()
        self.clock.advance(15)
        self.assertEqual(self.notifier.take(), ["WATCHDOG=1"])
        self.clock.advance(15)
        self.assertEqual(self.notifier.take(), ["WATCHDOG=1"])
        self.healthy = False
        self.clock.advance(15)
        self.assertEqual(self.notifier.take(), [])
        self.healthy = True
        self.clock.advance(15)
        self.assertEqual(self.notifier.take(), ["WATCHDOG=1"])

    def test_stoppingOnStop(self) -> None:
        """
        Stopping says C{STOPPING=1}, cancels the wait for readiness and
        ends the periodic notifications.
        """
        service = self.makeService(watchdog=15.0)
        self.notifier.take()
        service.stopService()
        self.assertEqual(self.notifier.take(), ["STOPPING=1", "STATUS=Stopping"])
        # The wait was cancelled: readiness coming late says nothing.
        self.ready.callback(None)
        self.clock.advance(60)
        self.assertEqual(self.notifier.take(), [])
        self.assertFalse(service.ready)

    def test_neverReadyIsLogged(self) -> None:
        """
        A readiness that fails is logged, and no C{READY=1} is sent.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.makeService()
        self.ready.errback(RuntimeError("cannot listen"))
        self.assertNotIn("READY=1", self.notifier.assignments())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any("Never became ready" in e.get("log_format", "") for e in events))

    def test_failingNotifierDoesNotStopTheDaemon(self) -> None:
        """
        A notifier that raises is logged and otherwise ignored.
        """

        @implementer(INotifier)
        class Broken:
            def notify(self, state: str) -> None:
                raise OSError("socket gone")

        self.notifier = Broken()  # type: ignore[assignment]
        service = self.makeService(watchdog=1.0)
        self.ready.callback(None)
        self.clock.advance(1)
        service.stopService()
        self.assertTrue(self.flushLoggedErrors(OSError))

    def test_noServiceOutsideSystemd(self) -> None:
        """
        Without C{NOTIFY_SOCKET} there is nothing to notify.
        """
        self.assertIsNone(systemdService({}, 7, self.clock, lambda: self.ready, str))
        service = systemdService(
            {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "4000000"},
            7,
            self.clock,
            lambda: self.ready,
            str,
        )
        assert service is not None
        self.assertEqual(service._watchdogInterval, 2.0)


class WhenListeningTests(SynchronousTestCase):
    def test_firesWithThePortLeavingItsChainAlone(self) -> None:
        """
        L{whenListening} fires once the listener's port is up, and leaves
        the port for the listener's own use.
        """
        listener = Service()
        port = object()
        listener._waitingForPort = succeed(port)  # type: ignore[attr-defined]
        self.assertIsNone(self.successResultOf(whenListening(listener)))
        self.assertIs(self.successResultOf(listener._waitingForPort), port)  # type: ignore[attr-defined]

    def test_failsWhenNotStarted(self) -> None:
        """
        A listener not yet started cannot be waited for.
        """
        self.failureResultOf(whenListening(Service()), RuntimeError)


def verifiableCopies(directory: str) -> List[str]:
    """
    Copy the unit files to C{directory}, running this checkout's twistd
    instead of the installed one, which C{systemd-analyze} checks exists.
    """
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    paths = []
    for name in ["bugzfeed.service", "bugzfeed-shim.service"]:
        with open(os.path.join(UNITS, name)) as f:
            text = f.read()
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text.replace(INSTALLED_TWISTD + " ", twistd + " "))
        paths.append(path)
    return paths


class UnitFileTests(SynchronousTestCase):
    def unit(self, name: str) -> str:
        with open(os.path.join(UNITS, name)) as f:
            return f.read()

    def test_unitsSayWhatTheIssueAsks(self) -> None:
        """
        Both units are C{Type=notify} with a watchdog, run twistd in the
        foreground without a pid file, restart on failure, raise the
        descriptor limit, run as a user of their own, and are hardened.
        """
        for name, plugin in [
            ("bugzfeed.service", "bugzfeed"),
            ("bugzfeed-shim.service", "bugzfeed-shim"),
        ]:
            unit = self.unit(name)
            for line in [
                "Type=notify",
                "NotifyAccess=main",
                f"ExecStart={INSTALLED_TWISTD} --nodaemon --pidfile= {plugin}",
                "Restart=on-failure",
                "DynamicUser=yes",
                "NoNewPrivileges=yes",
                "ProtectSystem=strict",
                "ProtectHome=yes",
                "PrivateTmp=yes",
                "PrivateDevices=yes",
                "ProtectKernelTunables=yes",
                "ProtectKernelModules=yes",
                "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                "SystemCallFilter=@system-service",
            ]:
                self.assertIn("\n" + line + "\n", unit, f"{name}: {line}")
            self.assertRegex(unit, r"\nWatchdogSec=\d+s\n")
            self.assertRegex(unit, rf"\nEnvironmentFile=-/etc/bugzfeed/{plugin}\.env\n")
            self.assertTrue(os.path.exists(os.path.join(UNITS, plugin + ".env.example")))
        limit = re.search(r"\nLimitNOFILE=(\d+)\n", self.unit("bugzfeed.service"))
        assert limit is not None
        self.assertGreater(int(limit.group(1)), 10000 + 1024, "room for 10,000 clients")

    def test_stopTimeoutOutlastsTheGracePeriods(self) -> None:
        """
        systemd waits longer than the daemons take to stop cleanly.
        """
        from bugzfeed.shim import DatabaseService
        from bugzfeed.tap import CLOSE_TIMEOUT

        for name, grace in [
            ("bugzfeed.service", CLOSE_TIMEOUT),
            ("bugzfeed-shim.service", DatabaseService.stopTimeout),
        ]:
            match = re.search(r"\nTimeoutStopSec=(\d+)s\n", self.unit(name))
            assert match is not None
            self.assertGreater(int(match.group(1)), 2 * grace, name)

    def test_systemdAnalyzeVerify(self) -> None:
        """
        C{systemd-analyze verify} finds nothing to say about either unit
        (it exits 0 even for unknown keys, so its output must be empty).
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not installed (Debian package systemd)")
        directory = self.mktemp()
        os.makedirs(directory)
        result = subprocess.run(
            [analyze, "verify", "--man=no", *verifiableCopies(directory)],
            capture_output=True,
            text=True,
        )
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))

    def test_systemdAnalyzeSecurity(self) -> None:
        """
        C{systemd-analyze security} rates both units' exposure low (2.0 or
        less out of 10).
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not installed (Debian package systemd)")
        directory = self.mktemp()
        os.makedirs(directory)
        for path in verifiableCopies(directory):
            result = subprocess.run(
                [analyze, "security", "--offline=yes", "--no-pager", path],
                capture_output=True,
                text=True,
            )
            if "--offline" in result.stderr:
                raise SkipTest("this systemd-analyze has no offline security check")
            level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
            self.assertIsNotNone(level, result.stdout + result.stderr)
            assert level is not None
            self.assertLessEqual(float(level.group(1)), 2.0, result.stdout)


class NotifySocket:
    """
    A datagram socket standing in for systemd's: what a daemon notifies,
    one notification at a time.
    """

    def __init__(self, test: Any) -> None:
        # AF_UNIX paths are short: not in trial's deep temp directory.
        directory = tempfile.mkdtemp(prefix="bzf")
        test.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "notify")
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(self.path)
        self.socket.setblocking(False)
        test.addCleanup(self.socket.close)
        self.received: List[str] = []

    def read(self) -> List[str]:
        """Every assignment received so far."""
        while True:
            try:
                self.received.extend(self.socket.recv(4096).decode("latin-1").split("\n"))
            except BlockingIOError:
                return self.received

    def waitFor(self, assignment: str, timeout: float = 30.0) -> Deferred:
        return waitFor(lambda: assignment in self.read(), timeout=timeout, what=assignment)


class NotifySocketTests(IntegrationTestCase):
    def spawn(self, notify: NotifySocket, *argv: str) -> Any:
        """
        Start C{twistd --nodaemon ARGV} under a pretend systemd: with
        C{NOTIFY_SOCKET} and a one-second C{WATCHDOG_USEC}.

        @return: The L{Daemon} and its process transport.
        """
        daemon = self.spawnTwistd(
            *argv, environment={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"}
        )
        return daemon, daemon.transport

    @inlineCallbacks
    def test_twistdBugzfeedNotifiesSystemd(self) -> None:
        """
        A real C{twistd bugzfeed} with C{NOTIFY_SOCKET} and
        C{WATCHDOG_USEC} set says C{READY=1} once it listens and consumes,
        feeds the watchdog, and says C{STOPPING=1} on SIGTERM.
        """
        notify = NotifySocket(self)
        exchange = self.exchange("simple")
        port = freePort()
        daemon, transport = self.spawn(
            notify,
            "bugzfeed",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--amqp",
            AMQP_URL,
            "--feed",
            f"/={exchange}",
        )
        yield notify.waitFor("READY=1")
        status = [line for line in notify.read() if line.startswith("STATUS=")]
        self.assertIn("STATUS=0 clients on tcp:", status[-1])
        self.assertIn("consuming", status[-1])
        self.assertIn(b"Consuming bugzfeed.test/", daemon.output)
        # Ready means listening: a client gets in at once.
        client = yield self.client(port, timeout=1)
        yield notify.waitFor("WATCHDOG=1", timeout=5)
        yield waitFor(
            lambda: "STATUS=1 clients on" in " ".join(notify.read()), what="the status to count 1"
        )
        transport.signalProcess(signal.SIGTERM)
        yield notify.waitFor("STOPPING=1")
        code = yield client.whenClosed()
        self.assertEqual(code, 1001)
        yield daemon.ended.addTimeout(20, reactor)
        self.assertNotIn(b"Traceback", daemon.output, daemon.output.decode()[-4000:])
        output = daemon.output.decode()
        self.assertIn("Told 1 clients the server is going (1001)", output)
        self.assertIn("All 1 clients gone after", output)
        self.assertLess(notify.read().index("READY=1"), notify.read().index("STOPPING=1"))

    @inlineCallbacks
    def test_twistdBugzfeedShimNotifiesSystemd(self) -> None:
        """
        A real C{twistd bugzfeed-shim} says C{READY=1} once connected to
        PostgreSQL and publishing to RabbitMQ, and C{STOPPING=1} on SIGTERM,
        logging the confirms it let settle.
        """
        notify = NotifySocket(self)
        database = self.database()
        daemon, transport = self.spawn(
            notify,
            "bugzfeed-shim",
            "--database",
            database.dsn,
            "--amqp",
            AMQP_URL,
            "--exchange",
            self.exchange("simple"),
            "--table",
            database.table,
        )
        yield notify.waitFor("READY=1")
        self.assertIn(b"Connected to PostgreSQL", daemon.output)
        status = [line for line in notify.read() if line.startswith("STATUS=")]
        self.assertEqual(status[-1], "STATUS=publishing; 0 published, 0 deleted, 0 in flight")
        yield notify.waitFor("WATCHDOG=1", timeout=5)
        transport.signalProcess(signal.SIGTERM)
        yield notify.waitFor("STOPPING=1")
        yield daemon.ended.addTimeout(20, reactor)
        self.assertNotIn(b"Traceback", daemon.output, daemon.output.decode()[-4000:])
        self.assertIn(b"0 confirms settled, 0 abandoned", daemon.output)
