//! The embedded store's cost per committed event under the `max` load's shape (issue 15).
//!
//! `cargo run --release -p tandem-store --example commit_load -- [EVENTS] [DIR]`
//!
//! `FOLD_AFTER`, `FOLD_STEP`, `CHECKPOINT_AFTER` (0: SQLite's own, in the commit) and `CACHE_KIB` in
//! the environment override the store's [`Tuning`].
//!
//! One partition commits group batches the way the sequencer does: `BATCH` events per commit, each
//! of a different document picked at random among `DOCS`, versions advancing, one character typed
//! per op, client ids shaped like the JS client's (UUIDs), `expected_commit` and
//! `published_through` set as the partition loop sets them, fsync on (`SqliteOptions::default()`).
//! CPU is the process's user + system time (`/proc/self/stat`), not wall time, so waiting on fsync
//! does not count; bytes are `/proc/self/io`'s `wchar` (everything handed to `write`) and
//! `write_bytes` (what reached the block layer). Figures are printed per committed event for the
//! whole run and for its last quarter (the database at its largest).
//!
//! Afterwards, `SAMPLES` more commits are made, each followed by a passive checkpoint from a side
//! connection, whose answer counts the WAL frames the commit wrote: the pages a commit dirties.
//! (Kept apart from the timed part: checkpointing after every commit costs CPU of its own.)

use std::path::PathBuf;
use std::time::Instant;

use tandem_ot::Operation;
use tandem_protocol::records::CommittedEvent;
use tandem_protocol::{ClientId, DocId};
use tandem_store::embedded::{SqliteOptions, SqliteStore, Tuning};
use tandem_store::{CommitBatch, EventStore};

const DOCS: usize = 100;
const BATCH: usize = 50;
const CLIENTS_PER_DOC: usize = 4;
const SAMPLES: usize = 200;

/// A small deterministic generator (xorshift64*), so every run commits the same batches.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Doc {
    id: DocId,
    version: u64,
    clients: Vec<(ClientId, u64)>,
}

struct Load {
    rng: Rng,
    docs: Vec<Doc>,
    commit: u64,
    epoch: u64,
}

impl Load {
    fn new(epoch: u64) -> Self {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let docs = (0..DOCS)
            .map(|d| Doc {
                id: DocId::parse(&format!("loadgen/5f3a9c1b/{d}")).expect("a document id"),
                version: 0,
                clients: (0..CLIENTS_PER_DOC).map(|_| (uuid(&mut rng), 0)).collect(),
            })
            .collect();
        Self { rng, docs, commit: 0, epoch }
    }

    /// The next batch: `BATCH` distinct documents, one typed character each.
    fn batch(&mut self) -> CommitBatch {
        let mut order: Vec<usize> = (0..DOCS).collect();
        let mut events = Vec::with_capacity(BATCH);
        for i in 0..BATCH.min(DOCS) {
            let j = i + self.rng.below(DOCS - i);
            order.swap(i, j);
            let pick = self.rng.below(CLIENTS_PER_DOC);
            let pos = self.rng.below(self.docs[order[i]].version as usize + 1);
            let doc = &mut self.docs[order[i]];
            let (client, seq) = &mut doc.clients[pick];
            *seq += 1;
            doc.version += 1;
            let mut op = Operation::new();
            op.retain(pos).insert("x").retain(doc.version as usize - 1 - pos);
            events.push(CommittedEvent {
                author: format!("user-{pick}"),
                doc: doc.id.clone(),
                version: doc.version,
                client: client.clone(),
                seq: *seq,
                op,
            });
        }
        self.commit += 1;
        CommitBatch {
            partition: 0,
            epoch: self.epoch,
            next_offset: Some(self.commit as i64),
            events,
            published_through: Some(self.commit - 1),
            expected_commit: Some(self.commit),
            ..CommitBatch::default()
        }
    }
}

