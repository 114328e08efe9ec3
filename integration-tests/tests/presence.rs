//! Presence (docs/PROTOCOL.md, "Presence") against the real single-process server over real
//! sockets: relay with the stamped user and scoped client id, the current presences for a newcomer,
//! the coalescing limit, leave on close, on a dropped connection and on a silent one (the idle
//! timeout), a forged user ignored, a selection outside the document refused with the documented
//! error while the connection stays up, and nothing of it in the event log.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_integration_tests::auth::DevKeys;
use tandem_integration_tests::{RawConn, Standalone};

const DOC: &str = "team/notes";

/// A connection of `user` (session `client`) with `DOC` open; returns it and its `welcome.author`.
async fn join(server: &Standalone, keys: &DevKeys, user: &str, client: &str) -> (RawConn, String) {
    let token = keys.token(user, &["team/*"], &["team/*"]);
    let bearer = format!("Bearer {token}");
    let mut conn = RawConn::upgrade(&server.ws_url(), &[("authorization", &bearer)]).await.expect("upgrade");
    conn.send(json!({"type": "hello", "protocol": 1, "client": client})).await;
    let welcome = conn.expect("welcome").await;
    conn.send(json!({"type": "open", "doc": DOC})).await;
    conn.expect("snapshot").await;
    (conn, welcome["author"].as_str().expect("author").to_owned())
}

/// The next frame of type `kind`, skipping `op` and `ack` frames.
async fn next(conn: &mut RawConn, kind: &str) -> Value {
    loop {
        let frame = conn.recv().await;
        match frame["type"].as_str() {
            Some(k) if k == kind => return frame,
            Some("op" | "ack") => continue,
            _ => panic!("expected {kind}, got {frame}"),
        }
    }
}

fn server(keys: &DevKeys) -> Standalone {
    Standalone::builder().jwt_key_file(&keys.key_file()).start()
}

fn selection(frame: &Value) -> (Value, Value, Value) {
    (frame["version"].clone(), frame["anchor"].clone(), frame["head"].clone())
}

