-- Hourly rollups: the same sums as the per-minute ones, one row per (endpoint, version, hour),
-- where `minute` is the hour's first minute. Long windows (a day, a week, an SLO's month) read
-- these for their whole hours and minute rows only for the partial hours at their edges: a day
-- of one endpoint is 24 rows instead of 1,440.
CREATE TABLE hourly_rollups (
    endpoint_id     INTEGER NOT NULL,
    version         TEXT    NOT NULL,
    minute          INTEGER NOT NULL,
    requests        INTEGER NOT NULL,
    errors          INTEGER NOT NULL,
    duration_sum_ns INTEGER NOT NULL,
    sketch          BLOB    NOT NULL,
    db_ns           INTEGER NOT NULL,
    cache_ns        INTEGER NOT NULL,
    network_ns      INTEGER NOT NULL,
    messaging_ns    INTEGER NOT NULL,
    cpu_ns          INTEGER NOT NULL,
    wait_ns         INTEGER NOT NULL,
    db_calls        INTEGER NOT NULL,
    duration_sq_sum TEXT    NOT NULL DEFAULT '0',
    PRIMARY KEY (endpoint_id, version, minute)
) WITHOUT ROWID;
CREATE INDEX hourly_rollups_by_minute ON hourly_rollups (minute);

CREATE TABLE hourly_rollup_operations (
    endpoint_id INTEGER NOT NULL,
    version     TEXT    NOT NULL,
    minute      INTEGER NOT NULL,
    category    TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    calls       INTEGER NOT NULL,
    total_ns    INTEGER NOT NULL,
    critical_ns INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, version, minute, category, name)
) WITHOUT ROWID;

CREATE TABLE hourly_rollup_findings (
    endpoint_id INTEGER NOT NULL,
    version     TEXT    NOT NULL,
    minute      INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    requests    INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    saving_ns   INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, version, minute, kind, name)
) WITHOUT ROWID;
