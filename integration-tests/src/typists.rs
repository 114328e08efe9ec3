//! Editors typing into shared documents through real clients, and the check that nothing they
//! typed was lost, doubled or diverged: the tests of the distributed mode share these.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_client::{Client, ClientOptions, DocHandle};
use tandem_ot::Operation;
use tandem_protocol::DocId;

use crate::cluster::TestDatabase;

pub const SETTLE: Duration = Duration::from_secs(60);

/// The text of `doc` as Postgres reconstructs it from the event log, and its versions.
pub fn postgres_text(db: &TestDatabase, doc: &DocId) -> (String, Vec<u64>) {
    let rows = db.query(&format!("SELECT version, op FROM events WHERE doc = '{doc}' ORDER BY version"));
    let mut text = String::new();
    let mut versions = Vec::new();
    for row in rows {
        let (version, op) = row.split_once('|').expect("version|op");
        let op: Operation = serde_json::from_str(op).expect("stored ops are JSON");
        text = op.apply(&text).expect("stored ops apply in order");
        versions.push(version.parse().expect("a version"));
    }
    (text, versions)
}

pub fn assert_linear(versions: &[u64], what: &str) {
    let expected: Vec<u64> = (1..=versions.len() as u64).collect();
    assert_eq!(versions, expected.as_slice(), "{what}: versions must be 1..N without gap or duplicate");
}

/// Types `letter` at random places until `typing` turns false; returns how many it typed.
async fn type_letters(handle: DocHandle, letter: char, typing: Arc<AtomicBool>, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut typed = 0;
    while typing.load(Ordering::Relaxed) {
        let pos = rng.gen_range(0..=handle.len_chars());
        handle.insert(pos, &letter.to_string()).expect("insert");
        typed += 1;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2..8))).await;
    }
    typed
}

/// Clients typing distinct letters into shared documents: returns each client with its handles and
/// how many letters it typed per document, once typing stopped.
pub struct Typists {
    pub clients: Vec<(Client, char, Vec<DocHandle>)>,
    pub typed: BTreeMap<(char, DocId), usize>,
}

pub async fn type_for(
    urls: &[String],
    docs: &[DocId],
    letters: &[char],
    seed: u64,
    duration: Duration,
) -> Typists {
    type_with(urls, docs, letters, seed, duration, false).await
}

/// Like [`type_for`]; with `failover`, every client connects to the first URL and lists the others as
/// its fallbacks, instead of the clients being spread over the URLs.
pub async fn type_with(
    urls: &[String],
    docs: &[DocId],
    letters: &[char],
    seed: u64,
    duration: Duration,
    failover: bool,
) -> Typists {
    let typing = Arc::new(AtomicBool::new(true));
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for (i, &letter) in letters.iter().enumerate() {
        let (url, options) = if failover {
            (&urls[0], ClientOptions { fallback_urls: urls[1..].to_vec(), ..ClientOptions::default() })
        } else {
            (&urls[i % urls.len()], ClientOptions::default())
        };
        let client = Client::connect(url, options).await.expect("connect");
        let mut handles = Vec::new();
        for (d, doc) in docs.iter().enumerate() {
            let handle = client.open(doc).await.expect("open");
            let typist_seed = seed.wrapping_add((i * 100 + d) as u64);
            tasks.push((
                letter,
                doc.clone(),
                tokio::spawn(type_letters(handle.clone(), letter, typing.clone(), typist_seed)),
            ));
            handles.push(handle);
        }
        clients.push((client, letter, handles));
    }
    tokio::time::sleep(duration).await;
    typing.store(false, Ordering::Relaxed);
    let mut typed = BTreeMap::new();
    for (letter, doc, task) in tasks {
        typed.insert((letter, doc), task.await.expect("typist"));
    }
    Typists { clients, typed }
}

/// Every editor's edits are acknowledged; the event log of each document has linear versions and
/// every typed letter exactly once; every editor's text equals the log's.
pub async fn assert_everything_converged(typists: &Typists, db: &TestDatabase, docs: &[DocId], seed: u64) {
    for (client, _, handles) in &typists.clients {
        for handle in handles {
            handle
                .wait_synced(SETTLE)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {} not synced: {e}", client.client_id()));
        }
    }
    for (d, doc) in docs.iter().enumerate() {
        let (text, versions) = postgres_text(db, doc);
        assert_linear(&versions, doc.as_str());
        for (client, letter, handles) in &typists.clients {
            let count = text.chars().filter(|c| c == letter).count();
            assert_eq!(
                count,
                typists.typed[&(*letter, doc.clone())],
                "seed {seed}: {letter:?} in {doc}: lost or doubled"
            );
            handles[d]
                .wait_version(versions.len() as u64, SETTLE)
                .await
                .expect("the editor reaches the last version");
            assert_eq!(handles[d].text(), text, "seed {seed}: {} diverged on {doc}", client.client_id());
        }
    }
    for (client, _, _) in &typists.clients {
        let protocol_errors: Vec<_> =
            client.errors().into_iter().filter(|e| e.source == tandem_client::ErrorSource::Client).collect();
        assert!(protocol_errors.is_empty(), "seed {seed}: {} saw {protocol_errors:?}", client.client_id());
    }
}
