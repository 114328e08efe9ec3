//! WatchDocument: catch-up from the event log, the CaughtUp marker, live versions in order and each
//! once; the end of a watcher that reads too slowly, and how it resumes.

use std::time::Duration;

use serde_json::json;
use tandem_proto::proto::documents_client::DocumentsClient;
use tandem_proto::proto::watch_document_response::Event;
use tandem_proto::proto::{WatchDocumentRequest, WatchDocumentResponse};
use tonic::transport::Endpoint;
use tonic::{Code, Streaming};

use super::harness::{api_error, edit, insert, retain, websocket_edit, Metadata, Server};

/// The next event of a watch, within 10 s.
async fn next(stream: &mut Streaming<WatchDocumentResponse>) -> Event {
    let message =
        tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("an event within 10 s");
    message.expect("the watch goes on").expect("the watch has not ended").event.expect("an event")
}

fn committed_version(event: &Event) -> u64 {
    match event {
        Event::Committed(e) => e.version,
        other => panic!("expected a committed version, got {other:?}"),
    }
}

fn watch(doc: &str, from_version: u64) -> WatchDocumentRequest {
    WatchDocumentRequest { doc: doc.into(), from_version }
}

/// Versions 2 and 3 from the log, `CaughtUp` at 3, then the API's and a WebSocket client's edits
/// live, in order, each once, with their authors and ops.
pub async fn a_watch_catches_up_then_goes_live(server: &Server) {
    let doc = "watch/live";
    let mut api = server.client("ada").await;
    for base in 0..3 {
        edit(&mut api, doc, base, vec![retain(base), insert("x")]).await;
    }
    let mut watcher = server.client("wanda").await;
    let mut stream = watcher.watch_document(watch(doc, 1)).await.expect("watching").into_inner();
    assert_eq!(committed_version(&next(&mut stream).await), 2);
    assert_eq!(committed_version(&next(&mut stream).await), 3);
    assert_eq!(next(&mut stream).await, Event::CaughtUp(tandem_proto::proto::CaughtUp { version: 3 }));

    edit(&mut api, doc, 3, vec![retain(3), insert("y")]).await;
    let mut ws = server.websocket("bob", "desk").await;
    ws.send(json!({"type": "open", "doc": doc})).await;
    ws.expect("snapshot").await;
    websocket_edit(&mut ws, doc, 1, 4, json!(["z", 4])).await;
    edit(&mut api, doc, 5, vec![retain(5), insert("!")]).await;
    let mut live = Vec::new();
    for _ in 0..3 {
        match next(&mut stream).await {
            Event::Committed(e) => live.push((e.version, e.author, e.op.len(), e.committed_at_ms > 0)),
            other => panic!("expected a live version, got {other:?}"),
        }
    }
    let expected =
        [(4, "ada".to_owned(), 2, true), (5, "bob".to_owned(), 2, true), (6, "ada".to_owned(), 2, true)];
    assert_eq!(live, expected);
    let nothing = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(nothing.is_err(), "nothing more: {nothing:?}");

    // An empty document is caught up at once; a version it does not have is not found.
    let mut empty = watcher.watch_document(watch("watch/empty", 0)).await.expect("watching").into_inner();
    assert_eq!(next(&mut empty).await, Event::CaughtUp(tandem_proto::proto::CaughtUp { version: 0 }));
    let ahead = watcher.watch_document(watch(doc, 99)).await.expect_err("no version 99");
    assert_eq!(api_error(&ahead, Code::NotFound).code, "not_found");
}

/// On a server with `--watch-queue 8`: a watcher that stops reading (its HTTP/2 windows small, so
/// flow control reaches the server soon) while 150 versions of 16 KiB are committed gets, once it
/// reads again, versions in order up to some version N and then UNAVAILABLE `overloaded` naming N;
/// watching again from N gets the rest.
pub async fn a_watch_that_reads_too_slowly_ends_overloaded(server: &Server) {
    let doc = "watch/slow";
    let mut api = server.client("ada").await;
    edit(&mut api, doc, 0, vec![insert("start")]).await;
    let channel = Endpoint::from_shared(server.endpoint())
        .expect("a URL")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connected");
    let token = format!("Bearer {}", server.keys.token("wanda", &[doc], &[]));
    let mut slow = DocumentsClient::with_interceptor(channel, Metadata::new(vec![("authorization", token)]));
    let mut stream = slow.watch_document(watch(doc, 0)).await.expect("watching").into_inner();
    assert_eq!(committed_version(&next(&mut stream).await), 1);
    assert!(matches!(next(&mut stream).await, Event::CaughtUp(_)));

    let chunk = "w".repeat(16 << 10);
    let mut length = 5;
    for version in 1..=150u64 {
        edit(&mut api, doc, version, vec![insert(&chunk), retain(length)]).await;
        length += chunk.len() as u64;
    }
    let mut last = 1;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("within 10 s") {
            Ok(Some(response)) => {
                let version = committed_version(&response.event.expect("an event"));
                assert_eq!(version, last + 1, "in order, each once");
                last = version;
            }
            Ok(None) => panic!("the watch ended without saying why after version {last}"),
            Err(status) => break status,
        }
    };
    assert_eq!(api_error(&end, Code::Unavailable).code, "overloaded");
    assert!(end.message().contains(&format!("from_version {last}")), "names the last version: {end:?}");
    assert!(last < 151, "the watcher was dropped before the end");

    let mut resumed = slow.watch_document(watch(doc, last)).await.expect("watching again").into_inner();
    for version in last + 1..=151 {
        assert_eq!(committed_version(&next(&mut resumed).await), version);
    }
    assert_eq!(next(&mut resumed).await, Event::CaughtUp(tandem_proto::proto::CaughtUp { version: 151 }));
}

/// A watch lasts as long as its token: one that expires (here 5 s from now, the server's 30 s of
/// leeway included) ends the stream with UNAUTHENTICATED `unauthorized`, naming the last version.
pub async fn a_watch_ends_when_its_token_expires(server: &Server) {
    let doc = "watch/expiring";
    let token = server.keys.token_with("wanda", &[doc], &[], |request| request.ttl_secs = -25);
    let mut watcher = server.client_with(Some(&token), None).await;
    let mut stream = watcher.watch_document(watch(doc, 0)).await.expect("still valid").into_inner();
    assert!(matches!(next(&mut stream).await, Event::CaughtUp(_)));
    let end = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("ends within 20 s")
        .expect_err("ends with an error");
    assert_eq!(api_error(&end, Code::Unauthenticated).code, "unauthorized");
    assert!(end.message().contains("from_version 0"), "{end:?}");
}
