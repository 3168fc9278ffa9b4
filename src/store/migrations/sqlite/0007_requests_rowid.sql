-- Request rows move to a rowid table. As a WITHOUT ROWID table keyed by the random trace id,
-- every insert landed at a random place in a tree holding whole rows, splitting pages and
-- writing about twice the bytes (measured in BENCHMARKS.md). Appended by rowid, the rows stay
-- packed; only the small index entries land at random places.
CREATE TABLE requests_by_rowid (
    trace_id        BLOB    NOT NULL,
    span_id         BLOB    NOT NULL,
    endpoint_id     INTEGER NOT NULL,
    version         TEXT    NOT NULL,
    start_unix_ns   INTEGER NOT NULL,
    duration_ns     INTEGER NOT NULL,
    error           INTEGER NOT NULL,
    db_ns           INTEGER NOT NULL,
    cache_ns        INTEGER NOT NULL,
    network_ns      INTEGER NOT NULL,
    messaging_ns    INTEGER NOT NULL,
    cpu_ns          INTEGER NOT NULL,
    wait_ns         INTEGER NOT NULL,
    n_db_calls      INTEGER NOT NULL,
    last_block_id   INTEGER NOT NULL,
    resource_id     INTEGER NOT NULL DEFAULT 0
);
INSERT INTO requests_by_rowid
SELECT trace_id, span_id, endpoint_id, version, start_unix_ns, duration_ns, error, db_ns, cache_ns,
       network_ns, messaging_ns, cpu_ns, wait_ns, n_db_calls, last_block_id, resource_id
FROM requests ORDER BY start_unix_ns;
DROP TABLE requests;
ALTER TABLE requests_by_rowid RENAME TO requests;
CREATE UNIQUE INDEX requests_by_trace ON requests (trace_id, span_id);
CREATE INDEX requests_by_endpoint ON requests (endpoint_id, start_unix_ns);
CREATE INDEX requests_by_start ON requests (start_unix_ns);
CREATE INDEX requests_by_duration ON requests (duration_ns);
CREATE INDEX requests_by_endpoint_duration ON requests (endpoint_id, duration_ns);
