//! [`ClientOptions::state_dir`] against the scripted gateway of `tests.rs`: what a client restarted
//! on the folder of one that stopped with unacknowledged edits says on the wire, and the folder's
//! rules (one client at a time, one session, files refused rather than guessed at).

use std::path::Path;

use super::*;

fn with_dir(dir: &Path) -> ClientOptions {
    ClientOptions { state_dir: Some(dir.to_owned()), ..options() }
}

/// What client `id` sent to `fake`: its hellos, opens and ops.
#[allow(clippy::type_complexity)]
fn sent_by(fake: &Fake, id: &ClientId) -> (usize, Vec<(DocId, Option<u64>)>, Vec<(u64, u64, Operation)>) {
    let received = fake.received.lock().unwrap();
    let hellos = received.hellos.iter().filter(|c| *c == id).count();
    let opens = received.opens.iter().filter(|(c, _, _)| c == id).map(|(_, d, s)| (d.clone(), *s)).collect();
    let ops =
        received.ops.iter().filter(|(c, ..)| c == id).map(|(_, _, s, b, op)| (*s, *b, op.clone())).collect();
    (hellos, opens, ops)
}

#[tokio::test]
async fn a_restarted_client_resends_its_pending_edits_once_with_their_original_seq_and_base() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(Mutex::new(FakeState::default()));
    let (first, url1) = Fake::start_sharing(None, Arc::clone(&backend)).await;
    let (second, url2) = Fake::start_sharing(None, Arc::clone(&backend)).await;
    let a = Client::connect(&url1, with_dir(dir.path())).await.unwrap();
    let id = a.client_id().clone();
    let b = Client::connect(&url2, options()).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    let db = b.open(&doc()).await.unwrap();
    da.insert(0, "one ").unwrap();
    da.wait_synced(WAIT).await.unwrap();

    // The next op is lost on the network, then a's gateway dies: a is offline with seq 2 in flight.
    first.lose_ops.store(true, Ordering::SeqCst);
    da.insert(4, "two ").unwrap();
    eventually("the op to be written", || a.stats().ops_sent == 2).await;
    let (_, _, ops) = sent_by(&first, &id);
    let in_flight = ops.last().cloned().unwrap();
    assert_eq!((in_flight.0, in_flight.1), (2, 1));
    first.kill().await;
    eventually("a to be offline", || !a.is_connected()).await;
    da.insert(8, "three ").unwrap(); // buffered behind seq 2
    da.insert(14, "four").unwrap();
    assert_eq!(da.pending_edits(), 3);
    let typed = da.text();
    db.insert(0, ">").unwrap(); // version 2: something for the catch-up
    db.wait_synced(WAIT).await.unwrap();
    drop((da, a)); // the process stops

    // The restart, at the gateway that lives. Deaf at first: the document must open from the folder
    // alone, and nothing may be sent before `opened`.
    second.deaf.lock().unwrap().push(id.clone());
    let a = Client::connect(&url2, with_dir(dir.path())).await.unwrap();
    assert_eq!(a.client_id(), &id, "the stored session is taken over");
    let da = a.open(&doc()).await.unwrap();
    assert_eq!((da.text(), da.version(), da.pending_edits()), (typed.clone(), 1, 3));
    eventually("the reopen", || sent_by(&second, &id).1.len() == 1).await;
    assert_eq!(sent_by(&second, &id), (1, vec![(doc(), Some(1))], vec![]));

    // Heard again: catch-up from version 1, `opened`, the op in flight unchanged, then the buffer.
    second.deaf.lock().unwrap().clear();
    a.drop_connection().await.unwrap();
    da.wait_synced(WAIT).await.unwrap();
    let (hellos, opens, ops) = sent_by(&second, &id);
    assert_eq!((hellos, opens), (2, vec![(doc(), Some(1)), (doc(), Some(1))]));
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert_eq!(ops[0], in_flight, "the op in flight exactly as first sent: seq, base and op");
    assert_eq!((ops[1].0, ops[1].1), (3, 3), "then the buffer, next seq, on the version of the ack");
    assert_eq!(ops[1].2.to_json(), serde_json::json!([9, "three four"]));
    db.wait_version(4, WAIT).await.unwrap();
    assert_eq!(second.text(&doc()), ">one two three four");
    assert_eq!((da.text(), db.text()), (second.text(&doc()), second.text(&doc())));
    assert_eq!((a.stats().resubmissions, da.pending_edits()), (1, 0));
    assert!(a.errors().is_empty(), "{:?}", a.errors());

    // The folder now says "synced at version 4, next seq 4": a third process has nothing to send.
    a.shutdown().await.unwrap();
    drop((da, a));
    let a = Client::connect(&url2, with_dir(dir.path())).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    assert_eq!((da.version(), da.pending_edits()), (4, 0));
    da.insert(0, "!").unwrap(); // seq 4: a reused seq or a gap would be refused
    da.wait_synced(WAIT).await.unwrap();
    assert_eq!(sent_by(&second, &id).2.last().map(|op| (op.0, op.1)), Some((4, 4)));
    assert!(a.errors().is_empty(), "{:?}", a.errors());
}

