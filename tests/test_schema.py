"""
Tests for L{bugzfeed.schema} and the SQL shipped in C{sql/}.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.schema import notifyChannel, quoteTable, tableSQL, triggerSQL

SQL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sql")


class SchemaTests(SynchronousTestCase):
    def test_shippedSQLMatchesRendering(self) -> None:
        """
        C{sql/} holds exactly what the shim would install for the default
        table (regenerate with bugzfeed.schema if this fails).
        """
        for name, rendered in [
            ("push_notify.sql", tableSQL()),
            ("notify_trigger.sql", triggerSQL()),
        ]:
            with open(os.path.join(SQL, name)) as f:
                self.assertEqual(f.read(), rendered, name)

    def test_quoting(self) -> None:
        """
        Table names are quoted identifiers, optionally schema-qualified;
        anything else is refused.
        """
        self.assertEqual(quoteTable("push_notify"), '"push_notify"')
        self.assertEqual(quoteTable("bugs.push_notify"), '"bugs"."push_notify"')
        for bad in ["", "a.b.c", 'x"y', "x; DROP TABLE bugs", "1abc", "a-b"]:
            self.assertRaises(ValueError, quoteTable, bad)

    def test_channelIsUnqualifiedName(self) -> None:
        """
        The trigger notifies on the table's own name, which the shim listens
        on.
        """
        self.assertEqual(notifyChannel("bugs.push_notify"), "push_notify")
        self.assertIn("pg_notify('changes'", triggerSQL("s.changes"))
        self.assertIn('ON "s"."changes"', triggerSQL("s.changes"))
