"""
The server's AMQP side: each feed's stream, read into the feed.

Every node declares each feed's exchange and stream (idempotently), binds
the stream to the exchange with C{#}, and consumes it from an offset: at
start from the history window, to rebuild what the node remembers; after a
reconnect from just past the last message it handled.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Union

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.logger import Logger
from txamqp.message import Message
from txamqp.protocol import AMQChannel

from bugzfeed.amqp import BugzfeedAMQClient, brokerService
from bugzfeed.feed import Feed
from bugzfeed.model import MalformedEnvelope, decodePulseEnvelope

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


def declareExchange(channel: AMQChannel, exchange: str) -> Deferred:
    """
    Declare C{exchange} as a durable topic exchange, as Pulse's are.
    """
    return channel.exchange_declare(exchange=exchange, type="topic", durable=True)


class StreamCursor:
    """
    Reads one feed's stream deliveries into the feed, and knows where to
    resume.

    @ivar nextOffset: The offset after the last message handled, or L{None}
        before any.
    """

    _log = Logger()

    def __init__(self, feed: Feed, historyWindow: float) -> None:
        self.feed = feed
        self._historyWindow = historyWindow
        self.nextOffset: Optional[int] = None

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
            update = decodePulseEnvelope(body, seq=offset)
        except MalformedEnvelope as e:
            self._log.warn(
                "Skipping malformed message at offset {offset} of {stream}: {error}",
                offset=offset,
                stream=self.feed.stream,
                error=str(e),
            )
            return
        self.feed.receive(update)


class FeedConsumer:
    """
    Consumes every feed's stream over one AMQP connection, one channel per
    feed.
    """

    _log = Logger()

    def __init__(self, feeds: Iterable[Feed], historyWindow: float) -> None:
        self.cursors: List[StreamCursor] = [StreamCursor(feed, historyWindow) for feed in feeds]
        self._consuming: List[Deferred] = []
        self.consuming = False

    def whenConsuming(self) -> Deferred:
        """
        @return: A L{Deferred} that fires once every stream is being
            consumed.
        """
        if self.consuming:
            return succeed(None)
        d: Deferred = Deferred()
        self._consuming.append(d)
        return d

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
            channel.basic_ack(delivery_tag=message.delivery_tag)

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
        waiting, self._consuming = self._consuming, []
        for d in waiting:
            d.callback(None)

    def _disconnected(self) -> None:
        self.consuming = False
        self._log.info("Disconnected from the broker")


def consumerService(
    reactor: Any, url: str, heartbeat: int, consumer: FeedConsumer, retryPolicy: Any = None
) -> ClientService:
    """
    @return: A service that keeps C{consumer} connected to the broker at
        C{url}, reconnecting with backoff.
    """
    return brokerService(reactor, url, heartbeat, consumer.prepareConnection, retryPolicy)
