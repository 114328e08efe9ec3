//! The history reads against the real embedded store: random histories (seeded; the seed is
//! printed, `TANDEM_HISTORY_SEED=<n>` replays one), checked against a plain replay of every version.

use std::time::{SystemTime, UNIX_EPOCH};

use tandem_ot::Operation;
use tandem_protocol::records::CommittedEvent;
use tandem_protocol::{ClientId, DocId};
use tandem_store::embedded::{SqliteOptions, SqliteStore};
use tandem_store::{CommitBatch, EventStore, Snapshot};

use super::*;

/// A small deterministic generator (splitmix64): enough for test data, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn upto(&mut self, max: usize) -> usize {
        (self.next() % (max as u64 + 1)) as usize
    }
}

fn seed() -> u64 {
    let seed = std::env::var("TANDEM_HISTORY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    println!("seed {seed} (replay with TANDEM_HISTORY_SEED={seed})");
    seed
}

/// Up to three patches at random places, sometimes nothing (a version may change nothing), with
/// non-ASCII and astral characters so that counting in scalar values matters.
fn random_op(rng: &mut Rng, text: &str) -> Operation {
    const PIECES: [&str; 6] = ["a", "bc", "é", "😀", "🏽x", "\n"];
    let mut op = Operation::identity(text.chars().count());
    for _ in 0..rng.upto(3) {
        let len = op.target_len();
        let pos = rng.upto(len);
        let delete = rng.upto((len - pos).min(4));
        let insert: String = (0..rng.upto(3)).map(|_| PIECES[rng.upto(PIECES.len() - 1)]).collect();
        let patch = Operation::from_patch(len, pos, delete, &insert).expect("in range");
        op = op.compose(&patch).expect("consecutive");
    }
    op
}

/// A store holding one random history of `doc`; `texts[v]` is the text of version `v`.
struct History {
    store: SqliteStore,
    doc: DocId,
    texts: Vec<String>,
    ops: Vec<Operation>,
    _data: tempfile::TempDir,
}

async fn random_history(rng: &mut Rng, versions: u64, snapshot_every: u64) -> History {
    let data = tempfile::tempdir().expect("a temporary folder");
    let store = SqliteStore::open(data.path(), SqliteOptions { synchronous_full: false }).expect("store");
    let epoch = store.claim_partition(0).await.expect("claimed").epoch;
    let doc = DocId::parse("history/doc").unwrap();
    let client = ClientId::parse("writer").unwrap();
    let mut texts = vec![String::new()];
    let mut ops = vec![Operation::new()];
    for version in 1..=versions {
        let op = random_op(rng, texts.last().unwrap());
        texts.push(op.apply(texts.last().unwrap()).unwrap());
        let event = CommittedEvent {
            doc: doc.clone(),
            version,
            client: client.clone(),
            seq: version,
            op: op.clone(),
            author: "w".into(),
        };
        ops.push(op);
        store
            .commit(&CommitBatch { partition: 0, epoch, events: vec![event], ..CommitBatch::default() })
            .await
            .expect("committed");
        if snapshot_every > 0 && version % snapshot_every == 0 {
            let snapshot = Snapshot {
                doc: doc.clone(),
                version,
                text: texts[version as usize].clone(),
                clients: Default::default(),
            };
            store.write_snapshot(&snapshot).await.expect("snapshot written");
        }
    }
    History { store, doc, texts, ops, _data: data }
}

#[tokio::test]
async fn the_text_at_every_version_is_the_replay_of_the_events_up_to_it() {
    let mut rng = Rng(seed());
    // More versions than a page, with snapshots on the way, and one history without any.
    for (versions, snapshot_every) in [(1_234, 250), (120, 0)] {
        let h = random_history(&mut rng, versions, snapshot_every).await;
        for version in 0..=versions {
            let (text, latest) = text_at(&h.store, &h.doc, version).await.expect("read");
            assert_eq!(text, h.texts[version as usize], "text of version {version}");
            assert_eq!(latest, versions);
        }
        let e = text_at(&h.store, &h.doc, versions + 1).await.unwrap_err();
        assert_eq!(e.code(), "not_found");
        let message = e.to_string();
        assert!(message.contains(&format!("no version {}", versions + 1)), "{message}");
        assert!(message.contains(&format!("latest version is {versions}")), "{message}");
    }
    let h = random_history(&mut rng, 0, 0).await;
    assert_eq!(text_at(&h.store, &h.doc, 0).await.unwrap(), (String::new(), 0), "a new document");
}

/// The text is rebuilt from the nearest snapshot, not replayed from 0: a snapshot that (for the
/// test) disagrees with the events shows through at its version and the versions after it.
#[tokio::test]
async fn text_at_starts_from_the_nearest_snapshot() {
    let mut rng = Rng(seed());
    let h = random_history(&mut rng, 30, 0).await;
    let marked: String = h.texts[20].chars().map(|_| '#').collect();
    let snapshot =
        Snapshot { doc: h.doc.clone(), version: 20, text: marked.clone(), clients: Default::default() };
    h.store.write_snapshot(&snapshot).await.unwrap();
    assert_eq!(text_at(&h.store, &h.doc, 19).await.unwrap().0, h.texts[19], "before the snapshot: replayed");
    assert_eq!(text_at(&h.store, &h.doc, 20).await.unwrap().0, marked);
    let after = h.ops[21..].iter().try_fold(marked, |text, op| op.apply(&text)).unwrap();
    assert_eq!(text_at(&h.store, &h.doc, 30).await.unwrap().0, after);
}

#[tokio::test]
async fn a_diff_turns_one_version_into_the_other_either_way() {
    let mut rng = Rng(seed());
    let h = random_history(&mut rng, 1_500, 250).await;
    let last = h.texts.len() - 1;
    let mut pairs: Vec<(usize, usize)> = vec![(0, last), (last, 0), (7, 7), (0, 0), (last, last)];
    pairs.extend((0..40).map(|_| (rng.upto(last), rng.upto(last))));
    for (from, to) in pairs {
        let op = diff(&h.store, &h.doc, from as u64, to as u64).await.expect("diff");
        assert_eq!(op.apply(&h.texts[from]).unwrap(), h.texts[to], "diff {from} -> {to}: {op}");
        if from < to {
            // The balanced composition is the composition of the events one after another.
            let sequential = h.ops[from + 1..=to]
                .iter()
                .skip(1)
                .try_fold(h.ops[from + 1].clone(), |acc, op| acc.compose(op));
            assert_eq!(op, sequential.unwrap(), "diff {from} -> {to}");
        }
        // Normal form: rebuilding it with the normalising builder changes nothing.
        let mut rebuilt = Operation::new();
        op.components().iter().cloned().for_each(|c| {
            rebuilt.push(c);
        });
        assert_eq!(rebuilt, op, "diff {from} -> {to} is in normal form");
    }
    let e = diff(&h.store, &h.doc, 3, last as u64 + 5).await.unwrap_err();
    assert_eq!(e.code(), "not_found");
    assert!(e.to_string().contains(&format!("no version {}", last + 5)), "{e}");
}

/// Where `index` goes through `op`: the inserted text before it counts (at it, only with
/// `stick_after`), and of the base text the characters before it that survive.
fn reference_move(op: &Operation, index: usize, stick_after: bool) -> usize {
    let (mut consumed, mut moved) = (0, 0);
    for component in op.components() {
        match component {
            Component::Retain(n) => {
                moved += (*n).min(index.saturating_sub(consumed));
                consumed += n;
            }
            Component::Insert(s) if consumed < index || (consumed == index && stick_after) => {
                moved += s.chars().count();
            }
            Component::Insert(_) => {}
            Component::Delete(n) => consumed += n,
        }
    }
    moved
}

#[tokio::test]
async fn positions_move_through_the_versions_as_a_reference_moves_them() {
    let mut rng = Rng(seed());
    let h = random_history(&mut rng, 1_200, 0).await;
    let last = h.texts.len() - 1;
    for round in 0..60 {
        let from = rng.upto(last);
        let to = if round % 10 == 0 { from } else { from + rng.upto(last - from) };
        let len = h.texts[from].chars().count();
        let position = if round % 7 == 0 { len } else { rng.upto(len) };
        for stick_after in [false, true] {
            let expected =
                h.ops[from + 1..=to].iter().fold(position, |p, op| reference_move(op, p, stick_after));
            let got =
                transform_position(&h.store, &h.doc, position as u64, from as u64, to as u64, stick_after)
                    .await
                    .expect("transformed");
            assert_eq!(
                got, expected as u64,
                "position {position} from {from} to {to}, stick_after {stick_after}"
            );
        }
    }

    let len = h.texts[5].chars().count() as u64;
    let e = transform_position(&h.store, &h.doc, len + 1, 5, 9, false).await.unwrap_err();
    assert_eq!(e.code(), "bad_request");
    assert!(e.to_string().contains(&format!("which has {len} characters")), "{e}");
    let e = transform_position(&h.store, &h.doc, 0, 9, 5, false).await.unwrap_err();
    assert_eq!(e.code(), "bad_request");
    assert!(e.to_string().contains("to_version 5 is before from_version 9"), "{e}");
    let e = transform_position(&h.store, &h.doc, 0, 0, last as u64 + 1, false).await.unwrap_err();
    assert_eq!(e.code(), "not_found");
    // The length at the latest version comes from its own event.
    let end = h.texts[last].chars().count() as u64;
    assert_eq!(transform_position(&h.store, &h.doc, end, last as u64, last as u64, true).await.unwrap(), end);
    let e = transform_position(&h.store, &h.doc, end + 1, last as u64, last as u64, true).await.unwrap_err();
    assert!(e.to_string().contains(&format!("which has {end} characters")), "{e}");
}

#[test]
fn move_position_agrees_with_the_reference_on_every_index() {
    let mut rng = Rng(seed());
    let mut text = String::from("héllo 😀 world");
    for _ in 0..300 {
        let op = random_op(&mut rng, &text);
        for index in 0..=op.base_len() {
            for stick_after in [false, true] {
                assert_eq!(
                    move_position(&op, index, stick_after),
                    reference_move(&op, index, stick_after),
                    "index {index} through {op}, stick_after {stick_after}"
                );
            }
        }
        text = op.apply(&text).unwrap();
    }
    // The two rules differ exactly at an insertion at the position.
    let op = Operation::from_patch(4, 2, 0, "xy").unwrap();
    assert_eq!((move_position(&op, 2, false), move_position(&op, 2, true)), (2, 4));
}
