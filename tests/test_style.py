"""
House rules that a reviewer would otherwise have to remember.
"""

import os
import re

from twisted.trial.unittest import SynchronousTestCase

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
