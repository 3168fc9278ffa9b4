-- Self time of in-process spans without a CPU measurement (`cpu.time_ns`) is `untraced`, never
-- `cpu`. Before this migration it was stored as cpu. A request or rollup with no wait at all had
-- no CPU measured (measured self time always leaves some wait), so its cpu becomes untraced, and
-- the CPU hot spots it raised are taken back; rows with wait keep their measured split.
ALTER TABLE requests ADD COLUMN untraced_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN untraced_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hourly_rollups ADD COLUMN untraced_ns INTEGER NOT NULL DEFAULT 0;

UPDATE requests SET untraced_ns = cpu_ns, cpu_ns = 0 WHERE wait_ns = 0 AND cpu_ns > 0;

UPDATE rollup_operations SET category = 'untraced'
WHERE category = 'cpu' AND EXISTS (
    SELECT 1 FROM rollups r WHERE r.endpoint_id = rollup_operations.endpoint_id
    AND r.version = rollup_operations.version AND r.minute = rollup_operations.minute
    AND r.wait_ns = 0);
DELETE FROM rollup_findings
WHERE kind = 'cpu_hotspot' AND EXISTS (
    SELECT 1 FROM rollups r WHERE r.endpoint_id = rollup_findings.endpoint_id
    AND r.version = rollup_findings.version AND r.minute = rollup_findings.minute
    AND r.wait_ns = 0);
UPDATE rollups SET untraced_ns = cpu_ns, cpu_ns = 0 WHERE wait_ns = 0 AND cpu_ns > 0;

UPDATE hourly_rollup_operations SET category = 'untraced'
WHERE category = 'cpu' AND EXISTS (
    SELECT 1 FROM hourly_rollups r WHERE r.endpoint_id = hourly_rollup_operations.endpoint_id
    AND r.version = hourly_rollup_operations.version AND r.minute = hourly_rollup_operations.minute
    AND r.wait_ns = 0);
DELETE FROM hourly_rollup_findings
WHERE kind = 'cpu_hotspot' AND EXISTS (
    SELECT 1 FROM hourly_rollups r WHERE r.endpoint_id = hourly_rollup_findings.endpoint_id
    AND r.version = hourly_rollup_findings.version AND r.minute = hourly_rollup_findings.minute
    AND r.wait_ns = 0);
UPDATE hourly_rollups SET untraced_ns = cpu_ns, cpu_ns = 0 WHERE wait_ns = 0 AND cpu_ns > 0;
