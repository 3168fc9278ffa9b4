-- Rows of `trace_blocks` are now written in large sorted batches, the newest held in memory until
-- then (src/store/sqlite/recent_traces.rs). This row names the newest block whose rows are in the
-- table; on open, the rows of later blocks are read back from the blocks. Every block stored
-- before this migration has its rows in the table.
INSERT INTO meta (key, value)
SELECT 'trace_index_through', COALESCE(MAX(id), 0) FROM span_blocks;
