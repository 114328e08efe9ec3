//! The embedded store's schema, as the migrations that build it; `schema` applies them.
//!
//! Since migration 4 (issue 15) the event log is laid out for the cost of a commit, which is the
//! pages it dirties (each one written to the WAL, checksummed, fsynced, and copied again by the
//! checkpoint):
//!
//! - `event_log` holds every event in commit order under an `INTEGER PRIMARY KEY` that only
//!   grows, so a commit appends to the last page or two, whatever documents it touches. Documents
//!   and clients are interned (`doc_ids`, `client_ids`): rows and keys hold small integers.
//! - The per-document keys, (doc, version) → event and (doc, client, seq) → version, are in two
//!   tiers. A commit inserts into the small `recent_versions` and `recent_seqs`, which stay a few
//!   pages large, so the commit dirties a few pages however many documents it touches; every few
//!   thousand events the writer folds them into `versions` and `seqs`, a range of documents per
//!   transaction (see `tiers`), which dirties about one page per document per fold instead of
//!   per commit.
//!   A key is in exactly one tier: reads look in both, and a commit checks the main tier itself,
//!   since the recent tier's keys enforce uniqueness only among recent rows.
//! - The outbox reads `event_log` by its ("partition", commit_seq) index, which grows at its end.
//! - Rejections are rare and keep one table keyed by document (`rejection_log`).
//! - Views named `events` and `rejections` show the old columns (document and client names), for
//!   tools and tests that read the file with plain SQL.
//!
//! Tables are `STRICT`, so a value of the wrong type can never be stored.

