-- Version comparison and the regression finder.

-- Summed squared durations (ns², a decimal string: it outgrows 64 bits), for the confidence
-- interval of a mean difference. Rollups written before this migration hold '0' and give no
-- interval.
ALTER TABLE rollups ADD COLUMN duration_sq_sum TEXT NOT NULL DEFAULT '0';

-- Resources are interned like endpoints: a request row carries the id of its span's resource,
-- so comparisons by any resource attribute (deployment.environment, host.name, ...) can select
-- request rows without storing attributes per request. `attributes` is the canonical form:
-- "key=value" lines, sorted.
CREATE TABLE resources (
    id         INTEGER PRIMARY KEY,
    service    TEXT NOT NULL,
    attributes TEXT NOT NULL UNIQUE
);

-- 0: the request's resource is unknown (analysed before this migration, or past the cap).
ALTER TABLE requests ADD COLUMN resource_id INTEGER NOT NULL DEFAULT 0;

-- Which (endpoint, baseline, candidate) the regression finder has evaluated: each once.
CREATE TABLE regression_checks (
    endpoint_id     INTEGER NOT NULL,
    baseline        TEXT    NOT NULL,
    candidate       TEXT    NOT NULL,
    checked_unix_ns INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, baseline, candidate)
) WITHOUT ROWID;

-- Regressions found, in detection order; the id is the cursor alert senders page with.
CREATE TABLE regressions (
    id                  INTEGER PRIMARY KEY,
    detected_unix_ns    INTEGER NOT NULL,
    endpoint_id         INTEGER NOT NULL,
    baseline            TEXT    NOT NULL,
    candidate           TEXT    NOT NULL,
    metric              TEXT    NOT NULL,
    baseline_ns         INTEGER NOT NULL,
    candidate_ns        INTEGER NOT NULL,
    baseline_requests   INTEGER NOT NULL,
    candidate_requests  INTEGER NOT NULL,
    mean_delta_ns       INTEGER NOT NULL,
    mean_delta_low_ns   INTEGER,
    mean_delta_high_ns  INTEGER,
    summary             TEXT    NOT NULL,
    UNIQUE (endpoint_id, baseline, candidate, metric)
);
