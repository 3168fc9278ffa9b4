-- Where in the code a finding is: the location most of its requests named (code.* attributes),
-- kept as a majority vote (the location and the votes it leads by), so that rows merge without
-- a count per location. Rows written before have no location.
ALTER TABLE rollup_findings ADD COLUMN location_file TEXT;
ALTER TABLE rollup_findings ADD COLUMN location_line BIGINT;
ALTER TABLE rollup_findings ADD COLUMN location_function TEXT;
ALTER TABLE rollup_findings ADD COLUMN location_votes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hourly_rollup_findings ADD COLUMN location_file TEXT;
ALTER TABLE hourly_rollup_findings ADD COLUMN location_line BIGINT;
ALTER TABLE hourly_rollup_findings ADD COLUMN location_function TEXT;
ALTER TABLE hourly_rollup_findings ADD COLUMN location_votes BIGINT NOT NULL DEFAULT 0;
