-- The trace index is now keyed by an integer, the trace id's two 8-byte halves XORed
-- (`recent_traces::trace_key`), instead of the 16-byte id: each row costs two integer compares
-- and binds instead of a 16-byte blob, and readers match the full id against the request rows or
-- the decoded spans, so a rare shared key only costs a block read. XORing both halves keeps
-- 64-bit ids (upper half zero) and ids whose first bytes are a time (X-Ray) spread out.
CREATE TABLE trace_index (
    trace_key INTEGER NOT NULL,
    block_id  INTEGER NOT NULL,
    PRIMARY KEY (trace_key, block_id)
) WITHOUT ROWID;

-- SQLite has neither XOR nor hex parsing: each byte is read from two hex digits, and a ^ b is
-- a + b - 2 * (a & b) on bytes. `<<` shifts as two's complement, so the top byte lands in the sign.
WITH hexed AS (SELECT hex(trace_id) AS h, block_id FROM trace_blocks),
bytes AS (
    SELECT block_id,
        (instr('0123456789ABCDEF', substr(h, 1, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 2, 1)) - 1 AS b0,
        (instr('0123456789ABCDEF', substr(h, 3, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 4, 1)) - 1 AS b1,
        (instr('0123456789ABCDEF', substr(h, 5, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 6, 1)) - 1 AS b2,
        (instr('0123456789ABCDEF', substr(h, 7, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 8, 1)) - 1 AS b3,
        (instr('0123456789ABCDEF', substr(h, 9, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 10, 1)) - 1 AS b4,
        (instr('0123456789ABCDEF', substr(h, 11, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 12, 1)) - 1 AS b5,
        (instr('0123456789ABCDEF', substr(h, 13, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 14, 1)) - 1 AS b6,
        (instr('0123456789ABCDEF', substr(h, 15, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 16, 1)) - 1 AS b7,
        (instr('0123456789ABCDEF', substr(h, 17, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 18, 1)) - 1 AS b8,
        (instr('0123456789ABCDEF', substr(h, 19, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 20, 1)) - 1 AS b9,
        (instr('0123456789ABCDEF', substr(h, 21, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 22, 1)) - 1 AS b10,
        (instr('0123456789ABCDEF', substr(h, 23, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 24, 1)) - 1 AS b11,
        (instr('0123456789ABCDEF', substr(h, 25, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 26, 1)) - 1 AS b12,
        (instr('0123456789ABCDEF', substr(h, 27, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 28, 1)) - 1 AS b13,
        (instr('0123456789ABCDEF', substr(h, 29, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 30, 1)) - 1 AS b14,
        (instr('0123456789ABCDEF', substr(h, 31, 1)) - 1) * 16 + instr('0123456789ABCDEF', substr(h, 32, 1)) - 1 AS b15
    FROM hexed
)
INSERT OR IGNORE INTO trace_index (trace_key, block_id)
SELECT
    ((b0 + b8 - 2 * (b0 & b8)) << 56) |
    ((b1 + b9 - 2 * (b1 & b9)) << 48) |
    ((b2 + b10 - 2 * (b2 & b10)) << 40) |
    ((b3 + b11 - 2 * (b3 & b11)) << 32) |
    ((b4 + b12 - 2 * (b4 & b12)) << 24) |
    ((b5 + b13 - 2 * (b5 & b13)) << 16) |
    ((b6 + b14 - 2 * (b6 & b14)) << 8) |
    ((b7 + b15 - 2 * (b7 & b15)) << 0),
    block_id
FROM bytes;

DROP TABLE trace_blocks;

-- Retention deletes the index rows of expired blocks by block id range.
CREATE INDEX trace_index_by_block ON trace_index (block_id);
