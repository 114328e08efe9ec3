//! Every error of docs/PROTOCOL.md that applies to the single-process mode without authentication,
//! provoked against the real server over a real socket. Each test checks the documented code, that the
//! message names the problem, and that the connection (where the protocol keeps it open) and other
//! documents and connections keep working.

use std::time::Duration;

use serde_json::json;
use tandem_integration_tests::{RawConn, Standalone};
use tokio_tungstenite::tungstenite::Message;

/// A connection with `doc` open at version 0.
async fn open(url: &str, client: &str, doc: &str) -> RawConn {
    let mut conn = RawConn::hello(url, client).await;
    conn.send(json!({"type": "open", "doc": doc})).await;
    let snapshot = conn.expect("snapshot").await;
    assert_eq!(snapshot["doc"], doc);
    conn
}

/// Commits `text` at the end of `doc` as `seq` on `base` and returns the acknowledged version.
async fn append(conn: &mut RawConn, doc: &str, seq: u64, base: u64, len: u64, text: &str) -> u64 {
    let op = if len == 0 { json!([text]) } else { json!([len, text]) };
    conn.send(json!({"type": "op", "doc": doc, "seq": seq, "base": base, "op": op})).await;
    let ack = conn.expect("ack").await;
    assert_eq!(ack["seq"], seq, "{ack}");
    ack["version"].as_u64().expect("version")
}

fn message(error: &serde_json::Value) -> &str {
    error["message"].as_str().expect("error has a message")
}

#[tokio::test]
async fn first_frame_must_be_hello() {
    let server = Standalone::start();
    let mut conn = RawConn::connect(&server.ws_url()).await;
    conn.send(json!({"type": "open", "doc": "d"})).await;
    let error = conn.expect_error("bad_request").await;
    assert!(message(&error).contains("first message must be hello"), "{error}");
    assert_eq!(conn.expect_close().await.map(|f| u16::from(f.code)), Some(1008));
}

#[tokio::test]
async fn unknown_protocol_version_is_refused() {
    let server = Standalone::start();
    let mut conn = RawConn::connect(&server.ws_url()).await;
    conn.send(json!({"type": "hello", "protocol": 7, "client": "c"})).await;
    let error = conn.expect_error("unsupported_protocol").await;
    assert!(message(&error).contains("protocol version 7"), "{error}");
    assert_eq!(conn.expect_close().await.map(|f| u16::from(f.code)), Some(1002));
}

#[tokio::test]
async fn handshake_must_come_in_time() {
    let server = Standalone::builder().arg("--handshake-timeout").arg("1").start();
    let mut conn = RawConn::connect(&server.ws_url()).await;
    let error = conn.expect_error("bad_request").await;
    assert!(message(&error).contains("no hello within 1 s"), "{error}");
    assert_eq!(conn.expect_close().await.map(|f| u16::from(f.code)), Some(1008));
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let server = Standalone::builder().arg("--idle-timeout").arg("1").start();
    let mut conn = RawConn::hello(&server.ws_url(), "c").await;
    let error = conn.expect_error("bad_request").await;
    assert!(message(&error).contains("no message for 1 s"), "{error}");
    assert_eq!(conn.expect_close().await.map(|f| u16::from(f.code)), Some(1008));
}

