"""
C{bugzfeed-watch}: a command-line client that prints the updates of some
bugs as they come, reconnecting and resuming where it left off.

The logic lives in plain objects driven by an injected clock:
L{ResumePoint} (what to ask for after a reconnect, and which updates are
repeats), L{ReconnectDelays} (how long to wait) and L{Watcher} (the
connection's life cycle). L{WatchProtocol} only decodes and delegates.
"""

from __future__ import annotations

import json
import os
import random
import sys
from typing import IO, Any, Callable, Dict, List, Optional, Protocol, Sequence

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.util import parse_url
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python import usage
from twisted.python.failure import Failure

from bugzfeed import __version__
from bugzfeed.model import MAX_BUG_ID
from bugzfeed.reconnect import adviceIn

#: Close codes (RFC 6455 and Bugzfeed's own).
GOING_AWAY = 1001
TOO_SLOW = 4001
#: Codes that say this client did something wrong: back off as after a
#: failure rather than come straight back.
OFFENDED = frozenset({1002, 1003, 1007, 1008, 1009})

#: Spread of the wait after a 1001 that carries no advice, and after 4001.
GOING_AWAY_SPREAD = 5.0
TOO_SLOW_SPREAD = 1.0

#: Seconds the client waits for its close to be answered when stopping.
STOP_TIMEOUT = 2.0


class WatchError(Exception):
    """
    Watching cannot go on (the server refuses the URL or the bugs); the
    text says why.
    """


class ResumePoint:
    """
    Where the client is in the feed: the seq of the last update seen and
    the feed's epoch, to subscribe with after a reconnect; and which
    updates are repeats of ones already seen.

    @ivar lastSeq: The highest update seq seen, or L{None}.
    @ivar epoch: The feed's epoch from the last reply that had one.
    """

    def __init__(self, bugs: Sequence[int]) -> None:
        self.bugs = list(bugs)
        self.lastSeq: Optional[int] = None
        self.epoch: Optional[str] = None
        self._askedAfter: Optional[int] = None

    def subscribeRequest(self, resume: bool = True) -> Dict[str, Any]:
        """
        @param resume: Whether to ask for what was missed (C{after}).
        @return: The C{subscribe} command to send on a new connection.
        """
        request: Dict[str, Any] = {"command": "subscribe", "bugs": self.bugs}
        self._askedAfter = self.lastSeq if resume else None
        if self._askedAfter is not None:
            request["after"] = self._askedAfter
            if self.epoch is not None:
                request["epoch"] = self.epoch
        return request

    @property
    def askedToResume(self) -> bool:
        """Whether the last C{subscribe} carried C{after}."""
        return self._askedAfter is not None

    def subscribed(self, reply: Dict[str, Any]) -> List[str]:
        """
        Take the reply to our C{subscribe}.

        @return: Notices for the user, if any.
        """
        notices: List[str] = []
        epoch = reply.get("epoch")
        if isinstance(epoch, str):
            if self.epoch is not None and epoch != self.epoch:
                # A new stream: its seqs start afresh.
                self.lastSeq = None
            self.epoch = epoch
        if self._askedAfter is None:
            return notices
        recovered = reply.get("recovered")
        if recovered is True:
            notices.append(f"Resumed after update {self._askedAfter}: nothing missed")
        elif recovered is False:
            reason = reply.get("reason") or "no reason given"
            notices.append(
                f"warning: could not resume after update {self._askedAfter} ({reason});"
                " changes made while disconnected may be missing: re-read bugs"
                f" {_listed(self.bugs)} through the tracker"
            )
        else:
            notices.append(
                "warning: the server does not resume (its reply has no 'recovered');"
                " changes made while disconnected may be missing"
            )
        return notices

    def isNew(self, update: Dict[str, Any]) -> bool:
        """
        Note C{update} as seen.

        @return: Whether it is new, rather than a repeat of one seen
            (delivery is at least once).
        """
        seq = update.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return True
        if self.lastSeq is not None and seq <= self.lastSeq:
            return False
        self.lastSeq = seq
        return True