#[tokio::test]
async fn presence_is_relayed_with_the_authenticated_user_and_a_forged_user_is_ignored() {
    let keys = DevKeys::new();
    let server = server(&keys);
    let (mut ann, ann_author) = join(&server, &keys, "ann", "ann-tab").await;
    let (mut bob, _) = join(&server, &keys, "bob", "bob-tab").await;
    ann.send(json!({"type": "op", "doc": DOC, "seq": 1, "base": 0, "op": ["hello"]})).await;
    ann.expect("ack").await;
    bob.send(json!({"type": "presence", "doc": DOC})).await;
    ann.send(json!({"type": "presence", "doc": DOC, "version": 1, "anchor": 1, "head": 4,
        "name": "Ann", "colour": "#e06c75", "user": "mallory", "client": "bob-tab"}))
        .await;
    let seen = next(&mut bob, "presence").await;
    assert_eq!(seen["user"], "ann", "the token's user, not the claimed one: {seen}");
    assert_eq!(seen["client"], ann_author.as_str(), "the scoped id op frames carry: {seen}");
    assert_eq!(selection(&seen), (json!(1), json!(1), json!(4)));
    assert_eq!((seen["name"].clone(), seen["colour"].clone()), (json!("Ann"), json!("#e06c75")));
    // Ann hears Bob (present without a selection) and never her own presence.
    let heard = next(&mut ann, "presence").await;
    assert_eq!(heard["user"], "bob");
    assert!(heard.get("anchor").is_none(), "{heard}");
    ann.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_newcomer_gets_every_presence_in_the_text_of_its_snapshot() {
    let keys = DevKeys::new();
    let server = server(&keys);
    let (mut ann, ann_author) = join(&server, &keys, "ann", "ann-tab").await;
    ann.send(json!({"type": "op", "doc": DOC, "seq": 1, "base": 0, "op": ["world"]})).await;
    ann.expect("ack").await;
    ann.send(json!({"type": "presence", "doc": DOC, "version": 1, "anchor": 0, "head": 5})).await;
    // Versions after the selection was set move it: "hello world" puts "world" at 6..11.
    ann.send(json!({"type": "op", "doc": DOC, "seq": 2, "base": 1, "op": ["hello ", 5]})).await;
    ann.expect("ack").await;
    let (mut cat, _) = join(&server, &keys, "cat", "cat-tab").await;
    cat.send(json!({"type": "presence", "doc": DOC, "version": 2, "anchor": 0, "head": 0})).await;
    let seen = next(&mut cat, "presence").await;
    assert_eq!(seen["client"], ann_author.as_str());
    assert_eq!(selection(&seen), (json!(2), json!(6), json!(11)), "{seen}");
}

#[tokio::test]
async fn an_open_with_presence_gets_the_current_presences_after_its_snapshot() {
    let keys = DevKeys::new();
    let server = server(&keys);
    let (mut ann, ann_author) = join(&server, &keys, "ann", "ann-tab").await;
    ann.send(json!({"type": "op", "doc": DOC, "seq": 1, "base": 0, "op": ["hello"]})).await;
    ann.expect("ack").await;
    ann.send(json!({"type": "presence", "doc": DOC, "version": 1, "anchor": 2, "head": 2, "name": "Ann"}))
        .await;
    // Dan opens with `presence: true` and sends no presence message: the open's answer, then Ann's.
    let token = keys.token("dan", &["team/*"], &["team/*"]);
    let bearer = format!("Bearer {token}");
    let mut dan = RawConn::upgrade(&server.ws_url(), &[("authorization", &bearer)]).await.expect("upgrade");
    dan.send(json!({"type": "hello", "protocol": 1, "client": "dan-tab"})).await;
    dan.expect("welcome").await;
    dan.send(json!({"type": "open", "doc": DOC, "presence": true})).await;
    let snapshot = dan.expect("snapshot").await;
    assert_eq!(snapshot["version"], 1, "{snapshot}");
    let seen = next(&mut dan, "presence").await;
    assert_eq!((seen["user"].clone(), seen["client"].clone()), (json!("ann"), json!(ann_author)), "{seen}");
    assert_eq!(selection(&seen), (json!(1), json!(2), json!(2)));
    assert_eq!(seen["name"], "Ann");
    // Dan takes part as a viewer: Ann hears of him, without a selection.
    let heard = next(&mut ann, "presence").await;
    assert_eq!(heard["user"], "dan", "{heard}");
    assert!(heard.get("anchor").is_none(), "{heard}");
    // An open without it gets no presence frame: a client that predates presence never sees one.
    let (mut eve, _) = join(&server, &keys, "eve", "eve-tab").await;
    ann.send(json!({"type": "presence", "doc": DOC, "version": 1, "anchor": 3, "head": 3})).await;
    next(&mut dan, "presence").await;
    eve.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn updates_over_the_limit_are_coalesced_and_the_latest_arrives() {
    let keys = DevKeys::new();
    let server =
        Standalone::builder().jwt_key_file(&keys.key_file()).arg("--presence-per-second").arg("5").start();
    let (mut ann, _) = join(&server, &keys, "ann", "ann-tab").await;
    let (mut bob, _) = join(&server, &keys, "bob", "bob-tab").await;
    ann.send(json!({"type": "op", "doc": DOC, "seq": 1, "base": 0, "op": ["x".repeat(100)]})).await;
    ann.expect("ack").await;
    bob.send(json!({"type": "presence", "doc": DOC})).await;
    ann.send(json!({"type": "presence", "doc": DOC, "version": 1, "anchor": 0, "head": 0})).await;
    next(&mut ann, "presence").await;
    assert_eq!(next(&mut bob, "presence").await["head"], 0, "the first update goes at once");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 100 moves in about a second: at 5 a second, at most 1 + 5 (+1 for timing) get through.
    let started = Instant::now();
    for caret in 1..=100 {
        ann.send(json!({"type": "presence", "doc": DOC, "version": 1, "anchor": caret, "head": caret})).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent_for = started.elapsed();
    let mut relayed = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(800);
    while let Ok(frame) = tokio::time::timeout_at(deadline.into(), bob.recv()).await {
        assert_eq!(frame["type"], "presence", "{frame}");
        relayed.push(frame["head"].as_u64().expect("head"));
    }
    let allowed = 2 + (sent_for.as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        relayed.len() <= allowed,
        "{} relayed in {sent_for:?}, limit {allowed}: {relayed:?}",
        relayed.len()
    );
    assert!(relayed.len() >= 3, "the limit still lets updates through: {relayed:?}");
    assert_eq!(relayed.last(), Some(&100), "the latest update wins: {relayed:?}");
    ann.assert_alive().await;
}

#[tokio::test]
async fn a_presence_leaves_on_close_on_a_dropped_connection_and_on_silence() {
    let keys = DevKeys::new();
    let server = Standalone::builder().jwt_key_file(&keys.key_file()).arg("--idle-timeout").arg("3").start();
    let (mut bob, _) = join(&server, &keys, "bob", "bob-tab").await;
    bob.send(json!({"type": "presence", "doc": DOC})).await;

    let (mut ann, ann_author) = join(&server, &keys, "ann", "ann-tab").await;
    ann.send(json!({"type": "presence", "doc": DOC, "version": 0, "anchor": 0, "head": 0})).await;
    assert_eq!(next(&mut bob, "presence").await["client"], ann_author.as_str());
    ann.send(json!({"type": "close", "doc": DOC})).await;
    let left = next(&mut bob, "presence_left").await;
    assert_eq!(left, json!({"type": "presence_left", "doc": DOC, "client": ann_author}));

    let (mut cat, cat_author) = join(&server, &keys, "cat", "cat-tab").await;
    cat.send(json!({"type": "presence", "doc": DOC})).await;
    assert_eq!(next(&mut bob, "presence").await["client"], cat_author.as_str());
    drop(cat); // the socket goes away without a close frame
    assert_eq!(next(&mut bob, "presence_left").await["client"], cat_author.as_str());

    // A client that vanished without a word: the idle timeout (3 s here) ends its connection.
    bob.send(json!({"type": "ping"})).await;
    next(&mut bob, "pong").await;
    let (mut dan, dan_author) = join(&server, &keys, "dan", "dan-tab").await;
    dan.send(json!({"type": "presence", "doc": DOC})).await;
    assert_eq!(next(&mut bob, "presence").await["client"], dan_author.as_str());
    let started = Instant::now();
    bob.send(json!({"type": "ping"})).await;
    next(&mut bob, "pong").await;
    let left = loop {
        // Bob stays alive by pinging; Dan says nothing.
        match tokio::time::timeout(Duration::from_millis(800), bob.recv()).await {
            Ok(frame) if frame["type"] == "presence_left" => break frame,
            Ok(frame) => assert_eq!(frame["type"], "pong", "{frame}"),
            Err(_) => bob.send(json!({"type": "ping"})).await,
        }
        assert!(started.elapsed() < Duration::from_secs(10), "dan never left");
    };
    assert_eq!(left["client"], dan_author.as_str());
    assert!(started.elapsed() >= Duration::from_millis(2500), "left after {:?}", started.elapsed());
    drop(ann);
}

#[tokio::test]
async fn a_selection_outside_the_document_is_refused_and_the_connection_stays_up() {
    let keys = DevKeys::new();
    let server = server(&keys);
    let (mut ann, _) = join(&server, &keys, "ann", "ann-tab").await;
    let (mut bob, _) = join(&server, &keys, "bob", "bob-tab").await;
    bob.send(json!({"type": "presence", "doc": DOC})).await;
    ann.send(json!({"type": "op", "doc": DOC, "seq": 1, "base": 0, "op": ["abc"]})).await;
    ann.expect("ack").await;
    ann.send(json!({"type": "presence", "doc": DOC, "version": 1, "anchor": 2, "head": 4})).await;
    let error = next(&mut ann, "error").await;
    assert_eq!((error["code"].clone(), error["doc"].clone()), (json!("bad_request"), json!(DOC)));
    assert_eq!(error["presence"], true, "marked as a refused presence: {error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("outside version 1") && message.contains("at most 3"), "{message}");
    ann.send(json!({"type": "presence", "doc": DOC, "version": 7, "anchor": 0, "head": 0})).await;
    let ahead = next(&mut ann, "error").await;
    assert!(ahead["message"].as_str().unwrap().contains("document is at version 1"), "{ahead}");
    ann.send(json!({"type": "presence", "doc": "team/other", "version": 0, "anchor": 0, "head": 0})).await;
    let not_open = ann.expect_error("bad_request").await;
    assert!(not_open["message"].as_str().unwrap().contains("not open"), "{not_open}");
    ann.send(json!({"type": "presence", "doc": DOC, "colour": "chartreuse"})).await;
    assert!(ann.expect_error("bad_request").await["message"].as_str().unwrap().contains("#rrggbb"));
    ann.assert_alive().await;
    // Nothing refused reached Bob; a good one still does.
    ann.send(json!({"type": "presence", "doc": DOC, "version": 1, "anchor": 3, "head": 3})).await;
    let seen = next(&mut bob, "presence").await;
    assert_eq!(selection(&seen), (json!(1), json!(3), json!(3)));
}

#[tokio::test]
async fn presence_never_enters_the_event_log() {
    let keys = DevKeys::new();
    let server = server(&keys);
    let (mut ann, _) = join(&server, &keys, "ann", "ann-tab").await;
    ann.send(json!({"type": "op", "doc": DOC, "seq": 1, "base": 0, "op": ["abc"]})).await;
    ann.expect("ack").await;
    for caret in 0..=3 {
        ann.send(json!({"type": "presence", "doc": DOC, "version": 1, "anchor": caret, "head": caret})).await;
    }
    ann.assert_alive().await;
    // A reader catching up from version 0 gets exactly the one version, no presence.
    let (mut reader, _) = join(&server, &keys, "eve", "eve-tab").await;
    reader.send(json!({"type": "close", "doc": DOC})).await;
    reader.send(json!({"type": "open", "doc": DOC, "since": 0})).await;
    assert_eq!(reader.expect("op").await["version"], 1);
    assert_eq!(reader.expect("opened").await["version"], 1);
    reader.expect_silence(Duration::from_millis(300)).await;
}
