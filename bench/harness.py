"""
Bugzfeed's benchmark: the scenarios of issue 4, each beside a baseline
measured in the same run, so that the ratios hold on any machine, and how
fast a starting node reads back its stream (scenario 6).

Run it through C{bench/run} (which installs what it needs first):

    bench/run                 # the issue's sizes (several minutes)
    bench/run --smoke         # tiny sizes, seconds; what the test suite runs
    bench/run --help

Servers: C{bugzfeed} (C{twistd bugzfeed} from this checkout's .venv),
baseline A (bare Autobahn/Twisted broadcast, L{baseline_twisted}) and
baseline B (bare asyncio C{websockets} broadcast, L{baseline_websockets}).
Load comes from separate client processes (L{wsload}); the figures that
matter are per unit of the server process's own CPU time, read from
C{/proc} through psutil, since the load generator shares the machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple

import psutil  # type: ignore[import-untyped]
import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from wsload import loadProcess  # noqa: E402

from bugzfeed.model import encodePulseEnvelope  # noqa: E402

PYTHON = sys.executable
TWISTD = os.path.join(os.path.dirname(PYTHON), "twistd")
AMQP_URL = os.environ.get("BUGZFEED_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_USER = os.environ.get("PGUSER", "postgres")
DATABASE = "bugzfeed_bench"

FULL = dict(
    clients=10000,
    bugs_per_client=10,
    pool=10000,
    burst=20000,
    repeat=3,
    paced_seconds=10.0,
    e2e_rate=100.0,
    e2e_seconds=10.0,
    poll_interval=1.0,
    backlog=100000,
    publish_count=20000,
    replay=50000,
)
SMOKE = dict(
    clients=20,
    bugs_per_client=3,
    pool=40,
    burst=200,
    repeat=1,
    paced_seconds=1.0,
    e2e_rate=20.0,
    e2e_seconds=1.0,
    poll_interval=0.5,
    backlog=400,
    publish_count=300,
    replay=300,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def raiseFileLimit() -> int:
    """
    Raise the open-files limit to the hard limit; children inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def waitUntil(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def percentile(values: Sequence[float], fraction: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def amqptool(*args: str, stdin: Optional[str] = None) -> str:
    result = subprocess.run(
        [PYTHON, os.path.join(HERE, "amqptool.py"), AMQP_URL, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode:
        raise RuntimeError(f"amqptool {args[0]} failed: {result.stderr[-2000:]}")
    return result.stdout


# The servers


class Process:
    """
    A daemon the harness started, its output in a log file.
    """

    def __init__(self, name: str, argv: List[str], logDir: str) -> None:
        self.name = name
        self.logPath = os.path.join(logDir, f"{name}.log")
        self._logFile = open(self.logPath, "wb")
        self.popen = subprocess.Popen(
            argv, stdout=self._logFile, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        self.ps = psutil.Process(self.popen.pid)

    def logText(self) -> str:
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def waitForLog(self, text: str, timeout: float = 30.0) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.logText()[-2000:]}")
            return text in self.logText()

        waitUntil(seen, timeout, f"{text!r} in {self.name}'s log", 0.1)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._logFile.close()


class Server:
    """
    A WebSocket server under test, and how to feed it updates.
    """

    name = ""
    path = "/"

    def __init__(self, logDir: str) -> None:
        self.port = freePort()
        self.published = 0
        self.process: Process

    def feed(self, bugs: List[int], rate: float) -> List[float]:
        """
        Offer one update per bug (at C{rate} a second, or all at once),
        seq numbers following on from earlier ones.

        @return: The monotonic time each was offered.
        """
        raise NotImplementedError

    def stop(self) -> None:
        self.process.stop()


class BugzfeedServer(Server):
    name = "bugzfeed"

    def __init__(self, logDir: str, exchange: str, launcher: Optional[List[str]] = None) -> None:
        super().__init__(logDir)
        self.exchange = exchange
        self.process = Process(
            self.name,
            (launcher or [TWISTD])
            + [
                "--nodaemon",
                "--pidfile=",
                "bugzfeed",
                "--listen",
                f"tcp:{self.port}:interface=127.0.0.1:backlog=4096",
                "--amqp",
                AMQP_URL,
                "--feed",
                f"/={exchange}",
            ],
            logDir,
        )
        self.process.waitForLog("Consuming bugzfeed.")

    def feed(self, bugs: List[int], rate: float) -> List[float]:
        args = ["publish", self.exchange] + (["--rate", str(rate)] if rate else [])
        out = json.loads(amqptool(*args, stdin=json.dumps(bugs)))
        self.published += len(bugs)
        return list(out["times"])


class AutobahnWriteServer(BugzfeedServer):
    """
    Bugzfeed with its former write path (L{autobahn_write}): every update
    framed by Autobahn per subscriber and written with C{transport.write}.
    """

    name = "bugzfeed_autobahn"

    def __init__(self, logDir: str, exchange: str) -> None:
        super().__init__(logDir, exchange, [PYTHON, os.path.join(HERE, "autobahn_write.py")])


class ReplayingServer(BugzfeedServer):
    """
    Bugzfeed started on a stream that already holds messages: it reads
    them all back (rebuilding its history) before it is caught up.
    """

    name = "bugzfeed_replay"

    def offset(self) -> int:
        """
        @return: The offset of the last stream message the node handled
            (its C{bugzfeed_stream_offset} gauge), or -1 before the first.
        """
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        match = re.search(r"^bugzfeed_stream_offset\{[^}]*\} (\S+)$", text, re.M)
        return -1 if match is None else int(float(match.group(1)))


class BaselineServer(Server):
    """
    A baseline, fed over a plain TCP control port.

    @ivar padding: Bytes after each line's C{BUG SEQ}, which the baseline
        ignores: the Pulse envelope bugzfeed would read (C{"envelope"}), so
        that each of the baseline's 64 KiB reads carries about as many
        updates as bugzfeed's reads of its stream; or nothing (C{"ids"}),
        so that one read carries thousands and every connection gets
        several frames per C{send()}.
    """

    script = ""

    def __init__(self, logDir: str, feedKind: str = "envelope") -> None:
        super().__init__(logDir)
        self.padding = b""
        if feedKind == "envelope":
            self.padding = b" " + encodePulseEnvelope(
                123456, datetime(2026, 12, 4), "bench.0123456789", sent=datetime.now(timezone.utc)
            )
        controlPort = freePort()
        self.process = Process(
            self.name,
            [PYTHON, os.path.join(HERE, self.script), str(self.port), str(controlPort)],
            logDir,
        )
        self.process.waitForLog("listening")
        self.control = socket.create_connection(("127.0.0.1", controlPort))

    def feed(self, bugs: List[int], rate: float) -> List[float]:
        base = self.published
        self.published += len(bugs)
        padding = self.padding
        lines = [b"%d %d%s\n" % (bug, base + i, padding) for i, bug in enumerate(bugs)]
        if not rate:
            now = time.monotonic()
            self.control.sendall(b"".join(lines))
            return [now] * len(lines)
        times: List[float] = []
        start = time.monotonic()
        index = 0
        while index < len(lines):
            due = min(len(lines), int((time.monotonic() - start) * rate) + 1)
            if due > index:
                now = time.monotonic()
                self.control.sendall(b"".join(lines[index:due]))
                times.extend([now] * (due - index))
                index = due
            else:
                time.sleep(0.002)
        return times

    def stop(self) -> None:
        self.control.close()
        super().stop()


class BaselineA(BaselineServer):
    name = "baseline_a"
    script = "baseline_twisted.py"


class BaselineB(BaselineServer):
    name = "baseline_b"
    script = "baseline_websockets.py"


# The clients


class ClientPool:
    """
    The load-generating processes, driven together.
    """

    def __init__(self, processes: int, port: int, path: str) -> None:
        context = multiprocessing.get_context("fork")
        self.pipes = []
        self.processes = []
        for _ in range(processes):
            parent, child = context.Pipe()
            process = context.Process(target=loadProcess, args=(child, port, path), daemon=True)
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)

    def split(self, items: List[Any]) -> List[List[Any]]:
        count = len(self.pipes)
        return [items[i::count] for i in range(count)]

    def send(self, command: str, argsPerProcess: List[Tuple[Any, ...]]) -> None:
        for pipe, args in zip(self.pipes, argsPerProcess):
            pipe.send((command, args))

    def collect(self, timeout: float = 600.0) -> List[Any]:
        results = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise RuntimeError("a client process did not answer")
            status, result = pipe.recv()
            if status != "ok":
                raise RuntimeError(f"client process: {result}")
            results.append(result)
        return results

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("close", ()))
            except OSError:
                pass
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()


# PostgreSQL


class Database:
    def __init__(self) -> None:
        admin = psycopg2.connect(host=PG_HOST, user=PG_USER, dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                try:
                    cursor.execute(f"CREATE DATABASE {DATABASE}")
                except psycopg2.errors.DuplicateDatabase:
                    pass
        admin.close()
        self.tables: List[str] = []
        self._connect()

    dsn = f"host={PG_HOST} user={PG_USER} dbname={DATABASE}"

    def _connect(self) -> None:
        self.connection = psycopg2.connect(host=PG_HOST, user=PG_USER, dbname=DATABASE)
        self.connection.autocommit = True

    def execute(self, sql: str, args: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
        # The machine is shared: a backend can be killed under us. Retry
        # once on a fresh connection (statements here are idempotent or
        # harmless to repeat).
        for attempt in (1, 2):
            try:
                with self.connection.cursor() as cursor:
                    cursor.execute(sql, args)
                    return cursor.fetchall() if cursor.description else []
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if attempt == 2:
                    raise
                log("PostgreSQL connection lost; reconnecting")
                self._connect()
        raise AssertionError("unreachable")

    def createTable(self, table: str) -> None:
        from bugzfeed.schema import tableSQL

        self.tables.append(table)
        self.execute(tableSQL(table))

    def count(self, table: str) -> int:
        return int(self.execute(f"SELECT count(*) FROM {table}")[0][0])

    def dropAll(self) -> None:
        for table in self.tables:
            self.execute(f"DROP TABLE IF EXISTS {table}")
            self.execute(f'DROP FUNCTION IF EXISTS "bugzfeed_notify_{table}"() CASCADE')
        self.connection.close()


def startShim(
    name: str,
    logDir: str,
    table: str,
    exchange: str,
    pollInterval: float,
    trigger: bool,
) -> Process:
    argv = [
        TWISTD,
        "--nodaemon",
        "--pidfile=",
        "bugzfeed-shim",
        "--database",
        Database.dsn,
        "--amqp",
        AMQP_URL,
        "--exchange",
        exchange,
        "--table",
        table,
        "--poll-interval",
        str(pollInterval),
    ] + (["--install-trigger"] if trigger else [])
    return Process(name, argv, logDir)


# The scenarios


class Run:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.runId = uuid.uuid4().hex[:10]
        self.exchange = f"bench.{self.runId}"
        self.shimExchange = f"bench.{self.runId}.shim"
        self.extraExchanges: List[str] = []
        self.logDir = os.path.join(options.results, "logs", self.runId)
        os.makedirs(self.logDir, exist_ok=True)
        self.random = random.Random(options.seed)
        self.assignments = [
            self.random.sample(range(1, options.pool + 1), options.bugs_per_client)
            for _ in range(options.clients)
        ]
        self.subscribersOf: Dict[int, List[int]] = {}
        for index, bugs in enumerate(self.assignments):
            for bug in bugs:
                self.subscribersOf.setdefault(bug, []).append(index)
        self.subscribedBugs = sorted(self.subscribersOf)
        self.database: Optional[Database] = None

    def expectedPerProcess(self, pool: ClientPool, bugs: List[int]) -> List[int]:
        count = len(pool.pipes)
        expected = [0] * count
        for bug in bugs:
            for index in self.subscribersOf.get(bug, ()):
                expected[index % count] += 1
        return expected

    def deliver(
        self, server: Server, pool: ClientPool, bugs: List[int], rate: float, record: bool
    ) -> Dict[str, Any]:
        """
        Offer C{bugs} to C{server}, count what the clients get, and measure
        the server's CPU over it.
        """
        expected = self.expectedPerProcess(pool, bugs)
        deadline = max(30.0, len(bugs) / max(rate, 500.0) * 3)
        # Wait out stalls (the machine is shared): a burst cut short would
        # spill into the next measurement.
        pool.send("receive", [(e, record, 10.0, deadline) for e in expected])
        base = server.published
        profiler = self.startProfiler(server, "paced" if rate else "burst")
        cpu0 = server.process.cpu()
        times = server.feed(bugs, rate)
        results = pool.collect()
        cpu1 = server.process.cpu()
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        delivered = sum(r["updates"] for r in results)
        last = max((r["last"] for r in results if r["updates"]), default=times[-1])
        elapsed = max(last - times[0], 1e-9)
        figures: Dict[str, Any] = {
            "offered": len(bugs),
            "expected": sum(expected),
            "delivered": delivered,
            "seconds": elapsed,
            "deliveries_per_s": delivered / elapsed,
            "cpu_s": cpu1 - cpu0,
            "cpu_us_per_delivery": (cpu1 - cpu0) / max(delivered, 1) * 1e6,
            "load_average_1min": os.getloadavg()[0],
        }
        if record:
            records = [record for r in results for record in r["records"]]
            base = seqBase(bugs, records, base)
            latencies = []
            mismatched = 0
            for bug, seq, arrived in records:
                index = seq - base
                if 0 <= index < len(bugs) and bugs[index] == bug:
                    latencies.append(arrived - times[index])
                else:
                    mismatched += 1
            figures.update(latencyFigures(latencies))
            figures["unmatched"] = mismatched
            figures["last_seq"] = base + len(bugs) - 1
        return figures

    def startProfiler(self, server: Server, what: str) -> Optional[subprocess.Popen]:
        """
        With C{--profile}, sample the server with py-spy while it works:
        collapsed stacks (one line per stack, with its sample count) in
        the results directory.
        """
        if not self.options.profile:
            return None
        path = os.path.join(self.logDir, f"{server.name}-{what}-{server.published}.txt")
        profiler = subprocess.Popen(
            [
                os.path.join(os.path.dirname(PYTHON), "py-spy"),
                "record",
                "--pid",
                str(server.process.popen.pid),
                "--format",
                "raw",
                "--rate",
                "250",
                "--output",
                path,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # py-spy attaches
        log(f"profiling {server.name} into {path}")
        return profiler

    def serverScenarios(self, server: Server) -> Dict[str, Any]:
        o = self.options
        figures: Dict[str, Any] = {}
        pool = ClientPool(o.procs, server.port, server.path)
        try:
            rss0 = server.process.rss()
            share = pool.split(list(range(o.clients)))
            pool.send("connect", [(len(s), None, None) for s in share])
            figures["connect_s"] = max(pool.collect())
            rssConnected = server.process.rss()

            # 4. Subscribe storm: every client subscribes at once.
            perProcess = pool.split(self.assignments)
            cpu0 = server.process.cpu()
            pool.send("subscribe", [(bugs,) for bugs in perProcess])
            seconds = max(pool.collect())
            cpu1 = server.process.cpu()
            figures["subscribe_s"] = seconds
            figures["subscribes_per_s"] = o.clients / seconds
            figures["cpu_us_per_subscribe"] = (cpu1 - cpu0) / o.clients * 1e6

            # 1. Idle connections, subscriptions included.
            rss1 = server.process.rss()
            figures["rss_before_bytes"] = rss0
            figures["rss_per_connection_bytes"] = (rss1 - rss0) / o.clients
            figures["rss_per_connection_unsubscribed_bytes"] = (rssConnected - rss0) / o.clients
            log(f"{server.name}: {figures['rss_per_connection_bytes'] / 1024:.1f} KiB/connection")

            # 2. Fan-out burst (the ceiling), then paced at half of it.
            bursts = []
            for attempt in range(o.repeat):
                bugs = [self.random.choice(self.subscribedBugs) for _ in range(o.burst)]
                burst = self.deliver(server, pool, bugs, 0.0, False)
                log(
                    f"{server.name}: burst {attempt + 1}: {burst['deliveries_per_s']:.0f}"
                    f" deliveries/s, {burst['cpu_us_per_delivery']:.1f} us CPU each"
                )
                bursts.append(burst)
            figures["bursts"] = bursts
            figures["burst"] = medianFigures(bursts)
            ceiling = figures["burst"]["deliveries_per_s"]
            meanSubscribers = o.clients * o.bugs_per_client / len(self.subscribedBugs)
            rate = max(1.0, ceiling / 2 / meanSubscribers)
            count = max(1, int(rate * o.paced_seconds))
            bugs = [self.random.choice(self.subscribedBugs) for _ in range(count)]
            paced = self.deliver(server, pool, bugs, rate, True)
            paced["publish_rate"] = rate
            figures["paced"] = paced
            log(
                f"{server.name}: paced at {paced['deliveries_per_s']:.0f} deliveries/s:"
                f" p50 {paced['p50_ms']} ms, p99 {paced['p99_ms']} ms"
            )

            # 4. Everyone reconnects and resumes after the last update sent,
            # so each gets recovered: true and nothing to replay (the
            # baselines ignore the field).
            resume = {"after": paced["last_seq"]}
            cpu0 = server.process.cpu()
            pool.send("reconnect", [(len(s), b, resume) for s, b in zip(share, perProcess)])
            figures["reconnect_s"] = max(pool.collect())
            figures["cpu_us_per_reconnect"] = (server.process.cpu() - cpu0) / o.clients * 1e6
            log(f"{server.name}: {o.clients} reconnected in {figures['reconnect_s']:.2f} s")

            # 3. Latency end to end, with the clients still connected.
            if type(server) is BugzfeedServer and "3" in o.scenarios:
                figures["e2e_trigger"] = self.endToEnd(server, pool, trigger=True)
                figures["e2e_polling"] = self.endToEnd(server, pool, trigger=False)
            pool.send("errors", [()] * len(pool.pipes))
            counts = pool.collect()
            figures["error_replies"] = sum(errors for errors, _ in counts)
            figures["resumes_not_recovered"] = sum(missed for _, missed in counts)
        finally:
            pool.close()
        return figures

    def db(self) -> Database:
        if self.database is None:
            self.database = Database()
        return self.database

    def endToEnd(self, server: BugzfeedServer, pool: ClientPool, trigger: bool) -> Dict[str, Any]:
        o = self.options
        kind = "trigger" if trigger else "polling"
        table = f"push_notify_bench_{self.runId}_{kind}"
        database = self.db()
        database.createTable(table)
        shim = startShim(
            f"shim-{kind}", self.logDir, table, server.exchange, o.poll_interval, trigger
        )
        try:
            # Ready once a probe row (a bug nobody holds) has gone through.
            database.execute(
                f"INSERT INTO {table} (bug_id, delta_ts) VALUES (%s, now())", (2_000_000_000,)
            )
            waitUntil(lambda: database.count(table) == 0, 30, f"the {kind} shim to start")
            server.published += 1
            count = max(1, int(o.e2e_rate * o.e2e_seconds))
            bugs = self.random.sample(self.subscribedBugs, min(count, len(self.subscribedBugs)))
            expected = self.expectedPerProcess(pool, bugs)
            pool.send("receive", [(e, True, 3.0 + o.poll_interval, 60.0) for e in expected])
            committed: Dict[int, float] = {}
            cpu0 = server.process.cpu()
            start = time.monotonic()
            for index, bug in enumerate(bugs):
                delay = start + index / o.e2e_rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                # Autocommit: the statement returns once committed; timing
                # from before it sent counts the commit itself too.
                committed[bug] = time.monotonic()
                database.execute(
                    f"INSERT INTO {table} (bug_id, delta_ts) VALUES (%s, now() AT TIME ZONE 'UTC')",
                    (bug,),
                )
            results = pool.collect()
            cpu = server.process.cpu() - cpu0
            latencies = [
                arrived - committed[bug]
                for r in results
                for bug, _seq, arrived in r["records"]
                if bug in committed
            ]
            server.published += len(bugs)
            figures = latencyFigures(latencies)
            figures.update(
                rows=len(bugs),
                expected=sum(expected),
                delivered=sum(r["updates"] for r in results),
                rate=o.e2e_rate,
                poll_interval_s=o.poll_interval,
                server_cpu_s=cpu,
            )
            log(f"end to end ({kind}): p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms")
            return figures
        finally:
            shim.stop()

    def shimScenario(self) -> Dict[str, Any]:
        o = self.options
        figures: Dict[str, Any] = {}
        amqptool("declare", self.shimExchange)
        bugs = [1 + i % 100000 for i in range(o.publish_count)]
        for confirms in (False, True):
            out = json.loads(
                amqptool(
                    "publish",
                    self.shimExchange,
                    *(["--confirms"] if confirms else []),
                    stdin=json.dumps(bugs),
                )
            )
            key = "baseline_c_confirms_per_s" if confirms else "baseline_c_per_s"
            figures[key] = out["rate"]
            log(f"baseline C ({'with' if confirms else 'no'} confirms): {out['rate']:.0f}/s")
        database = self.db()
        table = f"push_notify_bench_{self.runId}_shim"
        database.createTable(table)
        shim = startShim("shim-backlog", self.logDir, table, self.shimExchange, 1.0, False)
        try:
            drains = []
            for backlog in (max(1, o.backlog // 10), o.backlog):
                database.execute(
                    f"INSERT INTO {table} (bug_id, delta_ts)"
                    f" SELECT g, now() AT TIME ZONE 'UTC' FROM generate_series(1, %s) g",
                    (backlog,),
                )
                inserted = time.monotonic()
                cpu0 = shim.cpu()
                peak = shim.rss()
                started = 0.0
                while True:
                    left = database.count(table)
                    peak = max(peak, shim.rss())
                    now = time.monotonic()
                    if left < backlog and not started:
                        started = now
                    if left == 0:
                        break
                    if now - inserted > 300:
                        raise RuntimeError(f"backlog of {backlog}: {left} rows left after 300 s")
                    time.sleep(0.05)
                done = time.monotonic()
                # A backlog gone within one look has no measurable draining
                # window: count from the insert instead.
                if not started or done - started < 1.0:
                    started = inserted
                drain = {
                    "rows": backlog,
                    "seconds_from_insert": done - inserted,
                    "seconds_draining": done - started,
                    "rows_per_s": backlog / max(done - started, 1e-9),
                    "peak_rss_bytes": peak,
                    "cpu_us_per_row": (shim.cpu() - cpu0) / backlog * 1e6,
                }
                log(
                    f"shim: {backlog} rows drained in {drain['seconds_from_insert']:.1f} s,"
                    f" {drain['rows_per_s']:.0f} rows/s, peak RSS {peak / 2**20:.1f} MiB"
                )
                drains.append(drain)
            figures["small_backlog"], figures["backlog"] = drains
            figures["rows_per_s"] = drains[1]["rows_per_s"]
        finally:
            shim.stop()
        return figures

    def replayScenario(self) -> Dict[str, Any]:
        """
        6. How fast a starting node reads back a stream that already holds
        C{--replay} messages; live updates wait behind that.
        """
        o = self.options
        exchange = f"{self.exchange}.replay"
        self.extraExchanges.append(exchange)
        amqptool("declare", exchange)
        bugs = [self.random.randrange(1, o.pool + 1) for _ in range(o.replay)]
        amqptool("publish", exchange, stdin=json.dumps(bugs))
        # Past the clock-skew allowance: the node takes it all as history
        # to rebuild, as after a restart, rather than news.
        time.sleep(6)
        started = time.monotonic()
        server = ReplayingServer(self.logDir, exchange)
        try:
            consuming = time.monotonic()
            # A new stream: offsets 0 to len(bugs) - 1.
            last = len(bugs) - 1
            waitUntil(lambda: server.offset() >= last, 300, "the replay to finish", 0.02)
            done = time.monotonic()
            cpu = server.process.cpu()
        finally:
            server.stop()
        figures = {
            "messages": len(bugs),
            "seconds_from_start": done - started,
            "seconds_from_consuming": done - consuming,
            "messages_per_s": len(bugs) / max(done - consuming, 1e-9),
            "cpu_s_process": cpu,
        }
        log(
            f"replay: {len(bugs)} stream messages read back in"
            f" {figures['seconds_from_consuming']:.2f} s after consuming began,"
            f" {figures['messages_per_s']:.0f}/s ({figures['seconds_from_start']:.2f} s from start)"
        )
        return figures

    def cleanUp(self) -> None:
        try:
            amqptool("delete", self.exchange, self.shimExchange, *self.extraExchanges)
        except Exception as e:
            log(f"cleaning up the broker failed: {e}")
        if self.database is not None:
            self.database.dropAll()


def seqBase(bugs: List[int], records: List[Tuple[int, int, float]], guess: int) -> int:
    """
    The seq of the first of C{bugs}: the offset most deliveries agree on.

    Bugzfeed's seq is the stream offset, which need not start at the number
    of messages published before (a stream's offsets can skip); the
    baselines number from C{guess}.
    """
    positions: Dict[int, List[int]] = {}
    for index, bug in enumerate(bugs):
        positions.setdefault(bug, []).append(index)
    votes: Dict[int, int] = {}
    for bug, seq, _ in records:
        for index in positions.get(bug, ()):
            votes[seq - index] = votes.get(seq - index, 0) + 1
    return max(votes, key=lambda base: votes[base]) if votes else guess


def latencyFigures(latencies: List[float]) -> Dict[str, Any]:
    def ms(value: Optional[float]) -> Optional[float]:
        return None if value is None else round(value * 1000, 2)

    return {
        "samples": len(latencies),
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "max_ms": ms(max(latencies) if latencies else None),
    }


def medianFigures(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        key: statistics.median(run[key] for run in runs)
        for key in runs[0]
        if isinstance(runs[0][key], (int, float))
    }


# The report


def ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    if value is None or not base:
        return None
    return value / base


def verdicts(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """
    One row per figure the issue sets a target for: ours, the baselines',
    the ratio to baseline A and whether the target is met.
    """
    servers = report["servers"]
    ours = servers.get("bugzfeed", {})
    a = servers.get("baseline_a", {})
    b = servers.get("baseline_b", {})
    rows: List[Dict[str, Any]] = []

    def row(
        scenario: str,
        figure: str,
        unit: str,
        get: Any,
        target: str,
        met: Any,
        baseline: Optional[float] = None,
    ) -> None:
        def value(figures: Dict[str, Any]) -> Optional[float]:
            try:
                return float(get(figures))
            except (KeyError, TypeError):
                return None

        mine, ofA, ofB = value(ours), value(a), value(b)
        former = value(servers.get("bugzfeed_autobahn", {}))
        base = baseline if baseline is not None else ofA
        r = ratio(mine, base)
        rows.append(
            {
                "scenario": scenario,
                "figure": figure,
                "unit": unit,
                "bugzfeed": mine,
                "baseline_a": ofA,
                "baseline_b": ofB,
                "bugzfeed_autobahn": former,
                "autobahn_ratio": ratio(former, base),
                "baseline": base,
                "ratio": r,
                "target": target,
                "met": None if mine is None else bool(met(mine, r)),
            }
        )

    def ok(condition: Any) -> Any:
        return condition

    row(
        "1 idle",
        "RSS per connection",
        "KB",
        lambda f: f["rss_per_connection_bytes"] / 1000,
        "<= 15 KB and <= 1.5x A",
        lambda v, r: v <= 15 and (r is None or r <= 1.5),
    )
    row(
        "2 fan-out",
        "burst deliveries/s",
        "/s",
        lambda f: f["burst"]["deliveries_per_s"],
        ">= 0.8x A",
        lambda v, r: r is not None and r >= 0.8,
    )
    row(
        "2 fan-out",
        "server CPU per delivery",
        "us",
        lambda f: f["burst"]["cpu_us_per_delivery"],
        "<= 1.25x A",
        lambda v, r: r is not None and r <= 1.25,
    )
    row(
        "2 fan-out",
        "paced (half ceiling) p99",
        "ms",
        lambda f: f["paced"]["p99_ms"],
        "<= 250 ms",
        lambda v, r: v <= 250,
    )
    row(
        "3 end to end",
        "NOTIFY trigger p50",
        "ms",
        lambda f: f["e2e_trigger"]["p50_ms"],
        "<= 10 ms",
        lambda v, r: v <= 10,
    )
    row(
        "3 end to end",
        "NOTIFY trigger p99",
        "ms",
        lambda f: f["e2e_trigger"]["p99_ms"],
        "<= 50 ms",
        lambda v, r: v <= 50,
    )
    poll = report["options"]["poll_interval"]
    row(
        "3 end to end",
        f"polling only ({poll:g} s) p50",
        "ms",
        lambda f: f["e2e_polling"]["p50_ms"],
        f"<= {poll * 500 + 10:g} ms",
        lambda v, r: v <= poll * 500 + 10,
    )
    row(
        "4 storm",
        "subscribe commands/s",
        "/s",
        lambda f: f["subscribes_per_s"],
        ">= 5000",
        lambda v, r: v >= 5000,
    )
    row(
        "4 storm",
        f"{report['options']['clients']} clients reconnect+resume",
        "s",
        lambda f: f["reconnect_s"],
        "<= 10 s",
        lambda v, r: v <= 10,
    )
    shim = report.get("shim", {})
    if shim:
        c = shim["baseline_c_per_s"]
        rows.append(
            {
                "scenario": "5 shim",
                "figure": "rows/s with confirms",
                "unit": "/s",
                "bugzfeed": shim["rows_per_s"],
                "baseline_a": None,
                "baseline_b": None,
                "baseline": c,
                "ratio": ratio(shim["rows_per_s"], c),
                "target": ">= 3000 and >= 0.4x C",
                "met": shim["rows_per_s"] >= 3000 and shim["rows_per_s"] / c >= 0.4,
            }
        )
        backlog = shim["backlog"]
        rows.append(
            {
                "scenario": "5 shim",
                "figure": f"{backlog['rows']}-row backlog drained",
                "unit": "s",
                "bugzfeed": backlog["seconds_from_insert"],
                "baseline_a": None,
                "baseline_b": None,
                "baseline": None,
                "ratio": None,
                "target": "<= 60 s",
                "met": backlog["seconds_from_insert"] <= 60,
            }
        )
        small = shim["small_backlog"]
        rows.append(
            {
                "scenario": "5 shim",
                "figure": f"peak RSS, {small['rows']} vs {backlog['rows']} rows",
                "unit": "MB",
                "bugzfeed": backlog["peak_rss_bytes"] / 1e6,
                "baseline_a": None,
                "baseline_b": None,
                "baseline": small["peak_rss_bytes"] / 1e6,
                "ratio": ratio(backlog["peak_rss_bytes"], small["peak_rss_bytes"]),
                "target": "bounded by batch size (ratio ~1)",
                "met": backlog["peak_rss_bytes"] <= small["peak_rss_bytes"] * 1.25,
            }
        )
    return rows


def formatTable(rows: List[Dict[str, Any]]) -> str:
    def number(value: Optional[float]) -> str:
        if value is None:
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"

    header = ["scenario", "figure", "unit", "bugzfeed", "base A", "base B", "baseline", "ratio"]
    header += ["target", "met"]
    former = any(r.get("bugzfeed_autobahn") is not None for r in rows)
    if former:
        header += ["former path", "its ratio"]
    lines = [header]
    for r in rows:
        line = [
            r["scenario"],
            r["figure"],
            r["unit"],
            number(r["bugzfeed"]),
            number(r["baseline_a"]),
            number(r["baseline_b"]),
            number(r["baseline"]),
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
            r["target"],
            {True: "yes", False: "NO", None: "-"}[r["met"]],
        ]
        if former:
            line.append(number(r.get("bugzfeed_autobahn")))
            line.append("-" if r.get("autobahn_ratio") is None else f"{r['autobahn_ratio']:.2f}x")
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |")
        if n == 0:
            out.append("| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(out)


def parseArguments(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Bugzfeed's benchmark: scenarios 1-5 of issue 4 beside baselines"
        " measured in the same run. Defaults are the issue's sizes.",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds), for tests")
    for name, default in FULL.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=type(default),
            default=None,
            help=f"(default {default})",
        )
    parser.add_argument("--procs", type=int, default=2, help="client processes (default 2)")
    parser.add_argument(
        "--servers",
        default="bugzfeed,baseline_a,baseline_b",
        help="comma-separated: bugzfeed, baseline_a, baseline_b, and bugzfeed_autobahn"
        " (bugzfeed with its former write path, bench/autobahn_write.py)",
    )
    parser.add_argument(
        "--baseline-feed",
        choices=("envelope", "ids"),
        default="envelope",
        help="what each update line to baselines A and B carries besides its bug and seq:"
        " the Pulse envelope bugzfeed reads (default; as many updates per read as bugzfeed"
        " gets) or nothing (thousands per read, so A and B batch several frames per send)",
    )
    parser.add_argument(
        "--scenarios",
        default="1,2,3,4,5,6",
        help="which of 1-6 (default all; 6: a starting node reads back --replay messages)",
    )
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument(
        "--profile", action="store_true", help="sample each server with py-spy during fan-out"
    )
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--out", default=None, help="JSON path (default results/<time>.json)")
    options = parser.parse_args(argv)
    sizes = SMOKE if options.smoke else FULL
    for name, default in sizes.items():
        if getattr(options, name) is None:
            setattr(options, name, default)
    options.scenarios = set(options.scenarios.split(","))
    return options


def main(argv: Optional[List[str]] = None) -> int:
    options = parseArguments(argv)
    limit = raiseFileLimit()
    if limit < options.clients + 1000:
        log(f"warning: open-files hard limit {limit} is low for {options.clients} clients")
    run = Run(options)
    started = datetime.now(timezone.utc)
    report: Dict[str, Any] = {
        "command": "bench/run " + " ".join(sys.argv[1:] if argv is None else argv),
        "started": started.isoformat(timespec="seconds"),
        "run_id": run.runId,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "python": sys.version.split()[0],
            "open_files_limit": limit,
        },
        "options": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(options).items()},
        "servers": {},
    }
    baselines = {"baseline_a": BaselineA, "baseline_b": BaselineB}
    serverScenarios = options.scenarios & {"1", "2", "3", "4"}
    try:
        if serverScenarios:
            for name in options.servers.split(","):
                log(f"{name}: starting")
                if name == "bugzfeed":
                    server: Server = BugzfeedServer(run.logDir, run.exchange)
                elif name == "bugzfeed_autobahn":
                    # A feed of its own: the two must not share a stream.
                    server = AutobahnWriteServer(run.logDir, run.exchange + ".autobahn")
                    run.extraExchanges.append(server.exchange)
                else:
                    server = baselines[name](run.logDir, options.baseline_feed)
                try:
                    report["servers"][name] = run.serverScenarios(server)
                finally:
                    server.stop()
        if "5" in options.scenarios:
            report["shim"] = run.shimScenario()
        if "6" in options.scenarios:
            report["replay"] = run.replayScenario()
    finally:
        run.cleanUp()
    report["seconds"] = (datetime.now(timezone.utc) - started).total_seconds()
    rows = verdicts(report)
    report["table"] = rows
    table = formatTable(rows)
    print(table)
    out = options.out or os.path.join(
        options.results,
        started.strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if options.smoke else "") + ".json",
    )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
