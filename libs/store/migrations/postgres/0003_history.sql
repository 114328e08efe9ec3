-- The history (issue 12): who made each event, named versions, and deleted documents.
--
-- `events.author` is the authenticated user who submitted the op; rows from before have '' (unknown).
-- A constant default only changes the catalog (Postgres 11+), so the table is not rewritten.
-- `events.committed_at` exists since 0001.

ALTER TABLE events ADD COLUMN author text NOT NULL DEFAULT '';

-- Named versions: immutable, one version per (doc, name). Names are compared byte-wise, as ids are,
-- so both stores list them in the same order.
CREATE TABLE checkpoints (
    doc        text COLLATE "C" NOT NULL,
    name       text COLLATE "C" NOT NULL,
    version    bigint           NOT NULL CHECK (version >= 0),
    author     text             NOT NULL,
    created_at timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT checkpoints_pkey PRIMARY KEY (doc, name)
);

-- A deleted document's tombstone, stored by the commit that deleted it so the outbox publishes it
-- (as SequencedRecord::Deleted) like the commit's other records. Keyed by that commit, not by the
-- document: an id may be used again and deleted again. `ordinal` is the deletion's place in its
-- batch (a batch may delete a document twice).
CREATE TABLE tombstones (
    "partition"  bigint           NOT NULL,
    commit_seq   bigint           NOT NULL,
    ordinal      integer          NOT NULL,
    doc          text COLLATE "C" NOT NULL,
    last_version bigint           NOT NULL CHECK (last_version >= 0),
    author       text             NOT NULL,
    deleted_at   timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT tombstones_pkey PRIMARY KEY ("partition", commit_seq, ordinal)
);
