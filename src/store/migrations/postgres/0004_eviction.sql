-- Retention now deletes the endpoints and resources nothing refers to any more. Their ids come
-- from sequences, which never hand an id out twice, so an evicted id an analyzer still holds
-- never names another endpoint or process.

-- seen_until_unix_ns: every request of the resource started before it. Analysis commits raise
-- it, and retention deletes a resource once it is not after the oldest request stored: requests
-- have no index by resource, and keeping one would cost every request row an insert at one of
-- thousands of places. Existing resources count as seen until just after the newest request,
-- so they go one retention period from now at the latest.
ALTER TABLE resources ADD COLUMN seen_until_unix_ns BIGINT NOT NULL DEFAULT 0;
UPDATE resources SET seen_until_unix_ns = (SELECT COALESCE(MAX(start_unix_ns), 0) + 1 FROM requests);
