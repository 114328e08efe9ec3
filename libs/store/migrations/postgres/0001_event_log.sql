-- The event log, the remembered rejections, the snapshot cache and partition ownership.
--
-- The primary and unique keys are what enforce linear history (doc, version) and exactly-once
-- effect (doc, client, seq); the store reports their violations as conflicts. Ids are compared
-- byte-wise (COLLATE "C"): they are ASCII by construction, so this orders them as the embedded store
-- does and keeps index comparisons a memcmp instead of a locale lookup.
--
-- Numbers are bigint. Versions and epochs never exceed i64::MAX (the store refuses them first);
-- `seq` is chosen by clients, may be any u64, and is stored bit-for-bit as a bigint: only ever
-- compared for equality, never ordered, so values above i64::MAX read back negative here and exact
-- through the store.

CREATE TABLE events (
    doc          text COLLATE "C" NOT NULL,
    version      bigint           NOT NULL CHECK (version > 0),
    client       text COLLATE "C" NOT NULL,
    seq          bigint           NOT NULL,
    -- The operation's JSON exactly as encoded, not jsonb: jsonb refuses "\u0000", which is a valid
    -- character of a document, and reading it back would cost a re-encoding.
    op           text             NOT NULL,
    committed_at timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (doc, version),
    CONSTRAINT events_doc_client_seq_key UNIQUE (doc, client, seq)
);

CREATE TABLE rejections (
    doc         text COLLATE "C" NOT NULL,
    client      text COLLATE "C" NOT NULL,
    seq         bigint           NOT NULL,
    code        text             NOT NULL,
    message     text             NOT NULL,
    at_version  bigint           NOT NULL CHECK (at_version >= 0),
    rejected_at timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT rejections_pkey PRIMARY KEY (doc, client, seq)
);

-- Loading a document reads the rejections at or after its snapshot's version.
CREATE INDEX rejections_by_version ON rejections (doc, at_version);

CREATE TABLE snapshots (
    doc     text COLLATE "C" NOT NULL,
    version bigint           NOT NULL CHECK (version >= 0),
    -- The text as UTF-8 bytes, not `text`: a Postgres text value cannot hold U+0000, which a
    -- document may contain.
    text    bytea            NOT NULL,
    clients jsonb            NOT NULL,
    CONSTRAINT snapshots_pkey PRIMARY KEY (doc, version)
);

-- One row per partition ever claimed. `partition` is bigint because partition ids are u32.
CREATE TABLE partitions (
    "partition" bigint PRIMARY KEY CHECK ("partition" >= 0),
    epoch       bigint NOT NULL CHECK (epoch > 0),
    next_offset bigint
);