/// Every migration, in order; the schema version is how many of them a database has applied.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the event log, the remembered rejections, the snapshot cache and partition ownership.
    r#"
    CREATE TABLE events (
        doc     TEXT    NOT NULL,
        version INTEGER NOT NULL,
        client  TEXT    NOT NULL,
        seq     INTEGER NOT NULL,
        op      TEXT    NOT NULL,
        PRIMARY KEY (doc, version),
        UNIQUE (doc, client, seq)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE rejections (
        doc        TEXT    NOT NULL,
        client     TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        code       TEXT    NOT NULL,
        message    TEXT    NOT NULL,
        at_version INTEGER NOT NULL,
        PRIMARY KEY (doc, client, seq)
    ) STRICT, WITHOUT ROWID;

    CREATE INDEX rejections_by_version ON rejections (doc, at_version);

    CREATE TABLE snapshots (
        doc     TEXT    NOT NULL,
        version INTEGER NOT NULL,
        text    TEXT    NOT NULL,
        clients TEXT    NOT NULL,
        PRIMARY KEY (doc, version)
    ) STRICT;

    CREATE TABLE partitions (
        "partition" INTEGER PRIMARY KEY,
        epoch       INTEGER NOT NULL,
        next_offset INTEGER
    ) STRICT;
    "#,
    // 2: the transactional outbox. Each partition numbers its commits (`last_commit`) and remembers
    // up to which one they were published; each event and rejection records the partition and
    // commit that stored it. Rows from before this migration have neither (NULL) and count as
    // published: they were written by an owner that published them or let gateways repair them.
    r#"
    ALTER TABLE partitions ADD COLUMN last_commit INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE partitions ADD COLUMN published_through INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN "partition" INTEGER;
    ALTER TABLE events ADD COLUMN commit_seq INTEGER;
    ALTER TABLE rejections ADD COLUMN "partition" INTEGER;
    ALTER TABLE rejections ADD COLUMN commit_seq INTEGER;
    CREATE INDEX events_by_commit ON events ("partition", commit_seq);
    CREATE INDEX rejections_by_commit ON rejections ("partition", commit_seq);
    "#,
    // 3: the history (issue 12). Each event records its author and when it was committed (ms since
    // the Unix epoch); rows from before have '' and 0, "unknown". Checkpoints name versions. A
    // deleted document leaves a tombstone under the commit that deleted it, for the outbox; keyed
    // by that commit, not by the document, since a document id may be used again and deleted again,
    // and `ordinal` (the deletion's place in its batch) lets one batch delete a document twice.
    r#"
    ALTER TABLE events ADD COLUMN author TEXT NOT NULL DEFAULT '';
    ALTER TABLE events ADD COLUMN committed_at INTEGER NOT NULL DEFAULT 0;

    CREATE TABLE checkpoints (
        doc        TEXT    NOT NULL,
        name       TEXT    NOT NULL,
        version    INTEGER NOT NULL,
        author     TEXT    NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (doc, name)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE tombstones (
        "partition"  INTEGER NOT NULL,
        commit_seq   INTEGER NOT NULL,
        ordinal      INTEGER NOT NULL,
        doc          TEXT    NOT NULL,
        last_version INTEGER NOT NULL,
        author       TEXT    NOT NULL,
        deleted_at   INTEGER NOT NULL,
        PRIMARY KEY ("partition", commit_seq, ordinal)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 4: the append-ordered log with interned ids and tiered keys (issue 15, see the module
    // documentation). Existing rows move over with their keys in the main tier.
    r#"
    CREATE TABLE doc_ids (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE) STRICT;
    CREATE TABLE client_ids (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE) STRICT;
    INSERT INTO doc_ids (name) SELECT doc FROM events UNION SELECT doc FROM rejections;
    INSERT INTO client_ids (name) SELECT client FROM events UNION SELECT client FROM rejections;

    CREATE TABLE event_log (
        id           INTEGER PRIMARY KEY,
        doc          INTEGER NOT NULL,
        version      INTEGER NOT NULL,
        client       INTEGER NOT NULL,
        seq          INTEGER NOT NULL,
        op           TEXT    NOT NULL,
        author       TEXT    NOT NULL,
        "partition"  INTEGER,
        commit_seq   INTEGER,
        committed_at INTEGER NOT NULL
    ) STRICT;
    INSERT INTO event_log (doc, version, client, seq, op, author, "partition", commit_seq, committed_at)
        SELECT d.id, e.version, c.id, e.seq, e.op, e.author, e."partition", e.commit_seq, e.committed_at
        FROM events e JOIN doc_ids d ON d.name = e.doc JOIN client_ids c ON c.name = e.client
        ORDER BY e.commit_seq, e.doc, e.version;
    CREATE INDEX event_log_by_commit ON event_log ("partition", commit_seq);

    CREATE TABLE versions (
        doc     INTEGER NOT NULL,
        version INTEGER NOT NULL,
        event   INTEGER NOT NULL,
        PRIMARY KEY (doc, version)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE recent_versions (
        doc     INTEGER NOT NULL,
        version INTEGER NOT NULL,
        event   INTEGER NOT NULL,
        PRIMARY KEY (doc, version)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE seqs (
        doc     INTEGER NOT NULL,
        client  INTEGER NOT NULL,
        seq     INTEGER NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (doc, client, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE recent_seqs (
        doc     INTEGER NOT NULL,
        client  INTEGER NOT NULL,
        seq     INTEGER NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (doc, client, seq)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO versions SELECT doc, version, id FROM event_log ORDER BY doc, version;
    INSERT INTO seqs SELECT doc, client, seq, version FROM event_log ORDER BY doc, client, seq;

    CREATE TABLE rejection_log (
        doc         INTEGER NOT NULL,
        client      INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        code        TEXT    NOT NULL,
        message     TEXT    NOT NULL,
        at_version  INTEGER NOT NULL,
        "partition" INTEGER,
        commit_seq  INTEGER,
        PRIMARY KEY (doc, client, seq)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO rejection_log
        SELECT d.id, c.id, r.seq, r.code, r.message, r.at_version, r."partition", r.commit_seq
        FROM rejections r JOIN doc_ids d ON d.name = r.doc JOIN client_ids c ON c.name = r.client;
    CREATE INDEX rejection_log_by_version ON rejection_log (doc, at_version);
    CREATE INDEX rejection_log_by_commit ON rejection_log ("partition", commit_seq);

    DROP TABLE events;
    DROP TABLE rejections;
    CREATE VIEW events AS
        SELECT d.name AS doc, e.version, c.name AS client, e.seq, e.op, e.author, e."partition",
               e.commit_seq, e.committed_at
        FROM event_log e JOIN doc_ids d ON d.id = e.doc JOIN client_ids c ON c.id = e.client;
    CREATE VIEW rejections AS
        SELECT d.name AS doc, c.name AS client, r.seq, r.code, r.message, r.at_version, r."partition",
               r.commit_seq
        FROM rejection_log r JOIN doc_ids d ON d.id = r.doc JOIN client_ids c ON c.id = r.client;
    "#,
];
