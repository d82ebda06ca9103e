"""
Baseline A: the ceiling of our stack, a bare Autobahn/Twisted broadcast
server.  No registry object, no AMQP, no history: a dict from bug to the
connections holding it, and for each update read from the control port one
encoded payload written with C{sendMessage} to each of them.

Usage: baseline_twisted.py WS_PORT CONTROL_PORT
The control port takes lines C{BUG SEQ [ENVELOPE]}, one update each; what
follows the seq is ignored (the harness sends the Pulse envelope bugzfeed
would read, so that one read carries as many updates here as there).
"""

from __future__ import annotations

import json
import resource
import sys
from typing import Dict, List

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import protocol, reactor
from twisted.protocols.basic import LineReceiver

subscribers: Dict[int, List["BroadcastProtocol"]] = {}


class BroadcastProtocol(WebSocketServerProtocol):
    held: List[int] = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        request = json.loads(payload)
        bugs = [int(bug) for bug in request["bugs"]]
        for bug in bugs:
            subscribers.setdefault(bug, []).append(self)
        self.held = self.held + bugs
        self.sendMessage(
            json.dumps(
                {"command": "subscribe", "result": "ok", "bugs": sorted(bugs)},
                separators=(",", ":"),
            ).encode()
        )

    def onClose(self, wasClean: bool, code: object, reason: object) -> None:
        for bug in self.held:
            if self in subscribers.get(bug, ()):
                subscribers[bug].remove(self)


class Control(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def lineReceived(self, line: bytes) -> None:
        bug, seq = (int(part) for part in line.split(None, 2)[:2])
        held = subscribers.get(bug)
        if not held:
            return
        payload = json.dumps(
            {"command": "update", "bug": bug, "when": "2026-12-03T20:00:00", "seq": seq},
            separators=(",", ":"),
        ).encode()
        for connection in held:
            connection.sendMessage(payload)


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    wsPort, controlPort = int(sys.argv[1]), int(sys.argv[2])
    factory = WebSocketServerFactory()
    factory.protocol = BroadcastProtocol
    reactor.listenTCP(wsPort, factory, backlog=4096, interface="127.0.0.1")
    control = protocol.ServerFactory()
    control.protocol = Control
    reactor.listenTCP(controlPort, control, interface="127.0.0.1")
    print("listening", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
