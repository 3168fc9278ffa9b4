-- The PostgreSQL schema: the SQLite schema after its migrations 0001-0005, with PostgreSQL types,
-- plus what several instances sharing one database need (pending_traces).
--
-- span_blocks, trace_blocks and requests are partitioned by time, one partition per UTC day
-- (named <table>_dYYYYMMDD). The store creates the partitions of the coming days at start and
-- from its maintenance task; retention drops whole partitions. A DEFAULT partition takes rows
-- whose time falls outside every day partition (clock skew, replayed old data); retention deletes
-- from it row by row.

-- Spans are stored in blocks: one row per accepted export, holding the export's spans as a
-- zstd-compressed OTLP ExportTraceServiceRequest. Ids come from a sequence shared by every
-- instance, so they are unique across instances (not ordered by commit).
CREATE SEQUENCE span_blocks_id_seq;
CREATE TABLE span_blocks (
    id                BIGINT NOT NULL DEFAULT nextval('span_blocks_id_seq'),
    received_unix_ns  BIGINT NOT NULL,
    min_start_unix_ns BIGINT NOT NULL,
    n_spans           BIGINT NOT NULL,
    data              BYTEA  NOT NULL,
    PRIMARY KEY (id, received_unix_ns)
) PARTITION BY RANGE (received_unix_ns);
CREATE TABLE span_blocks_default PARTITION OF span_blocks DEFAULT;

-- Which blocks hold spans of a trace; carries the block's time so it partitions like the blocks.
CREATE TABLE trace_blocks (
    trace_id         BYTEA  NOT NULL,
    block_id         BIGINT NOT NULL,
    received_unix_ns BIGINT NOT NULL,
    PRIMARY KEY (trace_id, block_id, received_unix_ns)
) PARTITION BY RANGE (received_unix_ns);
CREATE TABLE trace_blocks_default PARTITION OF trace_blocks DEFAULT;

-- Traces with spans not yet analysed: written with their blocks, in the same transaction, and
-- claimed by one instance's analyzer at a time (FOR UPDATE SKIP LOCKED). A claim expires at
-- claimed_until, so a trace claimed by an instance that died is analysed by another.
-- block_ids lists exactly the blocks not yet analysed (block ids come from a sequence and are
-- not in commit order across instances, so "newer than the last analysed id" would not do); an
-- analysis removes the ids it saw, and the row goes once none is left.
CREATE TABLE pending_traces (
    trace_id           BYTEA    PRIMARY KEY,
    first_seen_unix_ns BIGINT   NOT NULL,
    block_ids          BIGINT[] NOT NULL,
    claim              BIGINT,
    claimed_until      BIGINT
);
CREATE INDEX pending_traces_by_first_seen ON pending_traces (first_seen_unix_ns);

CREATE TABLE endpoints (
    id       BIGSERIAL PRIMARY KEY,
    service  TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    UNIQUE (service, endpoint)
);

CREATE TABLE resources (
    id         BIGSERIAL PRIMARY KEY,
    service    TEXT NOT NULL,
    attributes TEXT NOT NULL UNIQUE
);

CREATE TABLE requests (
    trace_id        BYTEA   NOT NULL,
    span_id         BYTEA   NOT NULL,
    endpoint_id     BIGINT  NOT NULL,
    version         TEXT    NOT NULL,
    start_unix_ns   BIGINT  NOT NULL,
    duration_ns     BIGINT  NOT NULL,
    error           BOOLEAN NOT NULL,
    db_ns           BIGINT  NOT NULL,
    cache_ns        BIGINT  NOT NULL,
    network_ns      BIGINT  NOT NULL,
    messaging_ns    BIGINT  NOT NULL,
    cpu_ns          BIGINT  NOT NULL,
    wait_ns         BIGINT  NOT NULL,
    n_db_calls      BIGINT  NOT NULL,
    last_block_id   BIGINT  NOT NULL,
    resource_id     BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (trace_id, span_id, start_unix_ns)
) PARTITION BY RANGE (start_unix_ns);
CREATE TABLE requests_default PARTITION OF requests DEFAULT;
CREATE INDEX requests_by_endpoint ON requests (endpoint_id, start_unix_ns);
CREATE INDEX requests_by_start ON requests (start_unix_ns);
CREATE INDEX requests_by_duration ON requests (duration_ns);
CREATE INDEX requests_by_endpoint_duration ON requests (endpoint_id, duration_ns);

-- Rollups: the sum of squared durations outgrows 64 bits, hence NUMERIC (SQLite keeps it as
-- decimal text).
CREATE TABLE rollups (
    endpoint_id     BIGINT  NOT NULL,
    version         TEXT    NOT NULL,
    minute          BIGINT  NOT NULL,
    requests        BIGINT  NOT NULL,
    errors          BIGINT  NOT NULL,
    duration_sum_ns BIGINT  NOT NULL,
    sketch          BYTEA   NOT NULL,
    db_ns           BIGINT  NOT NULL,
    cache_ns        BIGINT  NOT NULL,
    network_ns      BIGINT  NOT NULL,
    messaging_ns    BIGINT  NOT NULL,
    cpu_ns          BIGINT  NOT NULL,
    wait_ns         BIGINT  NOT NULL,
    db_calls        BIGINT  NOT NULL,
    duration_sq_sum NUMERIC NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint_id, version, minute)
);
CREATE INDEX rollups_by_minute ON rollups (minute);

