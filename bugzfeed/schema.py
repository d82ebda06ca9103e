"""
SQL for the tracker's C{push_notify} table and the optional trigger that
wakes the shim, for any table name.

C{sql/} holds these rendered for the default table; a test keeps them equal.
"""

from __future__ import annotations

import re

DEFAULT_TABLE = "push_notify"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quoteTable(table: str) -> str:
    """
    Quote a table name, optionally schema-qualified (C{bugs.push_notify}).

    @raise ValueError: If C{table} is not made of plain identifiers.
    """
    parts = table.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.match(part) for part in parts):
        raise ValueError(
            f"invalid table name {table!r}: use letters, digits and _ (optionally schema.table)"
        )
    return ".".join(f'"{part}"' for part in parts)


def notifyChannel(table: str) -> str:
    """
    @return: The LISTEN/NOTIFY channel the trigger signals: the table's
        unqualified name.
    """
    quoteTable(table)
    return table.split(".")[-1]


def tableSQL(table: str = DEFAULT_TABLE) -> str:
    """
    @return: SQL that creates Bugzilla's C{push_notify} table if it is
        absent.
    """
    return (
        f"-- The table Bugzilla writes a row to whenever a bug changes.\n"
        f"CREATE TABLE IF NOT EXISTS {quoteTable(table)} (\n"
        f"    id serial PRIMARY KEY,\n"
        f"    bug_id integer NOT NULL UNIQUE,\n"
        f"    delta_ts timestamp NOT NULL\n"
        f");\n"
    )


def triggerSQL(table: str = DEFAULT_TABLE) -> str:
    """
    @return: SQL that installs (or replaces) a trigger sending a
        notification on the table's channel for every insert or update, so
        the shim wakes at once instead of at its next poll.
    """
    quoted = quoteTable(table)
    channel = notifyChannel(table)
    function = f'"bugzfeed_notify_{channel}"'
    return (
        f"-- Wakes bugzfeed-shim on every change; the table stays the truth.\n"
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger AS $$\n"
        f"BEGIN\n"
        f"    PERFORM pg_notify('{channel}', NEW.id::text);\n"
        f"    RETURN NEW;\n"
        f"END;\n"
        f"$$ LANGUAGE plpgsql;\n"
        f'CREATE OR REPLACE TRIGGER "bugzfeed_notify"\n'
        f"    AFTER INSERT OR UPDATE ON {quoted}\n"
        f"    FOR EACH ROW EXECUTE FUNCTION {function}();\n"
    )
