-- The table Bugzilla writes a row to whenever a bug changes.
CREATE TABLE IF NOT EXISTS "push_notify" (
    id serial PRIMARY KEY,
    bug_id integer NOT NULL UNIQUE,
    delta_ts timestamp NOT NULL
);
