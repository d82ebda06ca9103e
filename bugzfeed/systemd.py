"""
Telling systemd how a daemon is doing, over its notification socket
(C{sd_notify}): C{READY=1} once the daemon serves, C{WATCHDOG=1} while its
event loop turns, C{STOPPING=1} when it stops, and C{STATUS=} lines that
C{systemctl status} shows.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

#: How often the status line is refreshed when no watchdog asks for more.
STATUS_INTERVAL = 10.0


class INotifier(Interface):
    """
    Something that passes notifications to the service manager.
    """

    def notify(state: str) -> None:
        """
        Send one notification: C{NAME=value} assignments, one a line.
        """


def watchdogInterval(environ: Mapping[str, str], pid: int) -> Optional[float]:
    """
    @return: How often to send C{WATCHDOG=1}: half the C{WATCHDOG_USEC}
        systemd sets, as C{sd_watchdog_enabled(3)} advises; L{None} when the
        watchdog is off, or meant for another process (C{WATCHDOG_PID}).
    """
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None
    try:
        microseconds = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if microseconds <= 0:
        return None
    return microseconds / 2e6


def _statusLine(text: str) -> str:
    # One notification line each, and sdnotify sends Latin-1.
    return "STATUS=" + " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")


class SystemdNotifyService(Service):
    """
    Reports a daemon's life cycle to systemd. Add it to the daemon's
    L{MultiService} last: it then starts once the rest has started, and
    stops (saying C{STOPPING=1}) before the rest.

    @ivar ready: Whether C{READY=1} has been sent.
    """

    _log = Logger()

    def __init__(
        self,
        notifier: INotifier,
        clock: IReactorTime,
        whenReady: Callable[[], Deferred],
        describe: Callable[[], str],
        watchdogInterval: Optional[float] = None,
        healthy: Callable[[], bool] = lambda: True,
        statusInterval: float = STATUS_INTERVAL,
    ) -> None:
        """
        @param notifier: Where notifications go.
        @param clock: Schedules the watchdog and status updates.
        @param whenReady: Returns a L{Deferred} that fires once the daemon
            serves.
        @param describe: Returns the current status line.
        @param watchdogInterval: Seconds between C{WATCHDOG=1}, or L{None}
            for no watchdog.
        @param healthy: Whether to keep the watchdog fed; while it says
            no, systemd restarts the daemon once C{WatchdogSec} passes.
        @param statusInterval: Seconds between status refreshes when there
            is no watchdog.
        """
        self._notifier = notifier
        self._clock = clock
        self._whenReady = whenReady
        self._describe = describe
        self._watchdogInterval = watchdogInterval
        self._healthy = healthy
        self._statusInterval = statusInterval
        self._tick = LoopingCall(self._beat)
        self._tick.clock = clock
        self._waiting: Optional[Deferred] = None
        self._lastStatus: Optional[str] = None
        self.ready = False

    def startService(self) -> None:
        super().startService()
        self._send(self._statusUpdate() or _statusLine("Starting"))
        self._waiting = self._whenReady()
        self._waiting.addCallbacks(self._becameReady, self._notReady)
        self._tick.start(self._watchdogInterval or self._statusInterval, now=False)

    def _becameReady(self, _: Any) -> None:
        self._waiting = None
        self.ready = True
        self._lastStatus = None
        self._send("READY=1\n" + (self._statusUpdate() or ""))
        self._log.info("Told systemd the service is ready")

    def _notReady(self, failure: Failure) -> None:
        self._waiting = None
        if not failure.check(CancelledError):
            self._log.failure("Never became ready", failure)

    def _beat(self) -> None:
        lines = []
        if self._watchdogInterval is not None:
            if self._healthy():
                lines.append("WATCHDOG=1")
            else:
                self._log.warn("Unhealthy: not feeding the systemd watchdog")
        status = self._statusUpdate()
        if status:
            lines.append(status)
        if lines:
            self._send("\n".join(lines))

    def _statusUpdate(self) -> Optional[str]:
        """
        @return: A C{STATUS=} line when the status changed since last sent.
        """
        try:
            status = _statusLine(self._describe())
        except Exception:
            self._log.failure("Describing the status failed")
            return None
        if status == self._lastStatus:
            return None
        self._lastStatus = status
        return status

    def stopService(self) -> Any:
        super().stopService()
        if self._tick.running:
            self._tick.stop()
        if self._waiting is not None:
            self._waiting.cancel()
        self._send("STOPPING=1\n" + _statusLine("Stopping"))
        return None

    def _send(self, state: str) -> None:
        try:
            self._notifier.notify(state.rstrip("\n"))
        except Exception:
            self._log.failure("Notifying systemd failed")


@implementer(INotifier)
class SocketNotifier:
    """
    Notifies over the socket in C{NOTIFY_SOCKET}, with C{sdnotify} (which
    drops what it cannot send: systemd's absence is no error).
    """

    def __init__(self) -> None:
        from sdnotify import SystemdNotifier

        self._notifier = SystemdNotifier()

    def notify(self, state: str) -> None:
        self._notifier.notify(state)


def whenListening(listener: Any) -> Deferred:
    """
    @param listener: A started service from L{strports.service}.
    @return: A L{Deferred} that fires once it listens, or fails if it
        cannot.
    """
    # StreamServerEndpointService keeps the port's Deferred only here; its
    # own stopService chains on it, so pass its result on untouched.
    waitingForPort = getattr(listener, "_waitingForPort", None)
    if waitingForPort is None:
        return fail(RuntimeError("the listener has not started"))
    listening: Deferred = Deferred()

    def passOn(result: Any) -> Any:
        if isinstance(result, Failure):
            listening.errback(result)
        else:
            listening.callback(None)
        return result

    waitingForPort.addBoth(passOn)
    return listening


def systemdService(
    environ: Mapping[str, str],
    pid: int,
    clock: IReactorTime,
    whenReady: Callable[[], Deferred],
    describe: Callable[[], str],
    healthy: Callable[[], bool] = lambda: True,
) -> Optional[SystemdNotifyService]:
    """
    @return: A L{SystemdNotifyService} talking to the socket in
        C{NOTIFY_SOCKET}, or L{None} when not run by systemd with
        C{Type=notify}.
    """
    if not environ.get("NOTIFY_SOCKET"):
        return None
    return SystemdNotifyService(
        SocketNotifier(),
        clock,
        whenReady,
        describe,
        watchdogInterval=watchdogInterval(environ, pid),
        healthy=healthy,
    )