def _listed(bugs: Sequence[int]) -> str:
    return ", ".join(str(bug) for bug in bugs)


class ReconnectDelays:
    """
    How long to wait before the next connection attempt: exponential
    backoff with jitter after failures, the server's advice after it said
    it was going, and a short random wait after being closed as too slow.
    """

    def __init__(
        self, rng: random.Random, initialDelay: float = 1.0, maxDelay: float = 60.0
    ) -> None:
        self._random = rng
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.failures = 0

    def succeeded(self) -> None:
        """A connection got as far as a subscription."""
        self.failures = 0

    def afterFailure(self) -> float:
        """
        @return: The wait after a failed attempt; each failure in a row
            doubles it, up to C{maxDelay}, and the wait is drawn from its
            upper half so that many clients spread out.
        """
        ceiling = min(self.maxDelay, self.initialDelay * 2**self.failures)
        self.failures += 1
        return self._random.uniform(ceiling / 2, ceiling)

    def afterClose(self, code: Optional[int], reason: Optional[str], subscribed: bool) -> float:
        """
        @return: The wait after the server closed a connection with C{code}.
        """
        if code == GOING_AWAY:
            advised = adviceIn(reason)
            if advised is not None:
                return min(advised, self.maxDelay)
            return self._random.uniform(0, GOING_AWAY_SPREAD)
        if code == TOO_SLOW:
            return self._random.uniform(0, TOO_SLOW_SPREAD)
        if not subscribed or code in OFFENDED:
            return self.afterFailure()
        return self._random.uniform(0, self.initialDelay)


class IConnection(Protocol):
    """
    What the L{Watcher} needs of an open connection (L{WatchProtocol}, or
    a fake in tests).
    """

    def sendCommand(self, command: Dict[str, Any]) -> None:
        """Send C{command} as JSON."""

    def closeNormally(self) -> None:
        """Close with code 1000."""