#[tokio::test]
async fn malformed_messages_get_bad_request_and_the_connection_stays_open() {
    let server = Standalone::start();
    let url = server.ws_url();
    let mut conn = open(&url, "c", "doc").await;
    let cases: Vec<(String, &str)> = vec![
        ("this is not json".into(), "not valid JSON"),
        ("[1,2]".into(), "JSON object"),
        (json!({"doc": "doc"}).to_string(), "no `type`"),
        (json!({"type": "dance"}).to_string(), "unknown message type \"dance\""),
        (json!({"type": "open"}).to_string(), "missing field `doc`"),
        (json!({"type": "open", "doc": "has space"}).to_string(), "field `doc`"),
        (json!({"type": "open", "doc": "x".repeat(257)}).to_string(), "1 to 256 bytes"),
        (json!({"type": "op", "doc": "doc", "seq": "1", "base": 0, "op": []}).to_string(), "invalid type"),
        (json!({"type": "op", "doc": "doc", "seq": 1, "base": 0, "op": [1.5]}).to_string(), "field `op`"),
        (json!({"type": "op", "doc": "doc", "seq": 1, "base": 0, "op": [1e300]}).to_string(), "field `op`"),
        (
            json!({"type": "op", "doc": "doc", "seq": 1, "base": 0, "op": [u64::MAX]}).to_string(),
            "out of range",
        ),
        (json!({"type": "op", "doc": "other", "seq": 1, "base": 0, "op": ["x"]}).to_string(), "not open"),
        (json!({"type": "open", "doc": "doc"}).to_string(), "already open"),
        (json!({"type": "hello", "protocol": 1, "client": "c"}).to_string(), "already received"),
        (format!("{}{}", "[".repeat(5000), "]".repeat(5000)), "recursion limit"),
    ];
    for (frame, expected) in cases {
        conn.send_text(&frame).await;
        let error = conn.expect_error("bad_request").await;
        assert!(message(&error).contains(expected), "frame {frame:.80}: expected {expected:?} in {error}");
    }
    conn.send_frame(Message::binary(vec![1, 2, 3])).await;
    let error = conn.expect_error("bad_request").await;
    assert!(message(&error).contains("binary frames"), "{error}");
    conn.assert_alive().await;
    // The document is still usable on the same connection.
    assert_eq!(append(&mut conn, "doc", 1, 0, 0, "ok").await, 1);
}

#[tokio::test]
async fn since_ahead_of_the_document_is_a_bad_request() {
    let server = Standalone::start();
    let mut conn = RawConn::hello(&server.ws_url(), "c").await;
    conn.send(json!({"type": "open", "doc": "d", "since": 5})).await;
    let error = conn.expect_error("bad_request").await;
    assert!(message(&error).contains("since 5 is ahead of the document, which is at version 0"), "{error}");
    assert_eq!(error["doc"], "d");
    // Not opened: it can be opened properly now.
    conn.send(json!({"type": "open", "doc": "d", "since": 0})).await;
    assert_eq!(conn.expect("opened").await["version"], 0);
}

#[tokio::test]
async fn invalid_ops_are_refused_use_their_seq_and_leave_everything_else_alone() {
    let server = Standalone::start();
    let url = server.ws_url();
    let mut conn = open(&url, "author", "doc").await;
    let mut watcher = open(&url, "watcher", "doc").await;
    let mut elsewhere = open(&url, "other", "elsewhere").await;
    assert_eq!(append(&mut conn, "doc", 1, 0, 0, "abc").await, 1);
    assert_eq!(watcher.expect("op").await["version"], 1);

    // The op does not fit the base text.
    conn.send(json!({"type": "op", "doc": "doc", "seq": 2, "base": 1, "op": [5, "x"]})).await;
    let error = conn.expect_error("invalid_op").await;
    assert!(message(&error).contains("spans 5 characters but version 1 has 3"), "{error}");
    assert_eq!((error["doc"].as_str(), error["seq"].as_u64()), (Some("doc"), Some(2)));
    // A base in the future.
    conn.send(json!({"type": "op", "doc": "doc", "seq": 3, "base": 9, "op": [3]})).await;
    let error = conn.expect_error("invalid_op").await;
    assert!(message(&error).contains("base 9 is ahead"), "{error}");
    // A gap in seq.
    conn.send(json!({"type": "op", "doc": "doc", "seq": 10, "base": 1, "op": [3]})).await;
    let error = conn.expect_error("invalid_op").await;
    assert!(
        message(&error).contains("seq 10 skips ahead (expected 4); it is used up now, so the next seq is 11"),
        "{error}"
    );
    // Resubmitting a refused op gets the same error again.
    conn.send(json!({"type": "op", "doc": "doc", "seq": 2, "base": 1, "op": [5, "x"]})).await;
    let again = conn.expect_error("invalid_op").await;
    assert!(message(&again).contains("spans 5 characters"), "{again}");

    // Refused seqs are used up; the client continues after the last one it used.
    conn.assert_alive().await;
    assert_eq!(append(&mut conn, "doc", 11, 1, 3, "d").await, 2);
    assert_eq!(watcher.expect("op").await["version"], 2, "the watcher saw no refused op");
    assert_eq!(append(&mut elsewhere, "elsewhere", 1, 0, 0, "fine").await, 1);
}