CREATE TABLE rollup_operations (
    endpoint_id BIGINT NOT NULL,
    version     TEXT   NOT NULL,
    minute      BIGINT NOT NULL,
    category    TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    calls       BIGINT NOT NULL,
    total_ns    BIGINT NOT NULL,
    critical_ns BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, version, minute, category, name)
);

CREATE TABLE rollup_findings (
    endpoint_id BIGINT NOT NULL,
    version     TEXT   NOT NULL,
    minute      BIGINT NOT NULL,
    kind        TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    requests    BIGINT NOT NULL,
    count       BIGINT NOT NULL,
    saving_ns   BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, version, minute, kind, name)
);

CREATE TABLE hourly_rollups (LIKE rollups INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE hourly_rollups ADD PRIMARY KEY (endpoint_id, version, minute);
CREATE INDEX hourly_rollups_by_minute ON hourly_rollups (minute);
CREATE TABLE hourly_rollup_operations (LIKE rollup_operations INCLUDING DEFAULTS);
ALTER TABLE hourly_rollup_operations ADD PRIMARY KEY (endpoint_id, version, minute, category, name);
CREATE TABLE hourly_rollup_findings (LIKE rollup_findings INCLUDING DEFAULTS);
ALTER TABLE hourly_rollup_findings ADD PRIMARY KEY (endpoint_id, version, minute, kind, name);

CREATE TABLE meta (
    key   TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE TABLE alert_states (
    rule_key      TEXT             NOT NULL,
    service       TEXT             NOT NULL,
    endpoint      TEXT             NOT NULL,
    kind          TEXT             NOT NULL,
    metric        TEXT             NOT NULL,
    state         TEXT             NOT NULL,
    since_unix_ns BIGINT           NOT NULL,
    observed      DOUBLE PRECISION,
    budget        DOUBLE PRECISION NOT NULL,
    summary       TEXT             NOT NULL,
    PRIMARY KEY (rule_key, service, endpoint)
);

CREATE TABLE alert_transitions (
    id            BIGSERIAL PRIMARY KEY,
    rule_key      TEXT   NOT NULL,
    service       TEXT   NOT NULL,
    endpoint      TEXT   NOT NULL,
    from_state    TEXT   NOT NULL,
    to_state      TEXT   NOT NULL,
    at_unix_ns    BIGINT NOT NULL,
    observed      DOUBLE PRECISION,
    summary       TEXT   NOT NULL
);
CREATE INDEX alert_transitions_by_instance ON alert_transitions (rule_key, service, endpoint, id);

CREATE TABLE alert_notifications (
    id                   BIGSERIAL PRIMARY KEY,
    transition_id        BIGINT NOT NULL,
    url                  TEXT   NOT NULL,
    format               TEXT   NOT NULL,
    payload              TEXT   NOT NULL,
    status               TEXT   NOT NULL,
    attempts             BIGINT NOT NULL,
    created_unix_ns      BIGINT NOT NULL,
    next_attempt_unix_ns BIGINT NOT NULL
);
CREATE INDEX alert_notifications_due ON alert_notifications (status, next_attempt_unix_ns);

CREATE TABLE alert_delivery_attempts (
    id              BIGSERIAL PRIMARY KEY,
    notification_id BIGINT NOT NULL,
    attempt         BIGINT NOT NULL,
    at_unix_ns      BIGINT NOT NULL,
    outcome         TEXT   NOT NULL,
    http_status     BIGINT,
    error           TEXT
);
CREATE INDEX alert_delivery_attempts_by_notification ON alert_delivery_attempts (notification_id, id);

CREATE TABLE regression_checks (
    endpoint_id     BIGINT NOT NULL,
    baseline        TEXT   NOT NULL,
    candidate       TEXT   NOT NULL,
    checked_unix_ns BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, baseline, candidate)
);

CREATE TABLE regressions (
    id                  BIGSERIAL PRIMARY KEY,
    detected_unix_ns    BIGINT NOT NULL,
    endpoint_id         BIGINT NOT NULL,
    baseline            TEXT   NOT NULL,
    candidate           TEXT   NOT NULL,
    metric              TEXT   NOT NULL,
    baseline_ns         BIGINT NOT NULL,
    candidate_ns        BIGINT NOT NULL,
    baseline_requests   BIGINT NOT NULL,
    candidate_requests  BIGINT NOT NULL,
    mean_delta_ns       BIGINT NOT NULL,
    mean_delta_low_ns   BIGINT,
    mean_delta_high_ns  BIGINT,
    summary             TEXT   NOT NULL,
    UNIQUE (endpoint_id, baseline, candidate, metric)
);