class Watcher:
    """
    Keeps one subscription alive: connects, subscribes (resuming after a
    reconnect), hands new updates to C{output}, and reconnects when the
    connection goes.

    @ivar finished: Fires once stopped, or fails with L{WatchError} when
        watching cannot go on.
    """

    def __init__(
        self,
        bugs: Sequence[int],
        connect: Callable[["Watcher"], Deferred],
        clock: IReactorTime,
        output: Callable[[Dict[str, Any]], None],
        notice: Callable[[str], None],
        delays: ReconnectDelays,
    ) -> None:
        """
        @param connect: Starts a connection attempt; returns a L{Deferred}
            that fails if no connection is made. A connection made calls
            L{connected} once it is open, and L{disconnected} once it is
            gone (with or without opening).
        @param output: Called with each new update.
        @param notice: Called with each text for the user.
        """
        self.resume = ResumePoint(bugs)
        self._connect = connect
        self._clock = clock
        self._output = output
        self._notice = notice
        self.delays = delays
        self.finished: Deferred = Deferred()
        self.connection: Optional[IConnection] = None
        self.subscribed = False
        self._attempting = False
        self._retry: Optional[IDelayedCall] = None
        self._stopping = False
        self._resumeRefused = False
        self.outputClosed = False

    def start(self) -> None:
        """
        Make the first connection attempt.
        """
        self._attempt()

    def _attempt(self) -> None:
        self._retry = None
        self._attempting = True
        self._connect(self).addErrback(self._connectFailed)

    def _connectFailed(self, failure: Failure) -> None:
        self._attempting = False
        if self._stopping:
            self._finish()
            return
        delay = self.delays.afterFailure()
        self._notice(f"Cannot connect: {failure.getErrorMessage()}; retrying in {delay:.1f}s")
        self._retryIn(delay)

    def connected(self, connection: IConnection) -> None:
        """
        A connection is open: subscribe on it.
        """
        self.connection = connection
        if self._stopping:
            connection.closeNormally()
            return
        connection.sendCommand(self.resume.subscribeRequest(resume=not self._resumeRefused))

    def received(self, message: Any) -> None:
        """
        Take one message from the server.
        """
        if not isinstance(message, dict):
            return
        command, result = message.get("command"), message.get("result")
        if command == "update":
            if self.resume.isNew(message):
                try:
                    self._output(message)
                except BrokenPipeError:
                    # Whoever read the output is gone (| head -1): done.
                    self.outputClosed = True
                    self.stop()
        elif command == "subscribe" and result == "ok":
            self.subscribed = True
            self.delays.succeeded()
            self._notice(f"Watching bugs {_listed(self.resume.bugs)}")
            for text in self.resume.subscribed(message):
                self._notice(text)
        elif command == "subscribe" and result == "error":
            error = message.get("error", "no reason given")
            if self.resume.askedToResume and not self._resumeRefused and self.connection:
                # A server that refuses what it does not know: subscribe
                # without resuming.
                self._resumeRefused = True
                self._notice(f"warning: the server refused to resume ({error})")
                self.connection.sendCommand(self.resume.subscribeRequest(resume=False))
            else:
                self._fail(WatchError(f"the server refused the subscription: {error}"))

    def disconnected(self, code: Optional[int], reason: Optional[str]) -> None:
        """
        The connection is gone (or never opened); reconnect unless stopping.
        """
        subscribed, self.subscribed = self.subscribed, False
        opened = self.connection is not None
        self.connection = None
        self._attempting = False
        if self._stopping:
            self._finish()
            return
        status = _httpStatus(reason)
        if not opened and status is not None and 400 <= status < 500 and status != 429:
            self._fail(WatchError(f"the server refused the connection: {reason}"))
            return
        delay = self.delays.afterClose(code, reason, subscribed)
        self._notice(f"Disconnected ({code} {reason or 'no reason'}); reconnecting in {delay:.1f}s")
        self._retryIn(delay)

    def _retryIn(self, delay: float) -> None:
        self._retry = self._clock.callLater(delay, self._attempt)

    def stop(self) -> Deferred:
        """
        Close the connection (code 1000) and stop reconnecting.

        @return: L{finished}, which fires once the connection is gone.
        """
        if self.finished.called:
            return succeed(None)
        self._stopping = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
            self._retry = None
        if self.connection is not None:
            self.connection.closeNormally()
        elif not self._attempting:
            self._finish()
        return self.finished

    def _finish(self) -> None:
        if not self.finished.called:
            self.finished.callback(None)

    def _fail(self, error: WatchError) -> None:
        self._stopping = True
        if self.connection is not None:
            self.connection.closeNormally()
        if not self.finished.called:
            self.finished.errback(error)


def _httpStatus(reason: Optional[str]) -> Optional[int]:
    # Autobahn's reason when the server answers the upgrade with an error.
    marker = "upgrade failed ["
    if reason and marker in reason:
        digits = reason.split(marker, 1)[1][:3]
        if digits.isdigit():
            return int(digits)
    return None


class WatchProtocol(WebSocketClientProtocol):
    """
    The connection: decode and hand to the factory's L{Watcher}.
    """

    def onOpen(self) -> None:
        self.factory.watcher.connected(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        self.factory.watcher.received(message)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.factory.watcher.disconnected(code, reason)

    def sendCommand(self, command: Dict[str, Any]) -> None:
        self.sendMessage(json.dumps(command).encode("utf-8"))

    def closeNormally(self) -> None:
        if self.state == WebSocketClientProtocol.STATE_OPEN:
            self.sendClose(1000)
        else:
            self.dropConnection(abort=True)


class WatchFactory(WebSocketClientFactory):
    """
    One connection attempt's factory, for C{watcher}.
    """

    protocol = WatchProtocol

    def __init__(self, url: str, reactor: Any, watcher: Watcher) -> None:
        super().__init__(url, reactor=reactor, useragent=f"bugzfeed-watch/{__version__}")
        self.watcher = watcher


def connector(
    reactor: Any, url: str, timeout: float = 10.0, trustRoot: Optional[Any] = None
) -> Callable[[Watcher], Deferred]:
    """
    @param trustRoot: For C{wss://}, a L{twisted.internet.ssl.Certificate}
        to trust instead of the system's authorities.
    @return: A C{connect} for L{Watcher}: one WebSocket connection to
        C{url} (C{ws://} or C{wss://}) per call.
    """
    isSecure, host, port, _, _, _ = parse_url(url)
    tlsOptions = None
    if isSecure:
        from twisted.internet.ssl import optionsForClientTLS

        tlsOptions = optionsForClientTLS(host, trustRoot=trustRoot)

    def connect(watcher: Watcher) -> Deferred:
        factory = WatchFactory(url, reactor, watcher)
        factory.setProtocolOptions(
            openHandshakeTimeout=timeout, autoPingInterval=30, autoPingTimeout=30
        )
        endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)
        if tlsOptions is not None:
            endpoint = wrapClientTLS(tlsOptions, endpoint)
        return endpoint.connect(factory)

    return connect


