"""
The shim: moves rows of the tracker's C{push_notify} table to a RabbitMQ
exchange, deleting each row only once the broker has confirmed it and only
if it has not changed since it was read.

The table is the truth.  Wake-ups (a NOTIFY from the trigger, the poll
interval, start-up and every reconnect) only start a drain: a pass over the
whole table in id order, in batches, publishing every row not already in
flight.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from typing import Any, Callable, Dict, List, Optional, Set

import psycopg2
from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from txamqp.content import Content
from txamqp.message import Message
from txamqp.protocol import AMQChannel
from txpostgres.reconnection import ConnectionDead

from bugzfeed.amqp import BugzfeedAMQClient, brokerService, declareExchange
from bugzfeed.confirms import ConfirmTracker, PendingRow, RowKey
from bugzfeed.model import encodePulseEnvelope
from bugzfeed.schema import notifyChannel, quoteTable, triggerSQL
from bugzfeed.waiting import Waiters


def _inRange(column: str) -> str:
    """
    @return: SQL that is true where C{column}, a timestamp, is one Python
        can hold, in any zone: not infinite, not BC, not past year 9999
        (a day's margin either side for zones).
    """
    return f"(isfinite({column}) AND {column} >= '0001-01-02' AND {column} < '9999-12-31')"


class PushNotifyTable:
    """
    The SQL the shim runs, over a txpostgres connection.

    A C{delta_ts} outside what Python can hold (C{infinity}, a BC date,
    year 294276) reads as L{None} rather than failing the whole batch.
    """

    def __init__(self, connection: Any, table: str) -> None:
        self._connection = connection
        self.table = table
        self._quoted = quoteTable(table)

    def fetch(self, afterId: int, limit: int) -> Deferred:
        """
        @return: A L{Deferred} firing with up to C{limit} L{PendingRow}s with
            ids above C{afterId}, in id order.
        """
        d = self._connection.runQuery(
            f"SELECT id, bug_id, CASE WHEN {_inRange('delta_ts')} THEN delta_ts END"
            f" FROM {self._quoted} WHERE id > %s ORDER BY id LIMIT %s",
            (afterId, limit),
        )
        return d.addCallback(lambda rows: [PendingRow(*row) for row in rows])

    def deleteUnchanged(self, rows: List[PendingRow]) -> Deferred:
        """
        Delete C{rows}, each only where both its id and its C{delta_ts}
        still match: a row the tracker changed meanwhile holds a change not
        yet published.  A row read with no C{delta_ts} (out of range) is
        deleted while its time is still out of range.

        @return: A L{Deferred} firing with the number of rows deleted.
        """
        d = self._connection.runQuery(
            f"DELETE FROM {self._quoted} AS t"
            f" USING unnest(%s::integer[], %s::timestamp[]) AS c(id, delta_ts)"
            f" WHERE t.id = c.id AND (t.delta_ts = c.delta_ts"
            f" OR (c.delta_ts IS NULL AND NOT {_inRange('t.delta_ts')})) RETURNING t.id",
            ([row.id for row in rows], [row.deltaTs for row in rows]),
        )
        return d.addCallback(len)

    def backlog(self) -> Deferred:
        """
        @return: A L{Deferred} firing with C{(count, oldest)}: how many rows
            wait, and the earliest C{delta_ts} among them (L{None} when
            none), as stored.
        """
        d = self._connection.runQuery(
            f"SELECT count(*), min(delta_ts) FILTER (WHERE {_inRange('delta_ts')})"
            f" FROM {self._quoted}"
        )
        return d.addCallback(lambda rows: (rows[0][0], rows[0][1]))

    def check(self) -> Deferred:
        """
        Fail, with PostgreSQL's reason, unless the table can be read and
        has the columns the shim needs.
        """
        return self._connection.runQuery(f"SELECT id, bug_id, delta_ts FROM {self._quoted} LIMIT 0")

    def listen(self) -> Deferred:
        """
        Listen on the channel the trigger notifies.
        """
        return self._connection.runOperation(f'LISTEN "{notifyChannel(self.table)}"')

    def installTrigger(self) -> Deferred:
        """
        Install (or replace) the trigger that notifies on every change.
        """
        return self._connection.runOperation(triggerSQL(self.table))


class PushNotifyShim:
    """
    The shim's logic: drains the table into a confirm-mode channel.

    @ivar batchSize: Rows read per query.
    @ivar maxInFlight: Published rows not yet deleted (awaiting their
        confirm or their delete), at most: all that a crash can publish
        twice.
    """

    _log = Logger()

    def __init__(
        self,
        table: PushNotifyTable,
        exchange: str,
        clock: IReactorTime,
        dbTimezone: tzinfo = timezone.utc,
        batchSize: int = 500,
        maxInFlight: int = 1000,
    ) -> None:
        self._table = table
        self.exchange = exchange
        self._clock = clock
        self._dbTimezone = dbTimezone
        self.batchSize = batchSize
        self.maxInFlight = maxInFlight
        self._channel: Optional[AMQChannel] = None
        self._tracker = ConfirmTracker()
        self._draining: Optional[Deferred] = None
        self._drainAgain = False
        self._slotFreed = Waiters()
        self._toDelete: List[PendingRow] = []
        self._deleting: Set[RowKey] = set()
        self._flushing = False
        self._becameIdle = Waiters()
        self._unroutable = False
        self._readFailing = False
        self._stopping = False
        self.published = 0
        self.deleted = 0
        #: Rows sent back to the table to be published again (for metrics).
        self.requeued = 0
        #: Called with each confirm's delay in seconds (a metrics hook).
        self.observeConfirmDelay: Callable[[float], None] = lambda seconds: None
        self._publishedAt: Dict[RowKey, float] = {}
        #: Rows whose confirm never came (the broker connection went).
        self.abandoned = 0
        self._publishing = Waiters()

    # The broker side

    def publisherReady(self, channel: AMQChannel) -> None:
        """
        A fresh confirm-mode channel is ready: publish on it from now on.
        """
        self._channel = channel
        self._tracker = ConfirmTracker()
        self._publishing.fire()
        self.drain()

    @property
    def publishing(self) -> bool:
        """Whether a confirm-mode channel to the broker is open."""
        return self._channel is not None

    @property
    def reading(self) -> bool:
        """Whether the last read of the table worked (or none failed yet)."""
        return not self._readFailing

    def whenPublishing(self) -> Deferred:
        """
        @return: A L{Deferred} that fires once a confirm-mode channel is open.
        """
        return succeed(None) if self.publishing else self._publishing.wait()

    @property
    def inFlight(self) -> int:
        """Published rows awaiting the broker's confirm."""
        return len(self._tracker)

    def publisherLost(self) -> None:
        """
        The channel is gone: every unconfirmed row stays in the table and is
        published again on the next channel.
        """
        self._channel = None
        abandoned = self._tracker.abandon()
        self.requeued += len(abandoned)
        self._publishedAt.clear()
        self.abandoned += len(abandoned)
        if abandoned:
            self._log.info(
                "Broker connection lost with {count} rows unconfirmed; they stay queued",
                count=len(abandoned),
            )
        self._slotFreed.fire()
        self._checkIdle()

    def confirmed(self, deliveryTag: int, multiple: bool, acked: bool) -> None:
        """
        The broker confirmed (or refused) one or more published rows.
        """
        sent, unsent = self._tracker.confirmed(deliveryTag, multiple, acked)
        self.requeued += len(unsent)
        now = self._clock.seconds()
        for row in sent + unsent:
            publishedAt = self._publishedAt.pop(row.key, None)
            if publishedAt is not None:
                self.observeConfirmDelay(now - publishedAt)
        if unsent and not self._unroutable:
            self._log.warn(
                "The broker did not take {count} rows (is a stream bound to {exchange}?);"
                " they stay in the table and are retried",
                count=len(unsent),
                exchange=self.exchange,
            )
        self._unroutable = bool(unsent) and not sent
        if sent:
            self._toDelete.extend(sent)
            self._deleting.update(row.key for row in sent)
            self._flushDeletes()
        self._slotFreed.fire()
        self._checkIdle()

    def returned(self, message: Message) -> None:
        """
        The broker returned an unroutable message.
        """
        try:
            rowId = int(message.content.properties["message-id"])
        except (KeyError, TypeError, ValueError):
            self._log.warn("Returned message without a row id ignored")
            return
        self._tracker.returned(rowId)

    # The table side

    def drain(self) -> None:
        """
        Publish every row in the table not already in flight; if a drain is
        running, run another pass after it, since rows may have come in
        behind its read position.
        """
        if self._stopping:
            return
        if self._draining is not None:
            self._drainAgain = True
            return
        d = self._drainUntilQuiet()
        if not d.called:
            self._draining = d
            d.addBoth(self._drained)

    def _drained(self, _: Any) -> None:
        self._draining = None
        self._checkIdle()

    @inlineCallbacks
    def _drainUntilQuiet(self) -> Any:
        self._drainAgain = True
        try:
            while self._drainAgain and self._channel is not None:
                self._drainAgain = False
                yield self._drainPass()
        except Exception as e:
            # Once per outage: while the database is down every poll fails.
            if not self._readFailing:
                if isinstance(e, (psycopg2.Error, ConnectionDead)):
                    self._log.warn(
                        "Reading {table} failed: {error}; retrying at each wake-up",
                        table=self._table.table,
                        error=str(e).strip() or type(e).__name__,
                    )
                else:
                    self._log.failure(
                        "Reading {table} failed; retrying at each wake-up", table=self._table.table
                    )
            self._readFailing = True
        else:
            if self._readFailing:
                self._log.info("Reading {table} works again", table=self._table.table)
            self._readFailing = False

    @inlineCallbacks
    def _drainPass(self) -> Any:
        channel = self._channel
        afterId = 0
        while True:
            rows = yield self._table.fetch(afterId, self.batchSize)
            # Decide now, as read: a row in flight now may be confirmed and
            # deleted while we wait for the window below.
            fresh = [
                row
                for row in rows
                if not (self._tracker.isPending(row) or row.key in self._deleting)
            ]
            for row in fresh:
                while (
                    len(self._tracker) + len(self._deleting) >= self.maxInFlight
                    and self._channel is channel
                    and not self._stopping
                ):
                    yield self._slotFreed.wait()
                if self._channel is not channel or self._stopping:
                    # The channel changed under us (its replacement drains
                    # anew), or we are stopping: what is left stays queued.
                    return
                self._publish(channel, row)
            if len(rows) < self.batchSize:
                return
            afterId = rows[-1].id

    def _publish(self, channel: AMQChannel, row: PendingRow) -> None:
        now = datetime.fromtimestamp(self._clock.seconds(), timezone.utc)
        if row.deltaTs is None:
            # The tracker wrote a time no client could read: the bug still
            # changed, and this is when we learnt of it.
            self._log.warn(
                "Row {id} (bug {bug}) has a delta_ts out of range; published with the"
                " time it was read",
                id=row.id,
                bug=row.bug,
            )
            changed = now
        else:
            changed = row.deltaTs.replace(tzinfo=self._dbTimezone).astimezone(timezone.utc)
        body = encodePulseEnvelope(row.bug, changed, self.exchange, sent=now)
        self._tracker.published(row)
        self.published += 1
        self._publishedAt[row.key] = self._clock.seconds()
        d = channel.basic_publish(
            exchange=self.exchange,
            routing_key=str(row.bug),
            mandatory=True,
            content=Content(
                body,
                properties={
                    "content-type": "application/json",
                    "delivery-mode": 2,
                    "message-id": str(row.id),
                },
            ),
        )
        # A closed channel fails the publish; publisherLost() handles that.
        d.addErrback(lambda _: None)

    @inlineCallbacks
    def _flushDeletes(self) -> Any:
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._toDelete:
                batch = self._toDelete[: self.batchSize]
                del self._toDelete[: self.batchSize]
                try:
                    self.deleted += yield self._table.deleteUnchanged(batch)
                except Exception:
                    self.requeued += len(batch)
                    self._log.failure(
                        "Deleting {count} confirmed rows failed; they will be published again",
                        count=len(batch),
                    )
                finally:
                    self._deleting.difference_update(row.key for row in batch)
                    self._slotFreed.fire()
        finally:
            self._flushing = False
            self._checkIdle()

    def stop(self) -> Deferred:
        """
        Publish nothing more; wait for what is in flight to be confirmed and
        deleted.

        @return: A L{Deferred} that fires once idle.
        """
        self._stopping = True
        self._slotFreed.fire()
        return self.whenIdle()

    # Waiting

    @property
    def idle(self) -> bool:
        """Whether nothing is being read, published or deleted."""
        return (
            self._draining is None
            and not len(self._tracker)
            and not self._toDelete
            and not self._flushing
        )

    def whenIdle(self) -> Deferred:
        """
        @return: A L{Deferred} that fires once nothing is being read,
            published or deleted.
        """
        return succeed(None) if self.idle else self._becameIdle.wait()

    def _checkIdle(self) -> None:
        if self.idle:
            self._becameIdle.fire()


class PublisherConnector:
    """
    Opens a confirm-mode channel on each new broker connection and hands it
    to the shim; used as L{ClientService}'s C{prepareConnection}.
    """

    def __init__(self, shim: PushNotifyShim) -> None:
        self._shim = shim

    @inlineCallbacks
    def prepareConnection(self, client: BugzfeedAMQClient) -> Any:
        channel = yield client.channel(1)
        yield channel.channel_open()
        yield declareExchange(channel, self._shim.exchange)
        client.setHandlers(onConfirm=self._shim.confirmed, onReturn=self._shim.returned)
        yield channel.confirm_select()
        client.disconnected.wait().addCallback(lambda _: self._shim.publisherLost())
        self._shim.publisherReady(channel)


def publisherService(
    reactor: Any, url: str, heartbeat: int, shim: PushNotifyShim, retryPolicy: Any = None
) -> ClientService:
    """
    @return: A service keeping the shim connected to the broker at C{url}.
    """
    return brokerService(
        reactor, url, heartbeat, PublisherConnector(shim).prepareConnection, retryPolicy
    )


class DatabaseService(Service):
    """
    Keeps the shim's PostgreSQL connection up (txpostgres'
    C{DeadConnectionDetector}), listens for the trigger's notifications,
    polls, and drains at start and after every reconnect.
    """

    _log = Logger()

    #: Seconds that stopping waits for in-flight confirms and deletes.
    stopTimeout = 10.0

    def __init__(
        self,
        connection: Any,
        dsn: str,
        shim: PushNotifyShim,
        table: PushNotifyTable,
        clock: IReactorTime,
        pollInterval: float,
        installTrigger: bool = False,
    ) -> None:
        self._connection = connection
        self._dsn = dsn
        self._shim = shim
        self._table = table
        self._clock = clock
        self._pollInterval = pollInterval
        self._installTrigger = installTrigger
        self._poll = LoopingCall(self._shim.drain)
        self._poll.clock = clock
        self._ready = Waiters()
        self.connected = False

    def startService(self) -> None:
        super().startService()
        self._connection.addNotifyObserver(self._notified)
        detector = self._connection.detector
        detector.addRecoveryHandler(self._connectionUp)
        d = self._connection.connect(self._dsn)
        d.addCallback(lambda _: self._connectionUp())
        d.addErrback(self._connectFailed)
        self._poll.start(self._pollInterval, now=False)

    def _connectFailed(self, failure: Any) -> None:
        self._log.error("Cannot connect to PostgreSQL: {error}; retrying", error=failure.value)
        self._connection.detector.checkForDeadConnection(failure)

    @inlineCallbacks
    def _connectionUp(self) -> Any:
        try:
            yield self._table.check()
        except psycopg2.Error as e:
            # Keep going: the shim starts working once the table is there.
            self._log.error(
                "Cannot read table {table}: {error} (create it with sql/push_notify.sql,"
                " or name another with --table)",
                table=self._table.table,
                error=str(e).strip(),
            )
        else:
            if self._installTrigger:
                try:
                    yield self._table.installTrigger()
                except psycopg2.Error as e:
                    self._log.error("Cannot install the trigger: {error}", error=str(e).strip())
        try:
            yield self._table.listen()
        except Exception:
            if self.running:
                self._log.failure("Setting up the PostgreSQL connection failed")
            # Else the connection was closed because we are stopping.
            return
        self.connected = True
        self._log.info(
            "Connected to PostgreSQL; listening for changes to {table}", table=self._table.table
        )
        self._ready.fire()
        self._shim.drain()

    def _notified(self, notify: Any) -> None:
        self._shim.drain()

    def whenConnected(self) -> Deferred:
        """
        @return: A L{Deferred} that fires once connected and listening.
        """
        return succeed(None) if self.connected else self._ready.wait()

    def stopService(self) -> Deferred:
        super().stopService()
        if self._poll.running:
            self._poll.stop()
        self._connection.detector.removeRecoveryHandler(self._connectionUp)
        inFlight, abandoned = self._shim.inFlight, self._shim.abandoned
        startedAt = self._clock.seconds()
        self._log.info(
            "Stopping: publishing nothing more, letting {count} in-flight confirms settle",
            count=inFlight,
        )
        # In-flight confirms settle, unless the broker is gone: then the rows
        # simply stay in the table.
        d = self._shim.stop().addTimeout(self.stopTimeout, self._clock)
        d.addErrback(lambda _: self._log.warn("Stopping before every confirm settled"))

        def report(_: Any) -> None:
            # Rows still in flight, or lost with the connection, stay in the
            # table and are published again on the next start.
            unsettled = self._shim.inFlight + self._shim.abandoned - abandoned
            self._log.info(
                "Stopped publishing after {seconds:.1f}s: {settled} confirms settled,"
                " {abandoned} abandoned (their rows stay in the table)",
                seconds=self._clock.seconds() - startedAt,
                settled=max(0, inFlight - unsettled),
                abandoned=unsettled,
            )

        d.addCallback(report)

        def close(_: Any) -> None:
            try:
                self._connection.close()
            except Exception:
                pass

        return d.addCallback(close)
