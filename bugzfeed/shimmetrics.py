"""
The shim's Prometheus metrics: counters read from the shim at scrape time,
the table's backlog read by one query per scrape, and the confirm delay
histogram fed by the shim's hook.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from typing import Any, Iterator, Optional

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

#: Confirm delay buckets, in seconds: a healthy broker confirms in
#: milliseconds; seconds mean a disk or a cluster struggling.
CONFIRM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ShimCollector(Collector):
    """
    Rows published, deleted and sent back, and the table's backlog as of
    the last L{refresh}.

    @param shim: Has C{published}, C{deleted}, C{requeued}, C{publishing}.
    @param table: Has C{backlog()}.
    """

    def __init__(self, shim: Any, table: Any, clock: IReactorTime, dbTimezone: tzinfo) -> None:
        self._shim = shim
        self._table = table
        self._clock = clock
        self._dbTimezone = dbTimezone
        self._pending: Optional[int] = None
        self._oldest: Optional[datetime] = None

    def refresh(self) -> Deferred:
        """
        Read the table's backlog; until this succeeds, the backlog metrics
        are left out rather than reported stale.
        """
        self._pending = self._oldest = None

        def read(backlog: Any) -> None:
            self._pending, self._oldest = backlog

        return self._table.backlog().addCallback(read)

    def collect(self) -> Iterator[Any]:
        yield CounterMetricFamily(
            "bugzfeed_shim_rows_published",
            "Rows published to the exchange (rate() of this is the publish rate).",
            value=self._shim.published,
        )
        yield CounterMetricFamily(
            "bugzfeed_shim_rows_deleted",
            "Rows deleted from the table after the broker confirmed them.",
            value=self._shim.deleted,
        )
        yield CounterMetricFamily(
            "bugzfeed_shim_rows_republished",
            "Rows sent back to the table to be published again: refused or returned by the"
            " broker, unconfirmed when its connection was lost, or whose delete failed.",
            value=self._shim.requeued,
        )
        yield GaugeMetricFamily(
            "bugzfeed_shim_publishing",
            "1 while a confirm-mode channel to the broker is open, else 0.",
            value=1 if self._shim.publishing else 0,
        )
        if self._pending is not None:
            yield GaugeMetricFamily(
                "bugzfeed_shim_rows_pending",
                "Rows waiting in the table, as of this scrape.",
                value=self._pending,
            )
            age = 0.0
            if self._oldest is not None:
                oldest = self._oldest.replace(tzinfo=self._dbTimezone).astimezone(timezone.utc)
                age = max(0.0, self._clock.seconds() - oldest.timestamp())
            yield GaugeMetricFamily(
                "bugzfeed_shim_oldest_pending_row_age_seconds",
                "Seconds since the change of the oldest row waiting in the table (0 when none).",
                value=age,
            )


def shimRegistry(
    shim: Any, table: Any, clock: IReactorTime, dbTimezone: tzinfo
) -> tuple[CollectorRegistry, ShimCollector]:
    """
    @return: A registry of the shim's own (never the process-global one),
        and its collector, whose C{refresh} a scrape calls first.  Hooks
        the confirm delay histogram into C{shim}.
    """
    registry = CollectorRegistry(auto_describe=False)
    collector = ShimCollector(shim, table, clock, dbTimezone)
    registry.register(collector)
    confirmDelay = Histogram(
        "bugzfeed_shim_confirm_latency_seconds",
        "Seconds from publishing a row to the broker's confirm (ack, nack or return).",
        buckets=CONFIRM_BUCKETS,
        registry=registry,
    )
    shim.observeConfirmDelay = confirmDelay.observe
    return registry, collector
