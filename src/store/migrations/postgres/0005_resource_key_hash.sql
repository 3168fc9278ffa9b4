-- A resource's attributes (a Java process.command_line alone can be kilobytes) can outgrow the
-- 2,704 bytes PostgreSQL allows a B-tree index row, which failed every commit interning such a
-- process. The unique key is the MD5 of the text instead; the text stays in its column. The
-- names in the other text keys are cut by the analysis (src/analysis/key_name.rs).
ALTER TABLE resources DROP CONSTRAINT resources_attributes_key;
CREATE UNIQUE INDEX resources_by_attributes_md5 ON resources (md5(attributes));
