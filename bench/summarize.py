"""
Medians over several runs of bench/run: the table of each JSON file given,
figure by figure.

    .venv/bin/python bench/summarize.py bench/results/A.json bench/results/B.json ...
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any, Dict, List, Optional

from harness import formatTable


def median(values: List[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def main(paths: List[str]) -> None:
    reports = [json.load(open(path)) for path in paths]
    rows: List[Dict[str, Any]] = []
    for index, first in enumerate(reports[0]["table"]):
        same = [report["table"][index] for report in reports]
        row = dict(first)
        for key in ("bugzfeed", "baseline_a", "baseline_b", "baseline", "bugzfeed_autobahn"):
            row[key] = median([r.get(key) for r in same])
        for key in ("ratio", "autobahn_ratio"):
            row[key] = median([r.get(key) for r in same])
        mets = [r["met"] for r in same if r["met"] is not None]
        row["met"] = None if not mets else all(mets) if all(mets) == any(mets) else None
        if mets and not all(mets) and any(mets):
            row["target"] += f" (met in {sum(mets)} of {len(mets)})"
        rows.append(row)
    print(f"Medians of {len(reports)} runs: " + ", ".join(r["started"] for r in reports))
    print(formatTable(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
