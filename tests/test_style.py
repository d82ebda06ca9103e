"""
House rules that a reviewer would otherwise have to remember.
"""

import os
import re
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import bugzfeed

PACKAGE = os.path.dirname(os.path.abspath(bugzfeed.__file__))
#: The composition roots: the only modules that may name the global reactor.
COMPOSITION_ROOTS = {"tap.py", "shimtap.py"}


class StyleTests(SynchronousTestCase):
    def test_globalReactorOnlyInCompositionRoots(self) -> None:
        """
        Only C{makeService} names the global reactor; everything else is
        handed its reactor or clock.
        """
        offenders = []
        for name in sorted(os.listdir(PACKAGE)):
            if not name.endswith(".py") or name in COMPOSITION_ROOTS:
                continue
            with open(os.path.join(PACKAGE, name)) as f:
                source = f.read()
            if re.search(r"from twisted\.internet import .*\breactor\b", source) or re.search(
                r"\btime\.time\(|datetime\.now\(|datetime\.utcnow\(", source
            ):
                offenders.append(name)
        self.assertEqual(offenders, [])

    def test_shimAndServerDoNotImportEachOther(self) -> None:
        """
        The shim's modules and the server's never import each other; both
        may use the shared ones (model, amqp, config, waiting, web).
        """
        shim = {"shim", "shimtap", "confirms", "schema", "shimmetrics"}
        server = {
            "tap",
            "consumer",
            "protocol",
            "feed",
            "messages",
            "history",
            "subscriptions",
            "metrics",
        }
        crossings = []
        for side, other in [(shim, server), (server, shim)]:
            for name in sorted(side):
                with open(os.path.join(PACKAGE, name + ".py")) as f:
                    imported = set(re.findall(r"^from bugzfeed\.(\w+) import", f.read(), re.M))
                crossings.extend(f"{name} -> {module}" for module in sorted(imported & other))
        self.assertEqual(crossings, [])

    def run_tool(self, *argv: str) -> str:
        """
        Run a checker on the tree; skip when it is not installed, except
        under CI.
        """
        try:
            __import__(argv[0].replace("-", "_"))
        except ImportError:
            if os.environ.get("CI") == "true":
                raise
            raise SkipTest(f"{argv[0]} is not installed (pip install -e .[test])")
        result = subprocess.run(
            [sys.executable, "-m", *argv],
            cwd=os.path.dirname(PACKAGE),
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        return result.stdout

    def test_typesCheck(self) -> None:
        """
        The package and the benchmark are mypy clean (settings in pyproject.toml).
        """
        self.run_tool("mypy", "bugzfeed", "bench")

    def test_lintAndFormat(self) -> None:
        """
        ruff finds nothing to fix, and the code is formatted.
        """
        self.run_tool("ruff", "check", "bugzfeed", "tests", "scripts", "tools", "twisted", "bench")
        self.run_tool(
            "ruff", "format", "--check", "bugzfeed", "tests", "scripts", "tools", "twisted", "bench"
        )