#[tokio::test]
async fn a_closed_document_keeps_its_pending_edits_for_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, url) = Fake::start(None).await;
    let a = Client::connect(&url, with_dir(dir.path())).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    fake.lose_ops.store(true, Ordering::SeqCst);
    da.insert(0, "kept").unwrap();
    // On disk when the edit returns, before the task can have sent it.
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(doc_file(dir.path())).unwrap()).unwrap();
    assert_eq!(
        (&stored["state"]["text"], &stored["state"]["in_flight"]["seq"]),
        (&serde_json::json!("kept"), &serde_json::json!(1))
    );
    eventually("the op to be written", || a.stats().ops_sent == 1).await;
    da.close().await.unwrap();
    fake.lose_ops.store(false, Ordering::SeqCst);
    let again = a.open(&doc()).await.unwrap();
    assert_eq!((again.text().as_str(), again.pending_edits()), ("kept", 1));
    again.wait_synced(WAIT).await.unwrap();
    assert_eq!(fake.text(&doc()), "kept");
    assert!(a.errors().is_empty(), "{:?}", a.errors());
}

#[tokio::test]
async fn one_client_per_folder_and_one_session_per_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (_fake, url) = Fake::start(None).await;
    let a = Client::connect(&url, with_dir(dir.path())).await.unwrap();
    let quick = ClientOptions { connect_timeout: Duration::from_millis(100), ..with_dir(dir.path()) };
    let err = Client::connect(&url, quick).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::StateDir { problem, .. } if problem.contains("in use by another client")),
        "{err}"
    );
    let id = a.client_id().clone();
    a.shutdown().await.unwrap();
    drop(a);

    let other = ClientId::parse("someone-else").unwrap();
    let err = Client::connect(&url, ClientOptions { client_id: Some(other), ..with_dir(dir.path()) })
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&format!("holds session {id}, but client_id someone-else")), "{err}");
    let same = Client::connect(&url, ClientOptions { client_id: Some(id.clone()), ..with_dir(dir.path()) });
    assert_eq!(same.await.unwrap().client_id(), &id);
}

#[tokio::test]
async fn a_state_file_that_does_not_read_back_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (_fake, url) = Fake::start(None).await;
    let a = Client::connect(&url, with_dir(dir.path())).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    da.insert(0, "x").unwrap();
    da.wait_synced(WAIT).await.unwrap();
    a.shutdown().await.unwrap();
    drop((da, a));
    let file = doc_file(dir.path());
    let text = std::fs::read_to_string(&file).unwrap();
    let broken = text.replace("\"next_seq\":2", "\"next_seq\":0");
    assert_ne!(broken, text);
    std::fs::write(&file, broken).unwrap();

    let a = Client::connect(&url, with_dir(dir.path())).await.unwrap();
    let err = a.open(&doc()).await.unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, ClientError::SavedState { .. }), "{shown}");
    assert!(shown.contains(&file.display().to_string()) && shown.contains("next_seq is 0"), "{shown}");
    std::fs::write(&file, "{not json").unwrap();
    assert!(a.open(&doc()).await.unwrap_err().to_string().contains("unreadable"));
}

/// A document that was being reloaded after a rejected op when the process stopped has nothing
/// pending: it opens from a fresh snapshot, and only its `seq` carries on.
#[tokio::test]
async fn a_document_stored_while_awaiting_a_snapshot_opens_fresh_and_continues_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, url) = Fake::start(None).await;
    let a = Client::connect(&url, with_dir(dir.path())).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    for i in 0..4 {
        da.insert(i, "x").unwrap();
        da.wait_synced(WAIT).await.unwrap(); // seqs 1 to 4
    }
    a.shutdown().await.unwrap();
    drop((da, a));
    let file = doc_file(dir.path());
    let mut stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    stored["awaiting_snapshot"] = true.into();
    stored["state"]["text"] = "".into();
    stored["state"]["version"] = 0.into();
    std::fs::write(&file, stored.to_string()).unwrap();

    let a = Client::connect(&url, with_dir(dir.path())).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    assert_eq!((da.text().as_str(), da.version()), ("xxxx", 4), "the server's snapshot");
    da.insert(0, "!").unwrap(); // seq 5: the fake drops a reused seq without an answer
    da.wait_synced(WAIT).await.unwrap();
    assert_eq!(fake.text(&doc()), "!xxxx");
    assert!(a.errors().is_empty(), "{:?}", a.errors());
}

fn doc_file(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("doc-"))
        .expect("the document's file")
}