#[tokio::test]
async fn resubmitting_a_committed_op_applies_it_once() {
    let server = Standalone::start();
    let url = server.ws_url();
    let mut conn = open(&url, "author", "doc").await;
    let op = json!({"type": "op", "doc": "doc", "seq": 1, "base": 0, "op": ["once"]});
    conn.send(op.clone()).await;
    assert_eq!(conn.expect("ack").await["version"], 1);
    // This connection already has version 1: nothing more is sent.
    conn.send(op.clone()).await;
    conn.expect_silence(Duration::from_millis(500)).await;
    drop(conn);

    // A new connection of the same client catches up: its own op arrives as `ack`, once.
    let mut again = RawConn::hello(&url, "author").await;
    again.send(json!({"type": "open", "doc": "doc", "since": 0})).await;
    let ack = again.expect("ack").await;
    assert_eq!((ack["seq"].as_u64(), ack["version"].as_u64()), (Some(1), Some(1)));
    assert_eq!(again.expect("opened").await["version"], 1);
    again.send(op).await;
    again.expect_silence(Duration::from_millis(500)).await;

    let mut reader = open(&url, "reader", "other").await;
    reader.send(json!({"type": "open", "doc": "doc"})).await;
    let snapshot = reader.expect("snapshot").await;
    assert_eq!((snapshot["version"].as_u64(), snapshot["text"].as_str()), (Some(1), Some("once")));
}

