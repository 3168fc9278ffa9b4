-- The last evaluation of every alert instance, replaced whole by the instance that evaluates, so
-- that every instance on the database serves the same alerts. `seq` orders them most urgent
-- first; when the evaluation ran is `meta.alerts_evaluated_at_unix_ns`.
CREATE TABLE alert_evaluation (
    seq              BIGINT PRIMARY KEY,
    rule_key         TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    service          TEXT    NOT NULL,
    endpoint         TEXT    NOT NULL,
    metric           TEXT    NOT NULL,
    budget           DOUBLE PRECISION NOT NULL,
    observed         DOUBLE PRECISION,
    window_ns        BIGINT  NOT NULL,
    requests         BIGINT  NOT NULL,
    state            TEXT    NOT NULL,
    since_unix_ns    BIGINT  NOT NULL,
    summary          TEXT    NOT NULL,
    slo_objective    DOUBLE PRECISION,
    slo_threshold_ms DOUBLE PRECISION
);

-- An SLO's window pairs in that evaluation, in order.
CREATE TABLE alert_evaluation_burn (
    seq        BIGINT  NOT NULL,
    pair       BIGINT  NOT NULL,
    severity   TEXT    NOT NULL,
    long_ns    BIGINT  NOT NULL,
    short_ns   BIGINT  NOT NULL,
    factor     DOUBLE PRECISION NOT NULL,
    long_burn  DOUBLE PRECISION NOT NULL,
    short_burn DOUBLE PRECISION NOT NULL,
    short_requests BIGINT  NOT NULL,
    firing     BOOLEAN NOT NULL,
    PRIMARY KEY (seq, pair)
);
