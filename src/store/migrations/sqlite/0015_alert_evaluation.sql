-- The last evaluation of every alert instance, replaced whole by the instance that evaluates, so
-- that every instance on the database serves the same alerts. `seq` orders them most urgent
-- first; when the evaluation ran is `meta.alerts_evaluated_at_unix_ns`.
CREATE TABLE alert_evaluation (
    seq              INTEGER PRIMARY KEY,
    rule_key         TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    service          TEXT    NOT NULL,
    endpoint         TEXT    NOT NULL,
    metric           TEXT    NOT NULL,
    budget           REAL    NOT NULL,
    observed         REAL,
    window_ns        INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    since_unix_ns    INTEGER NOT NULL,
    summary          TEXT    NOT NULL,
    slo_objective    REAL,
    slo_threshold_ms REAL
);

-- An SLO's window pairs in that evaluation, in order.
CREATE TABLE alert_evaluation_burn (
    seq        INTEGER NOT NULL,
    pair       INTEGER NOT NULL,
    severity   TEXT    NOT NULL,
    long_ns    INTEGER NOT NULL,
    short_ns   INTEGER NOT NULL,
    factor     REAL    NOT NULL,
    long_burn  REAL    NOT NULL,
    short_burn REAL    NOT NULL,
    short_requests INTEGER NOT NULL,
    firing     BOOLEAN NOT NULL,
    PRIMARY KEY (seq, pair)
) WITHOUT ROWID;
