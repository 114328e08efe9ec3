//! Several real clients (the Rust client over real WebSockets) edit the same documents at once against
//! the real single-process server; every copy converges to the text the server has, and no client saw
//! a version twice or out of order (the client records any such violation as an error).
//!
//! Seeded: the seed is printed; replay with `TANDEM_SEED=<seed>`.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_client::{Client, ClientOptions, DocHandle};
use tandem_integration_tests::{seed, Standalone};
use tandem_protocol::DocId;

const SETTLE: Duration = Duration::from_secs(20);

/// Random edits: mostly inserts of a few characters (including multi-unit ones), some deletes.
fn random_edit(doc: &DocHandle, rng: &mut StdRng) {
    let len = doc.len_chars();
    if len > 0 && rng.gen_bool(0.3) {
        let pos = rng.gen_range(0..len);
        let n = rng.gen_range(1..=(len - pos).min(4));
        doc.delete(pos, n).expect("delete within the text");
    } else {
        let pos = rng.gen_range(0..=len);
        let text = ["a", "bc", "😀", "e\u{301}", "字", "\n"][rng.gen_range(0..6)];
        doc.insert(pos, text).expect("insert within the text");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_editors_converge_to_the_server_text() {
    let seed = seed();
    let server = Standalone::start();
    let url = server.ws_url();
    let docs = [DocId::parse("shared/one").unwrap(), DocId::parse("shared/two").unwrap()];

    let mut editors = Vec::new();
    for i in 0..4u64 {
        let url = url.clone();
        let docs = docs.clone();
        editors.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i));
            let client = Client::connect(&url, ClientOptions::default()).await.expect("connect");
            let mut handles = Vec::new();
            for doc in &docs {
                handles.push(client.open(doc).await.expect("open"));
            }
            for _ in 0..150 {
                let doc = &handles[rng.gen_range(0..handles.len())];
                random_edit(doc, &mut rng);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..4))).await;
            }
            for doc in &handles {
                doc.wait_synced(SETTLE).await.expect("all own edits acknowledged");
            }
            (client, handles)
        }));
    }
    let mut clients = Vec::new();
    for editor in editors {
        clients.push(editor.await.expect("editor task"));
    }

    // A fresh reader's snapshot is the server's text; every editor must reach exactly it.
    let reader = Client::connect(&url, ClientOptions::default()).await.expect("connect");
    for (d, doc) in docs.iter().enumerate() {
        let fresh = reader.open(doc).await.expect("open");
        let version = clients.iter().map(|(_, h)| h[d].version()).max().unwrap_or(0);
        fresh.wait_version(version, SETTLE).await.expect("reader reaches the last version");
        for (client, handles) in &clients {
            handles[d].wait_version(version, SETTLE).await.expect("editor reaches the last version");
            assert_eq!(
                handles[d].text(),
                fresh.text(),
                "seed {seed}: {} diverged on {doc}",
                client.client_id()
            );
        }
        assert!(version > 0, "seed {seed}: nothing was committed on {doc}");
    }
    for (client, _) in &clients {
        assert!(
            client.errors().is_empty(),
            "seed {seed}: {} recorded {:?}",
            client.client_id(),
            client.errors()
        );
    }
}

#[tokio::test]
async fn a_reading_client_stays_connected_past_the_idle_timeout() {
    let server = Standalone::builder().arg("--idle-timeout").arg("1").start();
    let options = ClientOptions { keepalive: Duration::from_millis(300), ..ClientOptions::default() };
    let client = Client::connect(&server.ws_url(), options).await.expect("connect");
    let doc = client.open(&DocId::parse("quiet").unwrap()).await.expect("open");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    doc.insert(0, "still here").expect("insert");
    doc.wait_synced(SETTLE).await.expect("acknowledged");
    assert_eq!(client.stats().reconnects, 0, "the keepalive kept the connection open");
}
