"""
The server's Prometheus metrics, read from the live objects at scrape time
rather than counted on the hot path.

Some values belong to work not every version has (resumable replays,
closing slow clients): they are read with a default of 0, so the metric
exists, at zero, until the attribute does.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


def _count(thing: Any, attribute: str) -> float:
    value = getattr(thing, attribute, 0)
    return float(value) if isinstance(value, (int, float)) else 0.0


class ServerCollector(Collector):
    """
    Connections, subscriptions, updates and the streams' positions of one
    server.

    @param factory: The WebSocket factory (C{connectionCount}, and
        C{slowClientCloses} when it exists).
    @param feeds: The feeds served (C{path}, C{registry}, C{history},
        C{received}, and C{replaysRecovered}, C{replaysNotRecovered},
        C{replayedUpdates} when they exist).
    @param cursors: The stream cursors (C{feed}, C{nextOffset},
        C{replaying}).
    @param consumer: Has C{consuming}.
    """

    def __init__(self, factory: Any, feeds: Sequence[Any], cursors: Sequence[Any], consumer: Any):
        self._factory = factory
        self._feeds = feeds
        self._cursors = cursors
        self._consumer = consumer

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "bugzfeed_connections",
            "Open WebSocket client connections.",
            value=self._factory.connectionCount,
        )
        yield CounterMetricFamily(
            "bugzfeed_slow_client_closes",
            "Clients closed (code 4001) for reading updates too slowly.",
            value=_count(self._factory, "slowClientCloses"),
        )
        yield GaugeMetricFamily(
            "bugzfeed_consuming",
            "1 while every feed's stream is being consumed, else 0.",
            value=1 if self._consumer.consuming else 0,
        )
        yield from self._perFeed()
        yield from self._perStream()

    def _perFeed(self) -> Iterable[Any]:
        subscribers = GaugeMetricFamily(
            "bugzfeed_subscribers",
            "Connections holding at least one bug.",
            labels=["feed"],
        )
        bugs = GaugeMetricFamily(
            "bugzfeed_subscribed_bugs", "Bugs held by at least one connection.", labels=["feed"]
        )
        history = GaugeMetricFamily(
            "bugzfeed_history_updates",
            "Updates remembered for catch-up and resuming.",
            labels=["feed"],
        )
        received = CounterMetricFamily(
            "bugzfeed_updates_received",
            "Updates read from the stream and pushed as news (not history rebuilt at start).",
            labels=["feed"],
        )
        deliveries = CounterMetricFamily(
            "bugzfeed_deliveries",
            "Live updates pushed to a subscribed connection, one per connection.",
            labels=["feed"],
        )
        replays = CounterMetricFamily(
            "bugzfeed_replays",
            "Subscriptions resumed with 'after', by outcome.",
            labels=["feed", "outcome"],
        )
        replayed = CounterMetricFamily(
            "bugzfeed_replayed_updates",
            "Updates sent again to resuming clients.",
            labels=["feed"],
        )
        for feed in self._feeds:
            path = feed.path
            subscribers.add_metric([path], feed.registry.subscriberCount)
            bugs.add_metric([path], feed.registry.bugCount)
            history.add_metric([path], len(feed.history))
            received.add_metric([path], _count(feed, "received"))
            deliveries.add_metric([path], _count(feed.registry, "deliveries"))
            replays.add_metric([path, "recovered"], _count(feed, "replaysRecovered"))
            replays.add_metric([path, "not_recovered"], _count(feed, "replaysNotRecovered"))
            replayed.add_metric([path], _count(feed, "replayedUpdates"))
        return [subscribers, bugs, history, received, deliveries, replays, replayed]

    def _perStream(self) -> Iterable[Any]:
        offset = GaugeMetricFamily(
            "bugzfeed_stream_offset",
            "Offset of the last stream message this node handled; a node's lag is the"
            " largest value across nodes minus its own.",
            labels=["feed", "stream"],
        )
        replaying = GaugeMetricFamily(
            "bugzfeed_stream_replaying",
            "1 while the node is still reading what was sent before it started.",
            labels=["feed", "stream"],
        )
        for cursor in self._cursors:
            labels = [cursor.feed.path, cursor.feed.stream]
            if cursor.nextOffset is not None:
                offset.add_metric(labels, cursor.nextOffset - 1)
            replaying.add_metric(labels, 1 if cursor.replaying else 0)
        return [offset, replaying]


def serverRegistry(factory: Any, feeds: Sequence[Any], consumer: Any) -> CollectorRegistry:
    """
    @return: A registry of the server's own (never the process-global one:
        tests build many servers in one process).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(factory, feeds, consumer.cursors, consumer))
    return registry
