-- What `Store::stats` reports, kept by the writes themselves so that reading it scans no table
-- (monitoring reads it on every scrape). Each writing transaction adds its changes to one of 16
-- slots, picked by its server process, so concurrent writers seldom wait for one row; a reader
-- sums the slots. Retention subtracts what it drops.
CREATE TABLE store_counts (
    slot     INT    PRIMARY KEY,
    blocks   BIGINT NOT NULL,
    spans    BIGINT NOT NULL,
    requests BIGINT NOT NULL
);
INSERT INTO store_counts (slot, blocks, spans, requests)
    SELECT 0, COUNT(*), COALESCE(SUM(n_spans), 0), (SELECT COUNT(*) FROM requests) FROM span_blocks;
