-- Spans are stored in blocks: one row per accepted export, holding the export's spans as a
-- zstd-compressed OTLP ExportTraceServiceRequest. One row per span with several indexes cannot
-- keep up with ingest (see BENCHMARKS.md); a block costs one row and one index entry per trace.
CREATE TABLE span_blocks (
    id                INTEGER PRIMARY KEY,
    received_unix_ns  INTEGER NOT NULL,
    min_start_unix_ns INTEGER NOT NULL,
    n_spans           INTEGER NOT NULL,
    data              BLOB    NOT NULL
);

-- Which blocks hold spans of a trace: fetches a whole trace by id.
CREATE TABLE trace_blocks (
    trace_id BLOB    NOT NULL,
    block_id INTEGER NOT NULL,
    PRIMARY KEY (trace_id, block_id)
) WITHOUT ROWID;

-- Endpoints are interned: requests and rollups carry a small integer instead of two strings.
CREATE TABLE endpoints (
    id       INTEGER PRIMARY KEY,
    service  TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    UNIQUE (service, endpoint)
);

-- One row per analysed request (a SERVER span, or a root of another kind).
CREATE TABLE requests (
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
    -- The newest block whose spans this analysis saw: a later block re-analyses the trace.
    last_block_id   INTEGER NOT NULL,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX requests_by_endpoint ON requests (endpoint_id, start_unix_ns);
CREATE INDEX requests_by_start ON requests (start_unix_ns);

-- Per (endpoint, version, minute) aggregates; every overview query reads these, never spans.
CREATE TABLE rollups (
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
    PRIMARY KEY (endpoint_id, version, minute)
) WITHOUT ROWID;
CREATE INDEX rollups_by_minute ON rollups (minute);

CREATE TABLE rollup_operations (
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

CREATE TABLE rollup_findings (
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

-- Small named values, e.g. the analysis watermark (every block up to it has been analysed).
CREATE TABLE meta (
    key   TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
);
