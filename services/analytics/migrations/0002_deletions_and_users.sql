-- Issue 12: deleted documents and per-user activity (docs/ANALYTICS.md).
--
-- Records now carry their user (`CommittedEvent.author`, the authenticated user id; "" for events
-- committed before it was recorded). The `author` columns of migration 1's tables keep holding the
-- editing session (`client`); the user is `user_id` below. A `deleted` record (DocumentDeleted)
-- purges every row of its document from the tables below and from migration 1's, and leaves the
-- purge mark in analytics_deletions.

COMMENT ON COLUMN analytics_document_authors.author IS
    'the editing session (the record''s client field), not the user: see analytics_user_minutes.user_id';
COMMENT ON COLUMN analytics_minutes.author IS
    'the editing session (the record''s client field), not the user: see analytics_user_minutes.user_id';
COMMENT ON COLUMN analytics_edit_runs.author IS
    'the editing session (the record''s client field), not the user: see analytics_user_minutes.user_id';

-- One row per document ever deleted: the last tombstone applied. It holds no activity, only what
-- tells a record of the purged history from one of the document's new history (versions start
-- again at 1 after a deletion): the purged history's last version, and the watermark
-- ("partition", through_offset): the position on the topic of the last record of the document
-- applied since the tombstone (the tombstone's own at first), so that a record read again is
-- never judged anew.
CREATE TABLE analytics_deletions (
    doc            text COLLATE "C" PRIMARY KEY,
    last_version   bigint      NOT NULL CHECK (last_version >= 0),
    -- The user who deleted the document.
    author         text        NOT NULL,
    -- The tombstone's record timestamp.
    deleted_at     timestamptz NOT NULL,
    "partition"    integer     NOT NULL CHECK ("partition" >= 0),
    through_offset bigint      NOT NULL CHECK (through_offset >= 0)
);

-- One row per (document, minute, user) with at least one edit: a user's activity, whatever
-- sessions (tabs, devices, API requests) it came from.
CREATE TABLE analytics_user_minutes (
    doc            text COLLATE "C" NOT NULL,
    -- The start of the minute (UTC), by the record timestamp.
    minute         timestamptz NOT NULL,
    -- CommittedEvent.author: the authenticated user id ("anonymous" without authentication),
    -- "" for events committed before authors were recorded.
    user_id        text COLLATE "C" NOT NULL,
    ops            bigint      NOT NULL CHECK (ops > 0),
    chars_inserted bigint      NOT NULL CHECK (chars_inserted >= 0),
    chars_deleted  bigint      NOT NULL CHECK (chars_deleted >= 0),
    CONSTRAINT analytics_user_minutes_pkey PRIMARY KEY (doc, minute, user_id)
);

-- For one user's activity over time.
CREATE INDEX analytics_user_minutes_by_user ON analytics_user_minutes (user_id, minute);

-- One row per user over all documents: `active_minutes` is the number of distinct minutes with at
-- least one of the user's edits (on any document); `first_minute` and `last_minute` the starts of
-- the first and the last of them.
CREATE VIEW analytics_users AS
    SELECT user_id,
           count(DISTINCT doc)::bigint    AS documents,
           sum(ops)::bigint               AS ops,
           sum(chars_inserted)::bigint    AS chars_inserted,
           sum(chars_deleted)::bigint     AS chars_deleted,
           count(DISTINCT minute)::bigint AS active_minutes,
           min(minute)                    AS first_minute,
           max(minute)                    AS last_minute
    FROM analytics_user_minutes
    GROUP BY user_id;
