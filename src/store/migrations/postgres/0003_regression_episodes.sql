-- Regressions are re-evaluated as the candidate's traffic grows: an event is an episode that
-- stays open while the regression holds and is resolved when it no longer does, and the same
-- (endpoint, baseline, candidate) may regress again later as a new event.

-- The candidate's requests the last evaluation saw: the next one waits for more data. Pairs
-- checked before this migration read 0 and are evaluated again.
ALTER TABLE regression_checks ADD COLUMN candidate_requests BIGINT NOT NULL DEFAULT 0;

-- One event per metric, ever, no longer: a regression that comes back is a new event.
ALTER TABLE regressions DROP CONSTRAINT regressions_endpoint_id_baseline_candidate_metric_key;

ALTER TABLE regressions
    -- The 95% confidence intervals of the metric that decided (NULL for events raised before).
    ADD COLUMN baseline_low_ns       BIGINT,
    ADD COLUMN baseline_high_ns      BIGINT,
    ADD COLUMN candidate_low_ns      BIGINT,
    ADD COLUMN candidate_high_ns     BIGINT,
    -- Set when the regression no longer held.
    ADD COLUMN resolved_unix_ns      BIGINT,
    ADD COLUMN resolved_candidate_ns BIGINT,
    ADD COLUMN resolved_summary      TEXT,
    -- Resolutions numbered in commit order: the cursor alert senders page resolutions with.
    ADD COLUMN resolution_seq        BIGINT;

-- At most one open event per (endpoint, baseline, candidate).
CREATE UNIQUE INDEX regressions_open ON regressions (endpoint_id, baseline, candidate)
    WHERE resolved_unix_ns IS NULL;
CREATE UNIQUE INDEX regressions_by_resolution ON regressions (resolution_seq);
