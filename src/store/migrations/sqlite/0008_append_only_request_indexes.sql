-- Request indexes that grow at their ends. An index keyed by a random value (the trace id) or
-- by duration puts each insert on its own page once it outgrows the cache: about 4 KiB of WAL
-- per index per request, a cost per row that grew with the store (BENCHMARKS.md).

-- Request rows are found by trace through the trace's blocks: a row is indexed by the newest
-- block its analysis saw (a block of its trace), and block ids grow with time.
DROP INDEX requests_by_trace;
CREATE INDEX requests_by_block ON requests (last_block_id, trace_id);

-- Durations are indexed within bands: the number of decimal digits, then the first digit (nine
-- bands a decade). Within an endpoint's band, rows arrive in start order, so inserts append to
-- a few places per endpoint; a reader seeks band by band and filters exact durations from the
-- index itself.
ALTER TABLE requests ADD COLUMN duration_band INTEGER NOT NULL DEFAULT 0;
UPDATE requests SET duration_band = length(duration_ns) * 10 + CAST(substr(duration_ns, 1, 1) AS INTEGER);
DROP INDEX requests_by_duration;
DROP INDEX requests_by_endpoint_duration;
CREATE INDEX requests_by_band ON requests (endpoint_id, duration_band, start_unix_ns, duration_ns);
