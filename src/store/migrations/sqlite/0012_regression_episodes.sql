-- Regressions are re-evaluated as the candidate's traffic grows: an event is an episode that
-- stays open while the regression holds and is resolved when it no longer does, and the same
-- (endpoint, baseline, candidate) may regress again later as a new event.

-- The candidate's requests the last evaluation saw: the next one waits for more data. Pairs
-- checked before this migration read 0 and are evaluated again.
ALTER TABLE regression_checks ADD COLUMN candidate_requests INTEGER NOT NULL DEFAULT 0;

-- The table is rebuilt because SQLite cannot drop the old UNIQUE (one event per metric, ever).
-- Ids are kept: they are the cursor alert senders page with.
CREATE TABLE regression_episodes (
    id                    INTEGER PRIMARY KEY,
    detected_unix_ns      INTEGER NOT NULL,
    endpoint_id           INTEGER NOT NULL,
    baseline              TEXT    NOT NULL,
    candidate             TEXT    NOT NULL,
    metric                TEXT    NOT NULL,
    baseline_ns           INTEGER NOT NULL,
    candidate_ns          INTEGER NOT NULL,
    baseline_requests     INTEGER NOT NULL,
    candidate_requests    INTEGER NOT NULL,
    mean_delta_ns         INTEGER NOT NULL,
    mean_delta_low_ns     INTEGER,
    mean_delta_high_ns    INTEGER,
    summary               TEXT    NOT NULL,
    -- The 95% confidence intervals of the metric that decided (NULL for events raised before).
    baseline_low_ns       INTEGER,
    baseline_high_ns      INTEGER,
    candidate_low_ns      INTEGER,
    candidate_high_ns     INTEGER,
    -- Set when the regression no longer held.
    resolved_unix_ns      INTEGER,
    resolved_candidate_ns INTEGER,
    resolved_summary      TEXT,
    -- Resolutions numbered in commit order: the cursor alert senders page resolutions with.
    resolution_seq        INTEGER
);
INSERT INTO regression_episodes (id, detected_unix_ns, endpoint_id, baseline, candidate, metric,
    baseline_ns, candidate_ns, baseline_requests, candidate_requests, mean_delta_ns,
    mean_delta_low_ns, mean_delta_high_ns, summary)
SELECT id, detected_unix_ns, endpoint_id, baseline, candidate, metric, baseline_ns, candidate_ns,
    baseline_requests, candidate_requests, mean_delta_ns, mean_delta_low_ns, mean_delta_high_ns,
    summary
FROM regressions;
DROP TABLE regressions;
ALTER TABLE regression_episodes RENAME TO regressions;

-- At most one open event per (endpoint, baseline, candidate).
CREATE UNIQUE INDEX regressions_open ON regressions (endpoint_id, baseline, candidate)
    WHERE resolved_unix_ns IS NULL;
CREATE UNIQUE INDEX regressions_by_resolution ON regressions (resolution_seq);
