"""
The server's AMQP side: each feed's stream, read into the feed.

Every node declares each feed's exchange and stream (idempotently), binds
the stream to the exchange with C{#}, and consumes it from an offset: at
start from the history window, to rebuild what the node remembers; after a
reconnect from just past the last message it handled.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
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


class StreamCursor:
    """
    Reads one feed's stream deliveries into the feed, and knows where to
    resume.

    A node starting up reads its history window from the stream: what was
    sent before it started is remembered for catch-up but not pushed to
    clients as news.  From the first message sent since, everything is
    pushed, reconnects included.

    @ivar nextOffset: The offset after the last message handled, or L{None}
        before any.
    @ivar replaying: Whether the cursor is still reading messages sent
        before the node started.
    """

    _log = Logger()

    def __init__(self, feed: Feed, historyWindow: float, startedAt: float) -> None:
        self.feed = feed
        self._historyWindow = historyWindow
        self._startedAt = startedAt
        self.nextOffset: Optional[int] = None
        self.replaying = True

    def startOffset(self) -> Union[int, str]:
        """
        @return: The C{x-stream-offset} to consume from: where the last
            connection stopped, or else the start of the history window.
        """
        if self.nextOffset is not None:
            return self.nextOffset
        return f"{max(1, int(self._historyWindow))}s"

    def handle(self, body: bytes, offset: int) -> None:
        """
        Hand one stream message to the feed; a malformed one is logged and
        skipped, so it cannot block the stream.
        """
        self.nextOffset = offset + 1
        try:
            message = decodePulseEnvelope(body, seq=offset)
        except MalformedEnvelope as e:
            self._log.warn(
                "Skipping malformed message at offset {offset} of {stream}: {error}",
                offset=offset,
                stream=self.feed.stream,
                error=str(e),
            )
            return
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


class FeedConsumer:
    """
    Consumes every feed's stream over one AMQP connection, one channel per
    feed.
    """

    _log = Logger()

    def __init__(self, feeds: Iterable[Feed], historyWindow: float, clock: IReactorTime) -> None:
        startedAt = clock.seconds()
        self.cursors: List[StreamCursor] = [
            StreamCursor(feed, historyWindow, startedAt) for feed in feeds
        ]
        self._clock = clock
        self._consuming = Waiters()
        self.consuming = False
        # channel -> (last delivery tag handled, deliveries not yet acked)
        self._unacked: Dict[AMQChannel, Tuple[int, int]] = {}
        self._ackCall: Optional[IDelayedCall] = None

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
            cursor = byTag.get(message.consumer_tag)
            headers = message.content.properties.get("headers") or {}
            offset = headers.get("x-stream-offset")
            body = message.content.body
            if isinstance(body, str):  # txAMQP leaves an empty body as ""
                body = body.encode("utf-8")
            if cursor is None or not isinstance(offset, int):
                self._log.warn(
                    "Delivery for {tag} without a stream offset skipped", tag=message.consumer_tag
                )
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
            tag = f"bugzfeed-{number}"
            byTag[tag] = cursor
            offset = cursor.startOffset()
            yield channel.basic_consume(
                queue=cursor.feed.stream,
                consumer_tag=tag,
                no_ack=False,
                arguments={"x-stream-offset": offset},
            )
            self._log.info(
                "Consuming {stream} from offset {offset}", stream=cursor.feed.stream, offset=offset
            )
        self.consuming = True
        self._consuming.fire()

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
