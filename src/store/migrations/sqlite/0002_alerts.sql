-- The state of every alert instance (a rule applied to one endpoint) that ever left `ok`, so a
-- restart resumes where it was instead of firing again.
CREATE TABLE alert_states (
    rule_key      TEXT    NOT NULL,
    service       TEXT    NOT NULL,
    endpoint      TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    metric        TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    since_unix_ns INTEGER NOT NULL,
    observed      REAL,
    budget        REAL    NOT NULL,
    summary       TEXT    NOT NULL,
    PRIMARY KEY (rule_key, service, endpoint)
) WITHOUT ROWID;

-- Every transition, oldest first by id.
CREATE TABLE alert_transitions (
    id            INTEGER PRIMARY KEY,
    rule_key      TEXT    NOT NULL,
    service       TEXT    NOT NULL,
    endpoint      TEXT    NOT NULL,
    from_state    TEXT    NOT NULL,
    to_state      TEXT    NOT NULL,
    at_unix_ns    INTEGER NOT NULL,
    observed      REAL,
    summary       TEXT    NOT NULL
);
CREATE INDEX alert_transitions_by_instance ON alert_transitions (rule_key, service, endpoint, id);

-- The webhook outbox: written with its transition, in one transaction, so a notification is
-- neither lost nor sent twice across a restart. status: pending, delivered, failed, dropped.
CREATE TABLE alert_notifications (
    id                   INTEGER PRIMARY KEY,
    transition_id        INTEGER NOT NULL,
    url                  TEXT    NOT NULL,
    format               TEXT    NOT NULL,
    payload              TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    attempts             INTEGER NOT NULL,
    created_unix_ns      INTEGER NOT NULL,
    next_attempt_unix_ns INTEGER NOT NULL
);
CREATE INDEX alert_notifications_due ON alert_notifications (status, next_attempt_unix_ns);

-- Every delivery attempt. outcome: delivered, retry, failed, dropped.
CREATE TABLE alert_delivery_attempts (
    id              INTEGER PRIMARY KEY,
    notification_id INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    at_unix_ns      INTEGER NOT NULL,
    outcome         TEXT    NOT NULL,
    http_status     INTEGER,
    error           TEXT
);
CREATE INDEX alert_delivery_attempts_by_notification ON alert_delivery_attempts (notification_id, id);
