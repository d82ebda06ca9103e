"""
Baseline B: the same broadcast on asyncio and the C{websockets} library
(C{websockets.broadcast}, which writes without awaiting each connection).

Usage: baseline_websockets.py WS_PORT CONTROL_PORT
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from typing import Any, Dict, List

import websockets
from websockets.asyncio.server import broadcast, serve

subscribers: Dict[int, List[Any]] = {}


async def client(connection: Any) -> None:
    held: List[int] = []
    try:
        async for message in connection:
            request = json.loads(message)
            bugs = [int(bug) for bug in request["bugs"]]
            for bug in bugs:
                subscribers.setdefault(bug, []).append(connection)
            held.extend(bugs)
            await connection.send(
                json.dumps(
                    {"command": "subscribe", "result": "ok", "bugs": sorted(bugs)},
                    separators=(",", ":"),
                )
            )
    except websockets.ConnectionClosed:
        pass
    finally:
        for bug in held:
            if connection in subscribers.get(bug, ()):
                subscribers[bug].remove(connection)


async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readline()
        if not line:
            return
        bug, seq = (int(part) for part in line.split(None, 2)[:2])
        held = subscribers.get(bug)
        if held:
            broadcast(
                held,
                json.dumps(
                    {"command": "update", "bug": bug, "when": "2026-12-03T20:00:00", "seq": seq},
                    separators=(",", ":"),
                ),
            )


async def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    wsPort, controlPort = int(sys.argv[1]), int(sys.argv[2])
    async with serve(
        client, "127.0.0.1", wsPort, backlog=4096, ping_interval=None, compression=None
    ):
        await asyncio.start_server(control, "127.0.0.1", controlPort, limit=1 << 20)
        print("listening", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
