"""
Turn trial's closing line (C{PASSED (successes=5)}, C{FAILED (failures=1,
errors=2, successes=3)}) into one a machine reads: C{N passed, N failed}.
Exits non-zero when trial printed no closing line at all.
"""

import re
import sys


def summarize(output: str) -> str:
    verdicts = re.findall(r"^(PASSED|FAILED) \(([^)]*)\)$", output, re.MULTILINE)
    if not verdicts:
        raise ValueError("trial printed no PASSED or FAILED line")
    counts = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", verdicts[-1][1])}
    passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
    failed = (
        counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
    )
    return f"{passed} passed, {failed} failed, {counts.get('skips', 0)} skipped"


if __name__ == "__main__":
    with open(sys.argv[1], errors="replace") as f:
        try:
            print(summarize(f.read()))
        except ValueError as e:
            print(f"0 passed, 1 failed ({e})")
            sys.exit(1)