class HumanPrinter:
    """
    One line per update for a person: C{bug 1234 changed at
    2026-12-03 17:53:02 UTC (update 7)}.
    """

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, update: Dict[str, Any]) -> None:
        when = str(update.get("when", "?")).replace("T", " ")
        seq = update.get("seq")
        suffix = f" (update {seq})" if seq is not None else ""
        self._out.write(f"bug {update.get('bug')} changed at {when} UTC{suffix}\n")
        self._out.flush()


class JSONPrinter:
    """
    Each update as the server sent it, one JSON object a line.
    """

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, update: Dict[str, Any]) -> None:
        self._out.write(json.dumps(update, separators=(",", ":")) + "\n")
        self._out.flush()


class WatchOptions(usage.Options):
    synopsis = "Usage: bugzfeed-watch [options] URL BUG [BUG ...]"
    longdesc = (
        "Print a line for each change of the given bugs, as a Bugzfeed server pushes them."
        " URL is the feed's WebSocket URL, such as ws://host:8844/ (or wss:// for TLS);"
        " each BUG is a bug id.\n\n"
        "Output: one line per update on standard output, such as 'bug 1234 changed at"
        " 2026-12-03 17:53:02 UTC (update 7)', or with --json the server's own message,"
        ' such as {"command":"update","bug":1234,"when":"2026-12-03T17:53:02","seq":7}.'
        " An update may come more than once; fetch the change itself from the tracker."
        " Connection notices and warnings go to standard error.\n\n"
        "Reconnecting: when the connection drops, bugzfeed-watch reconnects with"
        " exponential backoff and jitter (from --initial-delay up to --max-delay), or"
        " when a stopping server advises, and subscribes again with 'after' set to the"
        " last update seen, so the server can replay what was missed. When the server"
        " cannot (or does not support it), a warning says so: re-read the bugs through"
        " the tracker then. To pick up where an earlier run stopped, give --after the"
        " last update number it printed.\n\n"
        "Exit status: 0 when stopped with Ctrl-C (SIGINT) or SIGTERM, 1 when the server"
        " refuses the URL or the subscription, 2 for bad arguments."
    )
    optFlags = [
        ["json", "j", "Print each update as the server's JSON message, one a line."],
        ["quiet", "q", "Print warnings only, not connection notices, to standard error."],
    ]
    optParameters = [
        ["initial-delay", None, "1", "Seconds to wait before the first reconnect attempt."],
        ["max-delay", None, "60", "Seconds to wait between reconnect attempts, at most."],
        ["timeout", None, "10", "Seconds a connection attempt (and its handshake) may take."],
        [
            "after",
            None,
            None,
            "Start by resuming after this update (its seq: the number an earlier run printed"
            " as 'update N'), so that the server replays what came since.",
        ],
        [
            "cafile",
            None,
            None,
            "For wss:// URLs: trust the CA (or self-signed) certificate in this PEM file"
            " instead of the system's authorities.",
        ],
    ]

    def opt_version(self) -> None:
        """
        Print the version and exit.
        """
        print(f"bugzfeed-watch {__version__}")
        sys.exit(0)

    def parseArgs(self, *args: str) -> None:
        if not args:
            raise usage.UsageError("name the feed's URL and at least one bug id")
        url, *bugs = args
        try:
            parse_url(url)
        except Exception as e:
            raise usage.UsageError(f"not a WebSocket URL (ws:// or wss://): {url!r} ({e})")
        if not bugs:
            raise usage.UsageError("name at least one bug id")
        self["url"] = url
        self["bugs"] = [_bugId(bug) for bug in bugs]

    def postOptions(self) -> None:
        for name in ["initial-delay", "max-delay", "timeout"]:
            try:
                self[name] = float(self[name])
            except ValueError:
                raise usage.UsageError(f"--{name} takes seconds, not {self[name]!r}")
            if not self[name] > 0:
                raise usage.UsageError(f"--{name} must be more than 0")
        if self["max-delay"] < self["initial-delay"]:
            raise usage.UsageError("--max-delay must be at least --initial-delay")
        if self["after"] is not None:
            if not self["after"].isdigit():
                raise usage.UsageError(f"--after takes an update's seq, not {self['after']!r}")
            self["after"] = int(self["after"])
        self["trust-root"] = None
        if self["cafile"] is not None:
            from OpenSSL.crypto import Error as OpenSSLError
            from twisted.internet.ssl import Certificate

            try:
                with open(self["cafile"], "rb") as f:
                    self["trust-root"] = Certificate.loadPEM(f.read())
            except OSError as e:
                raise usage.UsageError(f"--cafile: {e.strerror}: {self['cafile']}")
            except OpenSSLError:
                raise usage.UsageError(
                    f"--cafile: not a PEM certificate: {self['cafile']}"
                ) from None


