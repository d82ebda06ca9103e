"""
The server's AMQP side: each feed's stream, read into the feed.

Every node declares each feed's exchange and stream (idempotently), binds
the stream to the exchange with C{#}, and consumes it from an offset: at
start from the history window, to rebuild what the node remembers; after a
reconnect from just past the last message it handled.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from txamqp.message import Message
from txamqp.protocol import AMQChannel

from bugzfeed.amqp import BugzfeedAMQClient, brokerService, declareExchange
from bugzfeed.feed import Feed
from bugzfeed.model import MalformedEnvelope, decodePulseEnvelope
from bugzfeed.waiting import Waiters

#: Seconds a stream keeps messages: RabbitMQ drops whole segments older
#: than this, or past the size below.
STREAM_RETENTION = 7 * 86400

STREAM_ARGUMENTS: Dict[str, Any] = {
    "x-queue-type": "stream",
    "x-max-age": f"{STREAM_RETENTION // 86400}D",
    "x-max-length-bytes": 2_000_000_000,
    "x-stream-max-segment-size-bytes": 100_000_000,
}

#: Unacknowledged deliveries the broker may have in flight per stream;
#: RabbitMQ requires a prefetch to consume a stream.
PREFETCH = 1000


#: Seconds the shim's clock may be ahead of a node's without a message
#: sent just after the node started being taken for history.
CLOCK_SKEW = 5.0

#: Deliveries acknowledged at once, at most; fewer at the end of each
#: reactor turn.
ACK_BATCH = PREFETCH // 4


#: Seconds without a delivery after which a probe of the stream's edge
#: has everything it will get.
PROBE_QUIET = 0.3

#: Seconds without a delivery after which a node reading its stream takes
#: itself to have caught up, when it could not learn the stream's end.
CATCH_UP_QUIET = 1.0


def epochOf(body: bytes) -> str:
    """
    @return: The epoch a stream has whose first message is C{body}: a
        recreated stream starts with another message, so another epoch.
    """
    return hashlib.sha256(body).hexdigest()[:16]


class StreamCursor:
    """
    Reads one feed's stream deliveries into the feed, and knows where to
    resume.

    A node starting up reads its history window from the stream: what was
    sent before it started is remembered for catch-up but not pushed to
    clients as news.  From the first message sent since, everything is
    pushed, reconnects included.  Once it has read up to the stream's end
    as it was when the node (re)connected, the feed is caught up: its
    history then ends where the stream does, and exact resumes can go ahead.

    @ivar nextOffset: The offset after the last message handled, or L{None}
        before any.
    @ivar replaying: Whether the cursor is still reading messages sent
        before the node started.
    @ivar streamStart: The first offset the stream still holds, when known.
    @ivar tail: The last offset the stream held when last probed.
    """

    _log = Logger()

    def __init__(
        self, feed: Feed, historyWindow: float, startedAt: float, clock: IReactorTime
    ) -> None:
        self.feed = feed
        self._historyWindow = historyWindow
        self._startedAt = startedAt
        self._clock = clock
        self.nextOffset: Optional[int] = None
        self.replaying = True
        self.streamStart: Optional[int] = None
        self.tail: Optional[int] = None
        self._resumedAt: Optional[int] = None
        self._lastDeliveryAt = 0.0
        self._quietCheck: Optional[IDelayedCall] = None

    def startOffset(self) -> Union[int, str]:
        """
        @return: The C{x-stream-offset} to consume from: where the last
            connection stopped, or else the start of the history window.
        """
        if self.nextOffset is not None:
            return self.nextOffset
        return f"{max(1, int(self._historyWindow))}s"

    def foundEdges(self, first: Optional[Tuple[int, bytes]], last: Optional[int]) -> None:
        """
        Learn the stream's first message and last offset, as probed on
        (re)connecting: a new first message at an offset not past the old
        one means the stream was recreated, and old offsets mean nothing.
        """
        feed = self.feed
        if first is not None:
            offset, body = first
            epoch = epochOf(body)
            if feed.epoch is None:
                feed.epoch = epoch
            elif epoch != feed.epoch and (self.streamStart is None or offset <= self.streamStart):
                self._recreated(epoch)
            # Otherwise retention dropped the oldest messages: same stream.
            self.streamStart = offset
        self.tail = last

    def _recreated(self, epoch: Optional[str]) -> None:
        self._log.warn(
            "Stream {stream} was recreated (epoch {old} -> {new}): forgetting its history",
            stream=self.feed.stream,
            old=self.feed.epoch,
            new=epoch,
        )
        self.feed.epoch = epoch
        self.feed.history.clear()
        self.nextOffset = None
        self.streamStart = None
        # What the new stream holds is news to everyone.
        self.replaying = False

    def consuming(self) -> None:
        """
        Consuming has started at L{startOffset}: watch for catching up.
        """
        self.feed.markBehind()
        self._resumedAt = self.nextOffset
        latest = self.feed.history.latest
        if self.tail is None or (latest is not None and latest >= self.tail):
            self._caughtUp()
        else:
            self._lastDeliveryAt = self._clock.seconds()
            self._scheduleQuietCheck(CATCH_UP_QUIET)

    def stopped(self) -> None:
        """
        The connection is gone: the feed is behind until the next one
        catches up.
        """
        self.feed.markBehind()
        self._cancelQuietCheck()

    def handle(self, body: bytes, offset: int) -> None:
        """
        Hand one stream message to the feed; a malformed one is logged and
        skipped, so it cannot block the stream.
        """
        if self._resumedAt is not None and offset < self._resumedAt:
            # The broker never delivers below the offset asked for, unless
            # that offset is past the end of a new, shorter stream.
            self._resumedAt = None
            self._recreated(None)
        if offset == 0 and self.feed.epoch is None:
            self.feed.epoch = epochOf(body)
        self.nextOffset = offset + 1
        self._lastDeliveryAt = self._clock.seconds()
        try:
            message = decodePulseEnvelope(body, seq=offset)
        except MalformedEnvelope as e:
            self._log.warn(
                "Skipping malformed message at offset {offset} of {stream}: {error}",
                offset=offset,
                stream=self.feed.stream,
                error=str(e),
            )
            self.feed.history.passed(offset)
        else:
            if (
                self.replaying
                and message.sent is not None
                and message.sent.timestamp() < self._startedAt - CLOCK_SKEW
            ):
                # Sent before this node started: history to rebuild, not news.
                self.feed.remember(message.update)
            else:
                self.replaying = False
                self.feed.receive(message.update)
        if not self.feed.caughtUp and self.tail is not None and offset >= self.tail:
            self._caughtUp()

    def _caughtUp(self) -> None:
        self._cancelQuietCheck()
        # Past the end the stream had once this node was up, everything is
        # news, whatever a skewed publisher's clock stamped on it.
        self.replaying = False
        if self.tail is not None:
            # Nothing up to the tail was in the history window.
            self.feed.history.skipTo(self.tail)
        self.feed.markCaughtUp()

    def _scheduleQuietCheck(self, delay: float) -> None:
        self._quietCheck = self._clock.callLater(delay, self._checkQuiet)

    def _checkQuiet(self) -> None:
        self._quietCheck = None
        quietFor = self._clock.seconds() - self._lastDeliveryAt
        if quietFor >= CATCH_UP_QUIET:
            self._log.info(
                "Reading {stream} went quiet before offset {tail}: taking it as caught up",
                stream=self.feed.stream,
                tail=self.tail,
            )
            self._caughtUp()
        else:
            self._scheduleQuietCheck(CATCH_UP_QUIET - quietFor)

    def _cancelQuietCheck(self) -> None:
        if self._quietCheck is not None:
            if self._quietCheck.active():
                self._quietCheck.cancel()
            self._quietCheck = None


class _EdgeProbe:
    """
    The messages one probing consumer got, and when it has all it will get:
    the first one, for a probe that needs one; else once deliveries stop.
    """

    def __init__(self, clock: IReactorTime, wantsOne: bool) -> None:
        self._clock = clock
        self._wantsOne = wantsOne
        self.messages: List[Tuple[int, bytes]] = []
        self.done: Deferred = Deferred()
        self._quiet = clock.callLater(PROBE_QUIET, self._finish)

    def add(self, offset: int, body: bytes) -> None:
        if self.done.called:
            return
        self.messages.append((offset, body))
        if self._wantsOne:
            self._finish()
        else:
            self._quiet.reset(PROBE_QUIET)

    def _finish(self) -> None:
        if self._quiet.active():
            self._quiet.cancel()
        if not self.done.called:
            self.done.callback(self.messages)

    def abandon(self) -> None:
        self._finish()


class FeedConsumer:
    """
    Consumes every feed's stream over one AMQP connection, one channel per
    feed.
    """

    _log = Logger()

    def __init__(self, feeds: Iterable[Feed], historyWindow: float, clock: IReactorTime) -> None:
        startedAt = clock.seconds()
        self.cursors: List[StreamCursor] = [
            StreamCursor(feed, historyWindow, startedAt, clock) for feed in feeds
        ]
        self._clock = clock
        self._consuming = Waiters()
        self.consuming = False
        # channel -> (last delivery tag handled, deliveries not yet acked)
        self._unacked: Dict[AMQChannel, Tuple[int, int]] = {}
        self._ackCall: Optional[IDelayedCall] = None
        self._probes: Dict[str, _EdgeProbe] = {}

    def whenConsuming(self) -> Deferred:
        """
        @return: A L{Deferred} that fires once every stream is being
            consumed.
        """
        return succeed(None) if self.consuming else self._consuming.wait()

    @inlineCallbacks
    def prepareConnection(self, client: BugzfeedAMQClient) -> Any:
        """
        Declare and consume; used as L{ClientService}'s C{prepareConnection}.
        """
        byTag: Dict[str, StreamCursor] = {}

        def deliver(channel: AMQChannel, message: Message) -> None:
            tag = message.consumer_tag
            headers = message.content.properties.get("headers") or {}
            offset = headers.get("x-stream-offset")
            body = message.content.body
            if isinstance(body, str):  # txAMQP leaves an empty body as ""
                body = body.encode("utf-8")
            probe = self._probes.get(tag)
            if probe is not None and isinstance(offset, int):
                probe.add(offset, body)
                channel.basic_ack(delivery_tag=message.delivery_tag, multiple=True)
                return
            cursor = byTag.get(tag)
            if cursor is None or not isinstance(offset, int):
                self._log.warn("Delivery for {tag} without a stream offset skipped", tag=tag)
            else:
                try:
                    cursor.handle(body, offset)
                except Exception:
                    # Raising here would close the connection; one bad
                    # update must not stop the feed.
                    self._log.failure("Handling offset {offset} failed", offset=offset)
            self._handled(channel, message.delivery_tag)

        client.setHandlers(onDeliver=deliver)
        client.disconnected.wait().addCallback(lambda _: self._disconnected())
        for number, cursor in enumerate(self.cursors, start=1):
            channel = yield client.channel(number)
            yield channel.channel_open()
            yield channel.basic_qos(prefetch_count=PREFETCH)
            yield declareExchange(channel, cursor.feed.exchange)
            yield channel.queue_declare(
                queue=cursor.feed.stream, durable=True, arguments=STREAM_ARGUMENTS
            )
            yield channel.queue_bind(
                queue=cursor.feed.stream, exchange=cursor.feed.exchange, routing_key="#"
            )
            first, last = yield gatherResults(
                [
                    self._probe(client, 2 * number + 1000, cursor.feed.stream, "first"),
                    self._probe(client, 2 * number + 1001, cursor.feed.stream, "last"),
                ]
            )
            cursor.foundEdges(first[0] if first else None, last[-1][0] if last else None)
            tag = f"bugzfeed-{number}"
            byTag[tag] = cursor
            offset = cursor.startOffset()
            yield channel.basic_consume(
                queue=cursor.feed.stream,
                consumer_tag=tag,
                no_ack=False,
                arguments={"x-stream-offset": offset},
            )
            cursor.consuming()
            self._log.info(
                "Consuming {stream} from offset {offset} (epoch {epoch}, last offset {tail})",
                stream=cursor.feed.stream,
                offset=offset,
                epoch=cursor.feed.epoch,
                tail=cursor.tail,
            )
        self.consuming = True
        self._consuming.fire()

    @inlineCallbacks
    def _probe(self, client: BugzfeedAMQClient, number: int, stream: str, edge: str) -> Any:
        """
        Read the stream's first message, or its last chunk, on a channel of
        its own.

        @return: The C{(offset, body)} of the messages read.
        """
        channel = yield client.channel(number)
        yield channel.channel_open()
        yield channel.basic_qos(prefetch_count=1 if edge == "first" else PREFETCH)
        tag = f"bugzfeed-probe-{number}"
        probe = self._probes[tag] = _EdgeProbe(self._clock, wantsOne=edge == "first")
        try:
            yield channel.basic_consume(
                queue=stream, consumer_tag=tag, no_ack=False, arguments={"x-stream-offset": edge}
            )
            messages = yield probe.done
            yield channel.basic_cancel(consumer_tag=tag)
        finally:
            probe.abandon()
            del self._probes[tag]
        return messages

    def _handled(self, channel: AMQChannel, deliveryTag: int) -> None:
        """
        Acknowledge deliveries once handed over, many at a time: one ack
        per message costs more than handling it.
        """
        _, count = self._unacked.get(channel, (0, 0))
        self._unacked[channel] = (deliveryTag, count + 1)
        if count + 1 >= ACK_BATCH:
            self._ack(channel)
        elif self._ackCall is None:
            self._ackCall = self._clock.callLater(0, self._ackAll)

    def _ack(self, channel: AMQChannel) -> None:
        deliveryTag, _ = self._unacked.pop(channel)
        channel.basic_ack(delivery_tag=deliveryTag, multiple=True)

    def _ackAll(self) -> None:
        self._ackCall = None
        for channel in list(self._unacked):
            self._ack(channel)

    def _disconnected(self) -> None:
        self.consuming = False
        for cursor in self.cursors:
            cursor.stopped()
        # Unacknowledged deliveries die with their channel; the cursor
        # resumes after the last one handled.
        self._unacked.clear()
        if self._ackCall is not None:
            self._ackCall.cancel()
            self._ackCall = None
        self._log.info("Disconnected from the broker")


def consumerService(
    reactor: Any, url: str, heartbeat: int, consumer: FeedConsumer, retryPolicy: Any = None
) -> ClientService:
    """
    @return: A service that keeps C{consumer} connected to the broker at
        C{url}, reconnecting with backoff.
    """
    return brokerService(reactor, url, heartbeat, consumer.prepareConnection, retryPolicy)
