"""
The harness's broker chores, on the project's own AMQP client: declare a
feed's exchange and stream, delete them, and publish (baseline C, and the
offered load of the fan-out scenarios).

    amqptool.py URL declare EXCHANGE
    amqptool.py URL delete EXCHANGE...
    amqptool.py URL publish EXCHANGE [--rate R] [--confirms] [--in-flight K]

C{publish} reads a JSON list of bug ids on stdin, publishes one Pulse
envelope per id in order (paced at R per second if given, else as fast as
it can), and prints JSON: the monotonic time of each publish, and the rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any, Dict, List

from twisted.internet import defer, task
from twisted.internet.endpoints import HostnameEndpoint
from txamqp.content import Content

from bugzfeed.amqp import BrokerAddress, BugzfeedAMQFactory, declareExchange
from bugzfeed.consumer import STREAM_ARGUMENTS
from bugzfeed.model import encodePulseEnvelope, streamName


@defer.inlineCallbacks
def connect(reactor: Any, url: str) -> Any:
    address = BrokerAddress.fromURL(url)
    endpoint = HostnameEndpoint(reactor, address.host, address.port)
    client = yield endpoint.connect(BugzfeedAMQFactory(reactor, vhost=address.vhost))
    yield client.authenticate(address.username, address.password)
    channel = yield client.channel(1)
    yield channel.channel_open()
    return client, channel


@defer.inlineCallbacks
def declare(reactor: Any, args: argparse.Namespace) -> Any:
    client, channel = yield connect(reactor, args.url)
    for exchange in args.exchanges:
        yield declareExchange(channel, exchange)
        yield channel.queue_declare(
            queue=streamName(exchange), durable=True, arguments=STREAM_ARGUMENTS
        )
        yield channel.queue_bind(queue=streamName(exchange), exchange=exchange, routing_key="#")
    yield client.close(within=1)


@defer.inlineCallbacks
def delete(reactor: Any, args: argparse.Namespace) -> Any:
    client, channel = yield connect(reactor, args.url)
    for exchange in args.exchanges:
        yield channel.queue_delete(queue=streamName(exchange))
        yield channel.exchange_delete(exchange=exchange)
    yield client.close(within=1)


@defer.inlineCallbacks
def publish(reactor: Any, args: argparse.Namespace) -> Any:
    bugs: List[int] = json.load(sys.stdin)
    client, channel = yield connect(reactor, args.url)
    exchange = args.exchanges[0]
    # Delivery tags awaiting their confirm, oldest first.
    outstanding: Dict[int, None] = {}
    slot: List[defer.Deferred] = []

    def confirmed(deliveryTag: int, multiple: bool, acked: bool) -> None:
        if multiple:
            for tag in list(outstanding):
                if tag > deliveryTag:
                    break
                del outstanding[tag]
        else:
            outstanding.pop(deliveryTag, None)
        # A waiter resumed here may wait again: fire only those waiting now.
        waiting = slot[:]
        del slot[:]
        for d in waiting:
            d.callback(None)

    if args.confirms:
        client.setHandlers(onConfirm=confirmed)
        yield channel.confirm_select()
    times: List[float] = []
    deltaTs = datetime.now(timezone.utc).replace(microsecond=0)
    start = time.monotonic()
    index = 0
    while index < len(bugs):
        if args.rate:
            due = min(len(bugs), int((time.monotonic() - start) * args.rate) + 1)
            if due <= index:
                yield task.deferLater(reactor, 0.002, lambda: None)
                continue
        else:
            due = min(len(bugs), index + 200)
        while index < due:
            if args.confirms and len(outstanding) >= args.in_flight:
                d: defer.Deferred = defer.Deferred()
                slot.append(d)
                yield d
                continue
            bug = bugs[index]
            body = encodePulseEnvelope(bug, deltaTs, exchange, sent=datetime.now(timezone.utc))
            channel.basic_publish(
                exchange=exchange,
                routing_key=str(bug),
                content=Content(body, properties={"delivery-mode": 2}),
            )
            times.append(time.monotonic())
            index += 1
            outstanding[index] = None
        # Let the reactor write (and read confirms) between chunks.
        yield task.deferLater(reactor, 0, lambda: None)
    while args.confirms and outstanding:
        d = defer.Deferred()
        slot.append(d)
        yield d
    end = time.monotonic()
    yield client.close(within=1)
    json.dump(
        {"times": times, "start": start, "end": end, "rate": len(bugs) / max(end - start, 1e-9)},
        sys.stdout,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("action", choices=["declare", "delete", "publish"])
    parser.add_argument("exchanges", nargs="+")
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--confirms", action="store_true")
    parser.add_argument("--in-flight", type=int, default=1000)
    args = parser.parse_args()
    action = {"declare": declare, "delete": delete, "publish": publish}[args.action]
    task.react(lambda reactor: action(reactor, args))


if __name__ == "__main__":
    main()
