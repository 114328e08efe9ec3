-- The analytics consumer's tables (docs/ANALYTICS.md). Its own: the event log's tables are never
-- read or written here, and its migrations are recorded in analytics_schema_migrations, apart from
-- the event store's schema_migrations.
--
-- `author` is the `client` field of a committed record: the editing session's id, scoped by its
-- user for clients of the gateways (43 characters of base64url). It is not a user: the user's name
-- is not on the events topic (docs/EVENTS.md). Times are Kafka record timestamps, which are the
-- time the record was (re)published, not the time of the commit. Ids compare byte-wise, as in the
-- event log.

-- One row per document: the totals and the deduplication mark (`last_version`).
CREATE TABLE analytics_documents (
    doc             text COLLATE "C" PRIMARY KEY,
    ops             bigint      NOT NULL CHECK (ops > 0),
    chars_inserted  bigint      NOT NULL CHECK (chars_inserted >= 0),
    chars_deleted   bigint      NOT NULL CHECK (chars_deleted >= 0),
    first_version   bigint      NOT NULL CHECK (first_version > 0),
    last_version    bigint      NOT NULL CHECK (last_version >= first_version),
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    versions_missed bigint      NOT NULL CHECK (versions_missed >= 0)
);

-- For "most active documents lately".
CREATE INDEX analytics_documents_by_last_seen ON analytics_documents (last_seen);

-- One row per (document, author).
CREATE TABLE analytics_document_authors (
    doc            text COLLATE "C" NOT NULL,
    author         text COLLATE "C" NOT NULL,
    ops            bigint      NOT NULL CHECK (ops > 0),
    chars_inserted bigint      NOT NULL CHECK (chars_inserted >= 0),
    chars_deleted  bigint      NOT NULL CHECK (chars_deleted >= 0),
    first_seen     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL,
    CONSTRAINT analytics_document_authors_pkey PRIMARY KEY (doc, author)
);

CREATE INDEX analytics_document_authors_by_author ON analytics_document_authors (author);

-- One row per author (editing session id) over all documents.
CREATE VIEW analytics_authors AS
    SELECT author,
           count(*)::bigint            AS documents,
           sum(ops)::bigint            AS ops,
           sum(chars_inserted)::bigint AS chars_inserted,
           sum(chars_deleted)::bigint  AS chars_deleted,
           min(first_seen)             AS first_seen,
           max(last_seen)              AS last_seen
    FROM analytics_document_authors
    GROUP BY author;

-- One row per (document, minute, author) with at least one edit: the active editors of a minute
-- are its rows.
CREATE TABLE analytics_minutes (
    doc            text COLLATE "C" NOT NULL,
    -- The start of the minute (UTC), by the record timestamp.
    minute         timestamptz NOT NULL,
    author         text COLLATE "C" NOT NULL,
    ops            bigint      NOT NULL CHECK (ops > 0),
    chars_inserted bigint      NOT NULL CHECK (chars_inserted >= 0),
    chars_deleted  bigint      NOT NULL CHECK (chars_deleted >= 0),
    CONSTRAINT analytics_minutes_pkey PRIMARY KEY (doc, minute, author)
);

-- For "the last hour" over every document.
CREATE INDEX analytics_minutes_by_minute ON analytics_minutes (minute);

-- An author's runs of edits on a document: consecutive edits less than the run gap (5 minutes by
-- default) apart. Keyed by the run's first edit.
CREATE TABLE analytics_edit_runs (
    doc            text COLLATE "C" NOT NULL,
    author         text COLLATE "C" NOT NULL,
    started_at     timestamptz NOT NULL,
    last_edit_at   timestamptz NOT NULL CHECK (last_edit_at >= started_at),
    ops            bigint      NOT NULL CHECK (ops > 0),
    chars_inserted bigint      NOT NULL CHECK (chars_inserted >= 0),
    chars_deleted  bigint      NOT NULL CHECK (chars_deleted >= 0),
    first_version  bigint      NOT NULL CHECK (first_version > 0),
    last_version   bigint      NOT NULL CHECK (last_version >= first_version),
    CONSTRAINT analytics_edit_runs_pkey PRIMARY KEY (doc, author, started_at)
);

-- Where the consumer resumes: the next offset of each partition of the events topic, written in
-- the transaction of the counts it produced.
CREATE TABLE analytics_offsets (
    topic       text        NOT NULL,
    "partition" integer     NOT NULL CHECK ("partition" >= 0),
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT analytics_offsets_pkey PRIMARY KEY (topic, "partition")
);
