"""
A minimal Bugzfeed client: subscribe to some bugs and print what arrives.

    .venv/bin/python scripts/subscribe.py ws://127.0.0.1:8844/ 1234 5678
"""

import json
import sys

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor


class Subscriber(WebSocketClientProtocol):
    def onOpen(self):
        bugs = [int(bug) for bug in sys.argv[2:]]
        self.sendMessage(json.dumps({"command": "subscribe", "bugs": bugs}).encode())

    def onMessage(self, payload, isBinary):
        print(payload.decode(), flush=True)

    def onClose(self, wasClean, code, reason):
        print(f"closed: {code} {reason}", file=sys.stderr)
        reactor.stop()


if len(sys.argv) < 3:
    sys.exit(__doc__)
factory = WebSocketClientFactory(sys.argv[1])
factory.protocol = Subscriber
connectWS(factory)
reactor.run()
