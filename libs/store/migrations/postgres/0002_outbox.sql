-- The transactional outbox: what is committed but maybe not yet published to tandem.events.
--
-- Each partition numbers its commits that store records (`last_commit`, continued across owners)
-- and remembers up to which one they were published (`published_through`, only ever raised, never
-- past `last_commit`). Each event and rejection records the partition and the commit that stored
-- it, so a new owner reads exactly what its predecessor committed after `published_through` and
-- republishes it.
--
-- Rows written before this migration have no partition or commit (NULL) and count as published.
-- Adding a nullable column without a default only changes the catalog, so the two large tables are
-- not rewritten; building their indexes does read them once, inside this migration's transaction.

ALTER TABLE partitions
    ADD COLUMN last_commit       bigint NOT NULL DEFAULT 0,
    ADD COLUMN published_through bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT partitions_published_within_commits
        CHECK (published_through >= 0 AND published_through <= last_commit);

ALTER TABLE events
    ADD COLUMN "partition" bigint,
    ADD COLUMN commit_seq  bigint;

ALTER TABLE rejections
    ADD COLUMN "partition" bigint,
    ADD COLUMN commit_seq  bigint;

-- The outbox read: a partition's records after a commit number, in commit order.
CREATE INDEX events_by_commit ON events ("partition", commit_seq);
CREATE INDEX rejections_by_commit ON rejections ("partition", commit_seq);
