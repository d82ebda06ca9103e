"""
A smoke run of the benchmark (C{bench/run --smoke}): tiny sizes, so that the
harness keeps working. It checks that every scenario produced its figures,
not how fast anything was: the suite does not gate on speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Dict, Optional, Tuple

import psycopg2
from twisted.trial.unittest import SynchronousTestCase

from tests.integration import PG_HOST, PG_USER, requireServices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVERS = ("bugzfeed", "baseline_a", "baseline_b")


def smokeRun() -> Tuple[str, Dict[str, Any]]:
    """
    Run C{bench/harness.py --smoke} (what C{bench/run --smoke} runs after
    installing).

    @return: What it printed, and the JSON it wrote.
    """
    directory = tempfile.mkdtemp(prefix="bugzfeed-bench-")
    out = os.path.join(directory, "smoke.json")
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", "harness.py"),
            "--smoke",
            "--results",
            directory,
            "--out",
            out,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode:
        raise AssertionError(f"bench/harness.py --smoke failed: {result.stderr[-3000:]}")
    with open(out) as f:
        return result.stdout, json.load(f)


class BenchSmokeTests(SynchronousTestCase):
    # One smoke run serves every test here: it takes some seconds.
    _smoke: Optional[Tuple[str, Dict[str, Any]]] = None

    def setUp(self) -> None:
        requireServices()
        if BenchSmokeTests._smoke is None:
            BenchSmokeTests._smoke = smokeRun()
        self.output, self.report = BenchSmokeTests._smoke

    def test_everyScenarioHasItsFigures(self) -> None:
        """
        Each server has scenarios 1, 2 and 4 measured (bugzfeed also 3),
        the shim scenario has its baseline C beside it, a starting node's
        replay of the stream (6) was timed, and the printed
        table has a row with our figure for every target.
        """
        for name in SERVERS:
            figures = self.report["servers"][name]
            for key in ("rss_per_connection_bytes", "subscribes_per_s", "reconnect_s"):
                self.assertGreater(figures[key], 0, f"{name} {key}")
            self.assertGreater(figures["burst"]["deliveries_per_s"], 0)
            # Tiny sizes may take less CPU than /proc's 10 ms tick can show.
            self.assertGreaterEqual(figures["burst"]["cpu_us_per_delivery"], 0)
            self.assertIsNotNone(figures["paced"]["p99_ms"])
        ours = self.report["servers"]["bugzfeed"]
        for kind in ("e2e_trigger", "e2e_polling"):
            self.assertEqual(ours[kind]["delivered"], ours[kind]["expected"], kind)
            self.assertIsNotNone(ours[kind]["p50_ms"])
        shim = self.report["shim"]
        for key in ("baseline_c_per_s", "baseline_c_confirms_per_s", "rows_per_s"):
            self.assertGreater(shim[key], 0, key)
        replay = self.report["replay"]
        self.assertEqual(replay["messages"], 300)
        self.assertGreater(replay["messages_per_s"], 0)
        self.assertEqual(len(self.report["table"]), 12)
        for row in self.report["table"]:
            self.assertIsNotNone(row["bugzfeed"], row["figure"])
            self.assertIsNotNone(row["met"], row["figure"])
            self.assertIn(row["figure"], self.output)

    def test_nothingLost(self) -> None:
        """
        Every server delivered each update of the burst to every client
        subscribed to its bug, and answered every subscribe with ok; every
        resume with C{after} was recovered.
        """
        for name in SERVERS:
            figures = self.report["servers"][name]
            for burst in figures["bursts"]:
                self.assertEqual(burst["delivered"], burst["expected"], name)
            self.assertEqual(figures["paced"]["unmatched"], 0, name)
            self.assertEqual(figures["error_replies"], 0, name)
            self.assertEqual(figures["resumes_not_recovered"], 0, name)

    def test_cleanedUp(self) -> None:
        """
        The run's tables are dropped afterwards.
        """
        connection = psycopg2.connect(host=PG_HOST, user=PG_USER, dbname="bugzfeed_bench")
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_tables WHERE tablename LIKE %s",
                    (f"push_notify_bench_{self.report['run_id']}%",),
                )
                self.assertEqual(cursor.fetchone()[0], 0)
        finally:
            connection.close()
