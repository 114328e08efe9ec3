//! Durability: SIGKILL the single-process server while clients type, restart it on the same data.
//! Every version a client had seen (so every acknowledged op) is still there; the clients reconnect with
//! `since`, resubmit what was unacknowledged, and converge; each character typed appears exactly once.
//! And a server whose sequencer partition fails stops with a failure status, saying why.
//!
//! Seeded: the seed is printed; replay with `TANDEM_SEED=<seed>`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tandem_client::{Client, ClientOptions};
use tandem_integration_tests::{seed, RawConn, Standalone};
use tandem_protocol::DocId;

const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_op_and_clients_keep_their_pending_edits() {
    let seed = seed();
    let mut server = Standalone::start();
    let url = server.ws_url();
    let doc = DocId::parse("durable").unwrap();
    let typing = Arc::new(AtomicBool::new(true));

    // Each client types only its own letter, so the final count of each letter must equal what it typed.
    let mut typists = Vec::new();
    for (i, letter) in ['a', 'b', 'c'].into_iter().enumerate() {
        let (url, doc, typing) = (url.clone(), doc.clone(), typing.clone());
        typists.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
            let client = Client::connect(&url, ClientOptions::default()).await.expect("connect");
            let handle = client.open(&doc).await.expect("open");
            let mut typed = 0usize;
            while typing.load(Ordering::Relaxed) {
                let pos = rng.gen_range(0..=handle.len_chars());
                handle.insert(pos, &letter.to_string()).expect("insert");
                typed += 1;
                tokio::time::sleep(Duration::from_millis(rng.gen_range(1..5))).await;
            }
            (client, handle, letter, typed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;

    server.kill();
    // What the clients had received before the crash was committed: remember how far they got.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    tokio::time::sleep(Duration::from_millis(700)).await;
    typing.store(false, Ordering::Relaxed);

    let mut typists_done = Vec::new();
    for typist in typists {
        typists_done.push(typist.await.expect("typist task"));
    }
    for (_, handle, _, _) in &typists_done {
        handle.wait_synced(SETTLE).await.expect("every edit is acknowledged after the restart");
    }
    let reader = Client::connect(&url, ClientOptions::default()).await.expect("connect");
    let fresh = reader.open(&doc).await.expect("open");
    let version = typists_done.iter().map(|(_, h, _, _)| h.version()).max().unwrap_or(0);
    fresh.wait_version(version, SETTLE).await.expect("the reader reaches the last version");
    let text = fresh.text();
    for (client, handle, letter, typed) in &typists_done {
        handle.wait_version(version, SETTLE).await.expect("converged");
        assert_eq!(handle.text(), text, "seed {seed}: {} diverged", client.client_id());
        let count = text.chars().filter(|c| c == letter).count();
        assert_eq!(count, *typed, "seed {seed}: {letter:?} typed {typed} times, present {count} times");
        assert!(client.stats().reconnects >= 1, "seed {seed}: {} never reconnected", client.client_id());
    }
}

#[tokio::test]
async fn documents_survive_a_graceful_restart() {
    let mut server = Standalone::start();
    let url = server.ws_url();
    let doc = DocId::parse("kept").unwrap();
    let client =
        Client::connect(&url, ClientOptions { reconnect: false, ..Default::default() }).await.unwrap();
    let handle = client.open(&doc).await.unwrap();
    handle.insert(0, "hello").unwrap();
    handle.wait_synced(SETTLE).await.unwrap();
    // Gone before the stop, so the server has no client to drain and exits at once.
    drop((handle, client));
    assert!(server.terminate(), "SIGTERM ends the server cleanly");
    server.restart();
    let client = Client::connect(&url, ClientOptions::default()).await.unwrap();
    let handle = client.open(&doc).await.unwrap();
    assert_eq!((handle.version(), handle.text()), (1, "hello".to_owned()));
}

/// The partition fails for real: a second server started on the same data folder claims partition 0
/// in the store, so the first server's next commit is fenced and its partition loop ends with an
/// error. The first server must then stop, exit non-zero and say why.
#[tokio::test]
async fn a_failed_partition_ends_the_process_with_a_failure_status() {
    let log = tempfile::NamedTempFile::new().expect("a log file");
    let mut first = Standalone::builder().arg("--drain-grace-seconds").arg("0").log_to(log.path()).start();
    let second = Standalone::builder().data_dir(first.data_dir()).start();
    // An acknowledged op proves the second server has claimed the partition.
    let mut conn = RawConn::hello(&second.ws_url(), "second").await;
    conn.send(json!({"type": "open", "doc": "taken"})).await;
    conn.expect("snapshot").await;
    conn.send(json!({"type": "op", "doc": "taken", "seq": 1, "base": 0, "op": ["x"]})).await;
    conn.expect("ack").await;

    let mut conn = RawConn::hello(&first.ws_url(), "first").await;
    conn.send(json!({"type": "open", "doc": "fenced"})).await;
    conn.expect("snapshot").await;
    conn.send(json!({"type": "op", "doc": "fenced", "seq": 1, "base": 0, "op": ["y"]})).await;
    // Read until the stopping server closes the connection, so its drain is not held up.
    let closed = tokio::time::timeout(SETTLE, async { while conn.recv_any().await.is_some() {} }).await;
    assert!(closed.is_ok(), "the first server kept its connection open after its partition failed");
    let exit = first.wait_exit(SETTLE);
    assert_eq!(exit, Some(false), "exited successfully (Some(true)) or not at all (None)");
    let log = first.log();
    assert!(log.contains("sequencer partition 0 failed: partition 0 was taken over"), "{log}");
}
