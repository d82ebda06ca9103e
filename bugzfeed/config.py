"""
Option helpers shared by both daemons: settings from the environment,
durations, and redaction of secrets for logs.
"""

from __future__ import annotations

import os
import re
from typing import Any, List, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from bugzfeed.model import MAX_EXCHANGE_BYTES

ENVIRONMENT_PREFIX = "BUGZFEED_"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdD]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "D": 86400}


def parseDuration(text: str) -> float:
    """
    Read a duration such as C{30}, C{90s}, C{15m}, C{24h} or C{7d}.

    @return: Seconds.
    @raise ValueError: If C{text} is not such a duration.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 24h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def environmentName(option: str) -> str:
    """
    @return: The environment variable that sets C{option}: C{--poll-interval}
        is C{BUGZFEED_POLL_INTERVAL}.
    """
    return ENVIRONMENT_PREFIX + option.upper().replace("-", "_")


class EnvironmentOptions(usage.Options):
    """
    Options whose parameters default to C{BUGZFEED_*} environment variables
    when set; the command line still wins.
    """

    optParameters: List[List[Any]] = []

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        super().__init__()
        environ = os.environ if environ is None else environ
        for name, *_ in self.optParameters:
            value = environ.get(environmentName(name))
            if value is not None:
                self[name] = value

    def opt_version(self) -> None:
        """
        Print Bugzfeed's version and exit.
        """
        from bugzfeed import __version__

        print(f"bugzfeed {__version__}")
        raise SystemExit(0)

    def integer(self, name: str, minimum: int = 0, maximum: Optional[int] = None) -> int:
        """
        @return: Option C{name} as an integer from C{minimum} to C{maximum}.
        @raise usage.UsageError: If it is not.
        """
        try:
            value = int(self[name])
        except (TypeError, ValueError):
            raise usage.UsageError(f"--{name} must be an integer, not {self[name]!r}")
        if value < minimum:
            raise usage.UsageError(f"--{name} must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise usage.UsageError(f"--{name} must be at most {maximum}, not {value}")
        return value

    def duration(self, name: str, minimum: float = 0.0, maximum: Optional[float] = None) -> float:
        """
        @return: Option C{name} as seconds, from C{minimum} to C{maximum}.
        @raise usage.UsageError: If it is not a duration.
        """
        try:
            value = parseDuration(str(self[name]))
        except ValueError as e:
            raise usage.UsageError(f"--{name}: {e}")
        if value < minimum:
            raise usage.UsageError(f"--{name} must be at least {minimum:g}s, not {self[name]}")
        if maximum is not None and value > maximum:
            raise usage.UsageError(f"--{name} must be at most {maximum:g}s, not {self[name]}")
        return value

    def wholeSeconds(self, name: str, maximum: int) -> int:
        """
        @return: Option C{name}, a duration, as whole seconds from 0 to
            C{maximum}: for settings such as AMQP's heartbeat that count in
            seconds.
        @raise usage.UsageError: If it is not one.
        """
        value = self.duration(name, maximum=maximum)
        if not value.is_integer():
            raise usage.UsageError(f"--{name} must be whole seconds, not {self[name]}")
        return int(value)

    def amqpURL(self, name: str = "amqp") -> str:
        """
        @return: Option C{name}, checked to be an C{amqp://} URL.
        @raise usage.UsageError: If it is not one.
        """
        from bugzfeed.amqp import BrokerAddress

        try:
            BrokerAddress.fromURL(self[name])
        except ValueError as e:
            raise usage.UsageError(f"--{name}: {e}")
        return str(self[name])


#: AMQP's limit on a heartbeat interval (an unsigned short).
MAX_HEARTBEAT = 65535


def checkExchange(option: str, exchange: str, maxBytes: int = MAX_EXCHANGE_BYTES) -> str:
    """
    @return: C{exchange}, checked to be a name the broker accepts, and short
        enough that the server's stream for it has a valid name too.
    @raise usage.UsageError: If it is not.
    """
    if not exchange.strip():
        raise usage.UsageError(f"--{option}: the exchange name must not be empty")
    if exchange.startswith("amq."):
        raise usage.UsageError(
            f"--{option}: exchange names starting with amq. belong to the broker"
        )
    if len(exchange.encode("utf-8")) > maxBytes:
        raise usage.UsageError(f"--{option}: the exchange name must be at most {maxBytes} bytes")
    return exchange


def redactURL(url: str) -> str:
    """
    @return: C{url} with any password replaced by C{***}, fit for logs.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redactDSN(dsn: str) -> str:
    """
    @return: A libpq DSN or URL with its password replaced by C{***}.
    """
    if "://" in dsn:
        return redactURL(dsn)
    return _DSN_PASSWORD.sub(r"\1***", dsn)


def checkServerEndpoint(option: str, description: str) -> str:
    """
    @return: C{description}, checked to be a server endpoint description
        (strports), such as C{tcp:8844} or C{tcp:9100:interface=127.0.0.1}.
    @raise usage.UsageError: If it is not.
    """
    try:
        # Building an endpoint does no I/O: no reactor needed.
        endpoint = serverFromString(None, description)
    except Exception as e:
        raise usage.UsageError(f"--{option}: not an endpoint description: {description!r} ({e})")
    port = getattr(endpoint, "_port", 0)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise usage.UsageError(f"--{option}: no such port: {port}")
    return description
