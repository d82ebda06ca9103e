"""
Tests for L{bugzfeed.watch}, the C{bugzfeed-watch} client: its reconnect
and resume logic against fake connections on a L{Clock}; then against a
real server in this process; then the console script as a process,
stopped with SIGINT.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import sys
from typing import Any, Dict, List, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.reconnect import goingAwayReason
from bugzfeed.watch import (
    GOING_AWAY_SPREAD,
    HumanPrinter,
    JSONPrinter,
    ReconnectDelays,
    Watcher,
    WatchError,
    WatchOptions,
    makeWatcher,
)
from tests.integration import waitFor
from tests.test_integration import ServiceTestCase, iso, when

UPGRADE_404 = "WebSocket connection upgrade failed [404]: Not Found"


class FakeConnection:
    """
    An open connection that keeps what it is told.
    """

    def __init__(self) -> None:
        self.sent: List[Dict[str, Any]] = []
        self.closed = False

    def sendCommand(self, command: Dict[str, Any]) -> None:
        self.sent.append(command)

    def closeNormally(self) -> None:
        self.closed = True


class WatcherTests(SynchronousTestCase):
    """
    The watcher over fake connections: each C{connect} is an attempt the
    test completes.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.attempts: List[Deferred] = []
        self.output: List[Dict[str, Any]] = []
        self.notices: List[str] = []
        self.delays = ReconnectDelays(random.Random(7), initialDelay=1.0, maxDelay=16.0)
        self.watcher = Watcher(
            [1234, 5678],
            self.connect,
            self.clock,
            self.output.append,
            self.notices.append,
            self.delays,
        )
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))
        self.addCleanup(self.stopWatcher)

    def stopWatcher(self) -> None:
        d = self.watcher.stop()
        if self.watcher.connection is not None:
            self.watcher.disconnected(1000, None)
        self.successResultOf(d.addErrback(lambda f: f.trap(WatchError)))

    def connect(self, watcher: Watcher) -> Deferred:
        d: Deferred = Deferred()
        self.attempts.append(d)
        return d

    def openConnection(self) -> FakeConnection:
        """
        Complete the latest attempt with an open connection.
        """
        connection = FakeConnection()
        self.attempts[-1].callback(None)
        self.watcher.connected(connection)
        return connection

    def subscribed(self, connection: FakeConnection, **fields: Any) -> None:
        self.assertEqual(connection.sent[-1]["command"], "subscribe")
        self.watcher.received(
            {"command": "subscribe", "result": "ok", "bugs": [1234, 5678], **fields}
        )

    def update(self, bug: int, seq: Optional[int]) -> None:
        message: Dict[str, Any] = {"command": "update", "bug": bug, "when": "2026-12-03T19:00:00"}
        if seq is not None:
            message["seq"] = seq
        self.watcher.received(message)

    def reconnect(self, code: int = 1006, reason: Optional[str] = None) -> FakeConnection:
        """
        Drop the connection, wait as long as the watcher wants, and open
        the next one.
        """
        count = len(self.attempts)
        self.watcher.disconnected(code, reason)
        [retry] = self.clock.getDelayedCalls()
        self.clock.advance(retry.getTime() - self.clock.seconds())
        self.assertEqual(len(self.attempts), count + 1)
        return self.openConnection()

    def test_subscribesThenPrintsUpdates(self) -> None:
        """
        The first subscription asks for no replay; updates go to the output.
        """
        self.watcher.start()
        connection = self.openConnection()
        self.assertEqual(connection.sent, [{"command": "subscribe", "bugs": [1234, 5678]}])
        self.subscribed(connection)
        self.update(1234, 7)
        self.update(5678, 8)
        self.assertEqual([(m["bug"], m["seq"]) for m in self.output], [(1234, 7), (5678, 8)])
        self.assertEqual(self.notices, ["Watching bugs 1234, 5678"])

    def test_resumesAfterLastSeqWithEpoch(self) -> None:
        """
        After a reconnect the subscription carries C{after}, the last seq
        seen, and the epoch of the last reply; a recovered resume is noted.
        """
        self.watcher.start()
        connection = self.openConnection()
        self.subscribed(connection, epoch="e1", recovered=None)
        self.update(1234, 41)
        self.update(1234, 42)
        connection = self.reconnect()
        self.assertEqual(
            connection.sent,
            [{"command": "subscribe", "bugs": [1234, 5678], "after": 42, "epoch": "e1"}],
        )
        self.subscribed(connection, epoch="e1", recovered=True)
        self.assertIn("Resumed after update 42: nothing missed", self.notices)

    def test_repeatsAreDropped(self) -> None:
        """
        An update at or before the last seq seen is a repeat and is not
        printed; one without a seq always is.
        """
        self.watcher.start()
        self.subscribed(self.openConnection())
        for seq in [5, 6, 6, 3, 7, None]:
            self.update(1234, seq)
        self.assertEqual([m.get("seq") for m in self.output], [5, 6, 7, None])

    def test_notRecoveredWarns(self) -> None:
        """
        A resume the server could not make is a warning naming the bugs to
        re-read.
        """
        self.watcher.start()
        self.subscribed(self.openConnection(), epoch="e1")
        self.update(1234, 9)
        connection = self.reconnect()
        self.subscribed(connection, epoch="e1", recovered=False, reason="too old")
        [warning] = [n for n in self.notices if n.startswith("warning:")]
        self.assertIn("could not resume after update 9 (too old)", warning)
        self.assertIn("re-read bugs 1234, 5678", warning)

    def test_newEpochStartsSeqsAfresh(self) -> None:
        """
        A reply with another epoch means a new stream: lower seqs are new
        updates, not repeats.
        """
        self.watcher.start()
        self.subscribed(self.openConnection(), epoch="e1")
        self.update(1234, 900)
        connection = self.reconnect()
        self.subscribed(connection, epoch="e2", recovered=False, reason="new epoch")
        self.update(1234, 3)
        self.assertEqual([m["seq"] for m in self.output], [900, 3])
        connection = self.reconnect()
        self.assertEqual((connection.sent[-1]["after"], connection.sent[-1]["epoch"]), (3, "e2"))

    def test_serverIgnoringAfter(self) -> None:
        """
        Against a server that ignores C{after} (no C{recovered} in its
        reply) watching goes on, with a warning that changes may be missing.
        """
        self.watcher.start()
        self.subscribed(self.openConnection())
        self.update(1234, 5)
        connection = self.reconnect()
        self.assertEqual(connection.sent[-1]["after"], 5)
        self.subscribed(connection)
        self.assertTrue(any("does not resume" in n for n in self.notices))
        self.update(1234, 5)
        self.update(1234, 6)
        self.assertEqual([m["seq"] for m in self.output], [5, 6])

    def test_serverRefusingAfterGetsAPlainSubscribe(self) -> None:
        """
        A server that answers a resume with an error gets a plain
        C{subscribe}, and no more resumes.
        """
        self.watcher.start()
        self.subscribed(self.openConnection())
        self.update(1234, 5)
        connection = self.reconnect()
        self.watcher.received({"command": "subscribe", "result": "error", "error": "what after"})
        self.assertEqual(connection.sent[-1], {"command": "subscribe", "bugs": [1234, 5678]})
        self.subscribed(connection)
        connection = self.reconnect()
        self.assertNotIn("after", connection.sent[-1])
        self.assertFalse(self.watcher.finished.called)

    def test_refusedSubscriptionEndsWatching(self) -> None:
        """
        A plain subscription refused is the end: L{Watcher.finished} fails.
        """
        self.watcher.start()
        connection = self.openConnection()
        self.watcher.received({"command": "subscribe", "result": "error", "error": "no"})
        failure = self.failureResultOf(self.watcher.finished, WatchError)
        self.assertIn("refused the subscription: no", failure.getErrorMessage())
        self.assertTrue(connection.closed)

    def test_notFoundEndsWatching(self) -> None:
        """
        A URL the server answers with 404 is not worth retrying.
        """
        self.watcher.start()
        self.attempts[-1].callback(None)
        self.watcher.disconnected(1006, UPGRADE_404)
        self.failureResultOf(self.watcher.finished, WatchError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_serviceUnavailableIsRetried(self) -> None:
        """
        A 503 at the upgrade is retried like any failure.
        """
        self.watcher.start()
        self.attempts[-1].callback(None)
        self.watcher.disconnected(1006, UPGRADE_404.replace("404]: Not Found", "503]: Busy"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_backoffDoublesWithJitterThenResets(self) -> None:
        """
        Failed attempts in a row wait longer and longer, each drawn from the
        upper half of a doubling ceiling up to the maximum; a subscription
        resets the backoff.
        """
        self.watcher.start()
        waits = []
        for _ in range(7):
            self.attempts[-1].errback(ConnectionRefusedError())
            [retry] = self.clock.getDelayedCalls()
            waits.append(retry.getTime() - self.clock.seconds())
            self.clock.advance(waits[-1])
        for wait, ceiling in zip(waits, [1, 2, 4, 8, 16, 16, 16]):
            self.assertTrue(ceiling / 2 <= wait <= ceiling, (wait, ceiling))
        self.assertEqual(len(set(waits)), len(waits), "jittered")
        self.subscribed(self.openConnection())
        self.watcher.disconnected(1006, None)
        [retry] = self.clock.getDelayedCalls()
        self.assertLessEqual(retry.getTime() - self.clock.seconds(), 1.0)

    def test_goingAwayFollowsAdvice(self) -> None:
        """
        A 1001 with advice waits as advised; without, a random wait of up to
        a few seconds.
        """
        self.watcher.start()
        self.subscribed(self.openConnection())
        before = self.clock.seconds()
        connection = self.reconnect(1001, goingAwayReason(3.7))
        self.assertAlmostEqual(self.clock.seconds() - before, 3.7)
        self.subscribed(connection)
        before = self.clock.seconds()
        self.reconnect(1001, "server shutting down")
        self.assertLessEqual(self.clock.seconds() - before, GOING_AWAY_SPREAD)

    def test_tooSlowComesBackSoon(self) -> None:
        """
        Closed as too slow (4001), the client comes back within a second and
        resumes.
        """
        self.watcher.start()
        self.subscribed(self.openConnection())
        self.update(1234, 12)
        before = self.clock.seconds()
        connection = self.reconnect(4001, "too slow")
        self.assertLessEqual(self.clock.seconds() - before, 1.0)
        self.assertEqual(connection.sent[-1]["after"], 12)

    def test_policyCloseBacksOff(self) -> None:
        """
        Closes that blame the client (1008 and friends) back off like
        failures, even after a subscription.
        """
        self.watcher.start()
        self.subscribed(self.openConnection())
        self.delays.failures = 4
        self.watcher.disconnected(1008, "rate limit")
        [retry] = self.clock.getDelayedCalls()
        self.assertGreaterEqual(retry.getTime() - self.clock.seconds(), 8.0)
        self.clock.advance(16)
        self.openConnection()

    def test_closedOutputStops(self) -> None:
        """
        When the reader of the output goes (a broken pipe), watching stops
        cleanly.
        """

        def brokenPipe(update: Dict[str, Any]) -> None:
            raise BrokenPipeError()

        self.watcher._output = brokenPipe
        self.watcher.start()
        connection = self.openConnection()
        self.subscribed(connection)
        self.update(1234, 1)
        self.assertTrue((self.watcher.outputClosed, connection.closed))
        self.watcher.disconnected(1000, None)
        self.successResultOf(self.watcher.finished)

    def test_stopWhileConnected(self) -> None:
        """
        Stopping closes the connection normally; C{finished} fires once it
        is gone, and no reconnect follows.
        """
        self.watcher.start()
        connection = self.openConnection()
        d = self.watcher.stop()
        self.assertTrue(connection.closed)
        self.assertNoResult(d)
        self.watcher.disconnected(1000, None)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWhileWaiting(self) -> None:
        """
        Stopping between attempts cancels the next one.
        """
        self.watcher.start()
        self.attempts[-1].errback(ConnectionRefusedError())
        self.successResultOf(self.watcher.stop())
        self.clock.advance(100)
        self.assertEqual(len(self.attempts), 1)

    def test_stopWhileConnecting(self) -> None:
        """
        Stopping during an attempt ends once the attempt does.
        """
        self.watcher.start()
        d = self.watcher.stop()
        self.assertNoResult(d)
        self.attempts[-1].errback(ConnectionRefusedError())
        self.successResultOf(d)


class PrinterTests(SynchronousTestCase):
    UPDATE = {"command": "update", "bug": 1234, "when": "2026-12-03T17:53:02", "seq": 7}

    def test_human(self) -> None:
        """
        One readable line per update.
        """
        out = io.StringIO()
        HumanPrinter(out)(self.UPDATE)
        self.assertEqual(out.getvalue(), "bug 1234 changed at 2026-12-03 17:53:02 UTC (update 7)\n")

    def test_json(self) -> None:
        """
        One JSON object per line, the server's message unchanged.
        """
        out = io.StringIO()
        JSONPrinter(out)(self.UPDATE)
        JSONPrinter(out)(self.UPDATE)
        self.assertEqual(
            [json.loads(line) for line in out.getvalue().splitlines()], [self.UPDATE] * 2
        )


class WatchOptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> WatchOptions:
        options = WatchOptions()
        options.parseOptions(argv)
        return options

    def test_urlAndBugs(self) -> None:
        """
        A URL and bug ids, with defaults for the rest.
        """
        options = self.parse("ws://host:8844/", "1234", "5678")
        self.assertEqual((options["url"], options["bugs"]), ("ws://host:8844/", [1234, 5678]))
        self.assertEqual((options["json"], options["max-delay"]), (0, 60.0))
        self.assertEqual(self.parse("--json", "wss://h/dev/", "1")["json"], 1)

    def test_refused(self) -> None:
        """
        No bugs, a bad id, a non-WebSocket URL and bad delays are refused.
        """
        for argv in [
            [],
            ["ws://h/"],
            ["ws://h/", "12x"],
            ["ws://h/", "0"],
            ["ws://h/", str(2**31)],
            ["http://h/", "1"],
            ["--max-delay=0.5", "ws://h/", "1"],
            ["--initial-delay=x", "ws://h/", "1"],
            ["--after=x", "ws://h/", "1"],
            ["--after=-1", "ws://h/", "1"],
            ["--cafile=/nonexistent", "wss://h/", "1"],
        ]:
            self.assertRaises(usage.UsageError, self.parse, *argv)

    def test_cafileMustBeACertificate(self) -> None:
        """
        A C{--cafile} that is not a PEM certificate is refused with a
        message, not a traceback.
        """
        notACertificate = self.mktemp()
        with open(notACertificate, "w") as f:
            f.write("root:x:0:0:root:/root:/bin/bash\n")
        error = self.assertRaises(
            usage.UsageError, self.parse, f"--cafile={notACertificate}", "wss://h/", "1"
        )
        self.assertIn("not a PEM certificate", str(error))

    def test_afterStartsWithAResume(self) -> None:
        """
        C{--after} makes the first subscribe a resume after that update.
        """
        options = self.parse("--after", "7", "ws://h/", "1")
        watcher = makeWatcher(Clock(), options, io.StringIO(), io.StringIO())
        self.assertEqual(
            watcher.resume.subscribeRequest(), {"command": "subscribe", "bugs": [1], "after": 7}
        )
        plain = makeWatcher(Clock(), self.parse("ws://h/", "1"), io.StringIO(), io.StringIO())
        self.assertNotIn("after", plain.resume.subscribeRequest())

    def test_helpIsComplete(self) -> None:
        """
        C{--help} explains the arguments, output, reconnecting, resuming and
        exit status, and lists every option.
        """
        text = " ".join(str(WatchOptions()).split())
        for words in [
            "URL BUG",
            "--json",
            "--quiet",
            "--max-delay",
            "--initial-delay",
            "--timeout",
            "--after",
            "--version",
            "Usage: bugzfeed-watch",
            "backoff",
            "'after'",
            "Exit status",
            "Ctrl-C",
        ]:
            self.assertIn(words, text)


class Process(ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)


class WatchAgainstServerTests(ServiceTestCase):
    """
    The watcher, and the console script, against a real server fed by a
    real shim.
    """

    @inlineCallbacks
    def test_receivesUpdatesAcrossAServerRestartOfTheConnection(self) -> None:
        """
        A watcher in this process prints an update, is told to go (1001
        with advice), comes back, resubscribes with C{after} (which this
        server ignores, so it warns) and prints the next update.
        """
        exchange = self.exchange("simple")
        database = self.database()
        port = yield self.startServer([("/", exchange)])
        self.startShim(database, exchange)
        options = WatchOptions()
        options.parseOptions(["--json", "--initial-delay=0.1", f"ws://127.0.0.1:{port}/", "8101"])
        out, err = io.StringIO(), io.StringIO()
        watcher = makeWatcher(reactor, options, out, err)
        watcher.start()
        self.addCleanup(lambda: watcher.stop().addTimeout(5, reactor))
        yield waitFor(lambda: watcher.subscribed, what="the subscription")
        database.insert(8101, when(1))
        yield waitFor(lambda: out.getvalue(), what="the first update")
        first = json.loads(out.getvalue())
        self.assertEqual((first["bug"], first["when"]), (8101, iso(when(1))))
        yield self.server.factory.closeAll(5, reason=lambda: goingAwayReason(0.2))
        yield waitFor(
            lambda: err.getvalue().count("Watching bugs") == 2, what="the second subscription"
        )
        # The server resumes exactly: nothing was missed meanwhile.
        self.assertIn("nothing missed", err.getvalue())
        database.insert(8101, when(2))
        yield waitFor(lambda: len(out.getvalue().splitlines()) == 2, what="the second update")
        second = json.loads(out.getvalue().splitlines()[1])
        self.assertEqual(second["when"], iso(when(2)))
        self.assertGreater(second["seq"], first["seq"])
        yield watcher.stop().addTimeout(5, reactor)

    @inlineCallbacks
    def test_consoleScriptPrintsAndStopsOnSigint(self) -> None:
        """
        The installed C{bugzfeed-watch} prints an update as a readable line,
        and exits with status 0 and no traceback on SIGINT.
        """
        exchange = self.exchange("simple")
        database = self.database()
        port = yield self.startServer([("/", exchange)])
        self.startShim(database, exchange)
        script = os.path.join(os.path.dirname(sys.executable), "bugzfeed-watch")
        if not os.path.exists(script):
            self.fail(f"{script} is not installed (scripts/install)")
        process = Process()
        transport = reactor.spawnProcess(
            process, script, [script, f"ws://127.0.0.1:{port}/", "8102"], env=os.environ
        )

        def kill() -> Deferred:
            if not process.ended.called:
                transport.signalProcess(signal.SIGKILL)
            return process.ended

        self.addCleanup(kill)
        yield waitFor(lambda: b"Watching bugs 8102" in process.err, what="the subscription")
        database.insert(8102, when(3))
        yield waitFor(lambda: process.out.endswith(b"\n"), what="the update line")
        self.assertRegex(
            process.out.decode(),
            rf"^bug 8102 changed at {iso(when(3)).replace('T', ' ')} UTC \(update \d+\)\n$",
        )
        transport.signalProcess(signal.SIGINT)
        reason = yield process.ended.addTimeout(10, reactor)
        self.assertEqual(reason.exitCode, 0, process.err.decode())
        self.assertNotIn(b"Traceback", process.err)

    @inlineCallbacks
    def test_consoleScriptExitsWhenItsReaderGoes(self) -> None:
        """
        Piped into a reader that stops reading (C{| head -1}), the script
        exits with status 0 at the next update, without a traceback.
        """
        exchange = self.exchange("simple")
        database = self.database()
        port = yield self.startServer([("/", exchange)])
        self.startShim(database, exchange)
        script = os.path.join(os.path.dirname(sys.executable), "bugzfeed-watch")
        process = Process()
        transport = reactor.spawnProcess(
            process, script, [script, "--json", f"ws://127.0.0.1:{port}/", "8103"], env=os.environ
        )

        def kill() -> Deferred:
            if not process.ended.called:
                transport.signalProcess(signal.SIGKILL)
            return process.ended

        self.addCleanup(kill)
        yield waitFor(lambda: b"Watching bugs 8103" in process.err, what="the subscription")
        database.insert(8103, when(4))
        yield waitFor(lambda: process.out.endswith(b"\n"), what="the first line")
        transport.closeChildFD(1)
        database.insert(8103, when(5))
        reason = yield process.ended.addTimeout(20, reactor)
        self.assertEqual(reason.exitCode, 0, process.err.decode())
        self.assertNotIn(b"Traceback", process.err)
        self.assertNotIn(b"Exception ignored", process.err)

    @inlineCallbacks
    def test_consoleScriptExitsOnUnknownFeed(self) -> None:
        """
        A URL with no feed behind it ends the script with status 1 and a
        message, rather than retrying forever.
        """
        exchange = self.exchange("simple")
        port = yield self.startServer([("/", exchange)])
        script = os.path.join(os.path.dirname(sys.executable), "bugzfeed-watch")
        process = Process()
        reactor.spawnProcess(
            process, script, [script, f"ws://127.0.0.1:{port}/nowhere/", "1"], env=os.environ
        )
        reason = yield process.ended.addTimeout(20, reactor)
        self.assertEqual(reason.exitCode, 1, process.err.decode())
        self.assertIn(b"refused the connection", process.err)
        self.assertNotIn(b"Traceback", process.err)