#[tokio::test]
async fn limits_give_too_large() {
    let server = Standalone::builder()
        .arg("--max-op-chars")
        .arg("10")
        .arg("--max-document-chars")
        .arg("15")
        .arg("--max-open-documents")
        .arg("2")
        .start();
    let url = server.ws_url();
    let mut conn = open(&url, "c", "doc").await;
    conn.send(json!({"type": "op", "doc": "doc", "seq": 1, "base": 0, "op": ["x".repeat(11)]})).await;
    let error = conn.expect_error("too_large").await;
    assert!(message(&error).contains("inserts 11 characters; the limit is 10"), "{error}");
    assert_eq!(append(&mut conn, "doc", 2, 0, 0, &"y".repeat(10)).await, 1);
    conn.send(json!({"type": "op", "doc": "doc", "seq": 3, "base": 1, "op": [10, "z".repeat(6)]})).await;
    let error = conn.expect_error("too_large").await;
    assert!(message(&error).contains("would have 16 characters; the limit is 15"), "{error}");

    conn.send(json!({"type": "open", "doc": "second"})).await;
    conn.expect("snapshot").await;
    conn.send(json!({"type": "open", "doc": "third"})).await;
    let error = conn.expect_error("too_large").await;
    assert!(message(&error).contains("the limit is 2"), "{error}");
    conn.assert_alive().await;
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_the_connection_with_1009() {
    let server = Standalone::builder().arg("--max-frame-bytes").arg("100000").start();
    let url = server.ws_url();
    let mut bystander = open(&url, "bystander", "doc").await;
    for size in [100_500, 1_050_000] {
        let mut conn = open(&url, "c", "doc").await;
        let frame = json!({"type": "op", "doc": "doc", "seq": 1, "base": 0, "op": ["x".repeat(size)]});
        conn.send(frame).await;
        let error = conn.expect_error("too_large").await;
        assert!(message(&error).contains("limit of 100000 bytes"), "{error}");
        assert_eq!(conn.expect_close().await.map(|f| u16::from(f.code)), Some(1009), "frame of {size} bytes");
    }
    assert_eq!(append(&mut bystander, "doc", 1, 0, 0, "still here").await, 1);
}

#[tokio::test]
async fn a_client_that_reads_too_slowly_is_disconnected_as_overloaded() {
    let server = Standalone::builder().arg("--outbound-queue").arg("8").start();
    let url = server.ws_url();
    let mut slow = open(&url, "slow", "doc").await;
    let mut writer = open(&url, "writer", "doc").await;
    // Enough data to fill the socket buffers and then the 8-frame queue of the reader that is not reading.
    write_chunks(&mut writer, "doc", 400, 16_000).await;
    // The slow reader now reads: it finds an `overloaded` error and the 4408 close after what was queued.
    let mut saw_error = false;
    while let Some(frame) =
        tokio::time::timeout(Duration::from_secs(10), slow.recv_any()).await.expect("frames")
    {
        if frame["type"] == "error" {
            assert_eq!(frame["code"], "overloaded", "{frame}");
            assert!(message(&frame).contains("more than 8 messages"), "{frame}");
            saw_error = true;
        }
    }
    assert!(saw_error, "no overloaded error before the close");
    assert_eq!(slow.close_code(), Some(4408));
    // Everyone else is unaffected.
    writer.assert_alive().await;
    let mut fresh = open(&url, "fresh", "other").await;
    fresh.assert_alive().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_after_the_write_timeout() {
    let server = Standalone::builder().arg("--write-timeout").arg("1").start();
    let url = server.ws_url();
    let mut stalled = open(&url, "stalled", "doc").await;
    let mut writer = open(&url, "writer", "doc").await;
    write_chunks(&mut writer, "doc", 400, 16_000).await;
    // Not reading for longer than the write timeout: the server gives up on this connection.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ended =
        tokio::time::timeout(Duration::from_secs(10), async { while stalled.recv_any().await.is_some() {} })
            .await;
    assert!(ended.is_ok(), "the stalled connection was not closed");
    assert!(matches!(stalled.close_code(), None | Some(4408)), "{:?}", stalled.close_code());
    writer.assert_alive().await;
}

#[tokio::test]
async fn catch_up_longer_than_the_outbound_queue_completes() {
    let server = Standalone::builder().arg("--outbound-queue").arg("16").start();
    let url = server.ws_url();
    let mut writer = open(&url, "writer", "long").await;
    write_chunks(&mut writer, "long", 300, 1).await;
    let mut reader = RawConn::hello(&url, "reader").await;
    reader.send(json!({"type": "open", "doc": "long", "since": 0})).await;
    for version in 1..=300u64 {
        let op = reader.expect("op").await;
        assert_eq!(op["version"], version);
    }
    assert_eq!(reader.expect("opened").await["version"], 300);
}

#[tokio::test]
async fn hostile_sequence_numbers_do_not_disturb_the_server() {
    let server = Standalone::start();
    let url = server.ws_url();
    let mut conn = open(&url, "evil", "doc").await;
    for _ in 0..2 {
        conn.send(json!({"type": "op", "doc": "doc", "seq": 0, "base": 0, "op": ["x"]})).await;
        let error = conn.expect_error("invalid_op").await;
        assert!(message(&error).contains("seq must start at 1"), "{error}");
    }
    conn.send(json!({"type": "op", "doc": "doc", "seq": u64::MAX, "base": 0, "op": ["x"]})).await;
    let error = conn.expect_error("bad_request").await;
    assert!(message(&error).contains("the limit is 9007199254740991"), "{error}");
    let top = (1u64 << 53) - 1;
    conn.send(json!({"type": "op", "doc": "doc", "seq": top, "base": 0, "op": ["x"]})).await;
    conn.expect_error("invalid_op").await;
    conn.send(json!({"type": "op", "doc": "doc", "seq": 5, "base": 0, "op": ["x"]})).await;
    let error = conn.expect_error("invalid_op").await;
    assert!(message(&error).contains("already used"), "{error}");
    // The server and other clients carry on.
    let mut other = open(&url, "other", "doc").await;
    assert_eq!(append(&mut other, "doc", 1, 0, 0, "fine").await, 1);
}

/// Writes `count` ops, each appending `size` characters, waiting for each ack.
async fn write_chunks(writer: &mut RawConn, doc: &str, count: u64, size: usize) {
    let chunk = "w".repeat(size);
    let mut len = 0;
    for seq in 1..=count {
        append(writer, doc, seq, seq - 1, len, &chunk).await;
        len += size as u64;
    }
}
