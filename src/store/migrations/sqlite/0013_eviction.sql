-- Retention now deletes the endpoints and resources nothing refers to any more. An analyzer may
-- still hold an evicted id in its cache, so an id must never be handed out again: a reused one
-- would put that analyzer's requests under another endpoint or process. SQLite gives the largest
-- rowid out again once its row is deleted unless the key is AUTOINCREMENT, so both tables are
-- rebuilt with it, keeping their ids (the sequence starts at the largest one copied).
CREATE TABLE endpoints_autoincrement (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    service  TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    UNIQUE (service, endpoint)
);
INSERT INTO endpoints_autoincrement (id, service, endpoint)
SELECT id, service, endpoint FROM endpoints ORDER BY id;
DROP TABLE endpoints;
ALTER TABLE endpoints_autoincrement RENAME TO endpoints;

-- seen_until_unix_ns: every request of the resource started before it. Analysis commits raise
-- it, and retention deletes a resource once it is not after the oldest request stored: requests
-- have no index by resource, and keeping one would cost every request row an insert at one of
-- thousands of places. Existing resources count as seen until just after the newest request,
-- so they go one retention period from now at the latest.
CREATE TABLE resources_autoincrement (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    service            TEXT    NOT NULL,
    attributes         TEXT    NOT NULL UNIQUE,
    seen_until_unix_ns INTEGER NOT NULL DEFAULT 0
);
INSERT INTO resources_autoincrement (id, service, attributes, seen_until_unix_ns)
SELECT id, service, attributes, (SELECT COALESCE(MAX(start_unix_ns), 0) + 1 FROM requests)
FROM resources ORDER BY id;
DROP TABLE resources;
ALTER TABLE resources_autoincrement RENAME TO resources;