fn uuid(rng: &mut Rng) -> ClientId {
    let (a, b) = (rng.next(), rng.next());
    let s = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) | 0x8000,
        b & 0xffff_ffff_ffff
    );
    ClientId::parse(&s).expect("a client id")
}

/// (CPU seconds of the process, wchar, write_bytes).
fn counters() -> (f64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    let field = |name: &str| -> u64 {
        io.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().parse().unwrap()).unwrap_or(0)
    };
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    (ticks as f64 / 100.0, field("wchar:"), field("write_bytes:"))
}

fn report(label: &str, events: u64, commits: u64, from: (f64, u64, u64), to: (f64, u64, u64), wall: f64) {
    let n = events as f64;
    println!(
        "{label}: {events} events in {commits} commits: cpu {:.1} us/event, wchar {:.0} B/event, \
         write_bytes {:.0} B/event, wall {:.1} us/event",
        (to.0 - from.0) * 1e6 / n,
        (to.1 - from.1) as f64 / n,
        (to.2 - from.2) as f64 / n,
        wall * 1e6 / n
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().map_or(200_000, |a| a.parse().expect("EVENTS is a number"));
    let (_tmp, dir) = match args.next() {
        Some(dir) => (None, PathBuf::from(dir)),
        None => {
            let tmp = tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/var/tmp".into()))
                .expect("a temporary folder");
            let dir = tmp.path().to_owned();
            (Some(tmp), dir)
        }
    };
    let mut tuning = Tuning::default();
    if let Ok(v) = std::env::var("FOLD_AFTER") {
        tuning.fold_after = v.parse().expect("FOLD_AFTER is a number");
    }
    if let Ok(v) = std::env::var("FOLD_STEP") {
        tuning.fold_step = v.parse().expect("FOLD_STEP is a number");
    }
    if let Ok(v) = std::env::var("CHECKPOINT_AFTER") {
        let writes: u64 = v.parse().expect("CHECKPOINT_AFTER is a number");
        tuning.checkpoint_after = (writes > 0).then_some(writes);
    }
    if let Ok(v) = std::env::var("CACHE_KIB") {
        tuning.cache_kib = v.parse().expect("CACHE_KIB is a number");
    }
    println!("{tuning:?}");
    let store = SqliteStore::open_tuned(&dir, SqliteOptions::default(), tuning).expect("the store opens");
    let epoch = store.claim_partition(0).await.expect("a claim").epoch;
    let mut load = Load::new(epoch);
    let commits = total / BATCH as u64;
    let quarter = commits - commits / 4;
    let start = (counters(), Instant::now());
    let mut last_quarter = start;
    for i in 0..commits {
        if i == quarter {
            last_quarter = (counters(), Instant::now());
        }
        let batch = load.batch();
        store.commit(&batch).await.expect("a commit");
    }
    let end = counters();
    let per = BATCH as u64;
    report("all", commits * per, commits, start.0, end, start.1.elapsed().as_secs_f64());
    report(
        "last quarter",
        (commits - quarter) * per,
        commits - quarter,
        last_quarter.0,
        end,
        last_quarter.1.elapsed().as_secs_f64(),
    );

    let side = rusqlite::Connection::open(store.path()).expect("a side connection");
    let checkpoint = |side: &rusqlite::Connection| -> i64 {
        side.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1)).expect("a checkpoint")
    };
    checkpoint(&side);
    let mut frames = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        store.commit(&load.batch()).await.expect("a commit");
        frames.push(checkpoint(&side));
    }
    frames.sort_unstable();
    let mean = frames.iter().sum::<i64>() as f64 / SAMPLES as f64;
    println!(
        "wal frames per commit of {BATCH} events: median {}, mean {mean:.1}, max {}",
        frames[SAMPLES / 2],
        frames[SAMPLES - 1]
    );
    let size = std::fs::metadata(store.path()).map_or(0, |m| m.len());
    println!("database file: {:.1} MiB", size as f64 / (1 << 20) as f64);
}
