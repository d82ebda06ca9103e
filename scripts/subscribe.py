"""
A minimal Bugzfeed client: subscribe to some bugs and print every message
that arrives, one JSON object a line.

    .venv/bin/python scripts/subscribe.py ws://127.0.0.1:8844/ 1234 5678
"""

import json
import sys

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor


class Subscriber(WebSocketClientProtocol):
    def onOpen(self):
        message = {"command": "subscribe", "bugs": self.factory.bugs}
        self.sendMessage(json.dumps(message).encode())

    def onMessage(self, payload, isBinary):
        print(payload.decode(), flush=True)

    def onClose(self, wasClean, code, reason):
        print(f"closed: {code} {reason}", file=sys.stderr)
        stop()


class SubscriberFactory(WebSocketClientFactory):
    protocol = Subscriber

    def clientConnectionFailed(self, connector, reason):
        print(f"cannot connect to {self.url}: {reason.getErrorMessage()}", file=sys.stderr)
        stop()


def stop():
    if reactor.running:
        reactor.stop()


def main(argv):
    if len(argv) < 3 or not all(bug.isdigit() for bug in argv[2:]):
        sys.exit(__doc__.strip())
    factory = SubscriberFactory(argv[1])
    factory.bugs = [int(bug) for bug in argv[2:]]
    connectWS(factory, timeout=10)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