def _bugId(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= MAX_BUG_ID:
        raise usage.UsageError(f"a bug id is a number from 1 to {MAX_BUG_ID}, not {text!r}")
    return int(text)


def makeWatcher(
    reactor: Any,
    options: WatchOptions,
    out: IO[str],
    err: IO[str],
    rng: Optional[random.Random] = None,
) -> Watcher:
    """
    @return: A L{Watcher} for C{options}, printing to C{out} and C{err}.
    """

    def notice(text: str) -> None:
        if options["quiet"] and not text.startswith("warning:"):
            return
        err.write(f"bugzfeed-watch: {text}\n")
        err.flush()

    watcher = Watcher(
        options["bugs"],
        connector(reactor, options["url"], options["timeout"], options["trust-root"]),
        reactor,
        JSONPrinter(out) if options["json"] else HumanPrinter(out),
        notice,
        ReconnectDelays(rng or random.Random(), options["initial-delay"], options["max-delay"]),
    )
    watcher.resume.lastSeq = options["after"]
    return watcher


def main(reactor: Any, options: WatchOptions) -> Deferred:
    """
    Watch until stopped: Ctrl-C or SIGTERM stops the reactor, and the
    connection is closed properly on the way out.
    """
    watcher = makeWatcher(reactor, options, sys.stdout, sys.stderr)

    def stopping() -> Deferred:
        return watcher.stop().addTimeout(STOP_TIMEOUT, reactor).addErrback(lambda _: None)

    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    watcher.start()

    def failed(failure: Failure) -> None:
        failure.trap(WatchError)
        sys.stderr.write(f"bugzfeed-watch: {failure.getErrorMessage()}\n")
        raise SystemExit(1)

    def done(result: Any) -> Any:
        if watcher.outputClosed:
            # Python flushes stdout again at exit, and would complain.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return result

    return watcher.finished.addErrback(failed).addBoth(done)


def run(argv: Optional[Sequence[str]] = None) -> None:
    """
    The C{bugzfeed-watch} console script.
    """
    from twisted.internet.task import react

    options = WatchOptions()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        sys.stderr.write(f"bugzfeed-watch: {e}\nTry bugzfeed-watch --help.\n")
        sys.exit(2)
    try:
        react(main, [options])
    except KeyboardInterrupt:
        # Ctrl-C before the reactor took over SIGINT.
        sys.exit(0)
