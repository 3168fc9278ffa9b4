-- Retention deletes the index rows of expired blocks by block id range; without this index each
-- batch would scan the whole trace index.
CREATE INDEX trace_blocks_by_block ON trace_blocks (block_id);
