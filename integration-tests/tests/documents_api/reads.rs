//! GetDocument, ReadHistory, Diff, TransformPosition and checkpoints.

use std::time::Duration;

use futures::StreamExt;
use tandem_proto::proto::{
    CreateCheckpointRequest, DiffRequest, GetDocumentRequest, ListCheckpointsRequest, ReadHistoryRequest,
    TransformPositionRequest,
};
use tonic::Code;

use super::harness::{api_error, apply, delete, edit, eventually, insert, retain, Server};

/// Twelve versions of one document on a server that snapshots every 5 versions (`--snapshot-every
/// 5`): every version's text, read before and after the snapshots at 5 and 10, is the text the
/// edits made and the text a replay of ReadHistory from the empty text makes.
pub async fn every_version_reads_the_same_before_and_after_snapshots(server: &Server) {
    let doc = "reads/snapshots";
    let mut api = server.client("ada").await;
    let script: Vec<Vec<_>> = vec![
        vec![insert("Hello")],
        vec![retain(5), insert(", world")],
        vec![retain(7), delete(5), insert("Tandem")],
        vec![insert("¡"), retain(13)],
        vec![retain(14), insert(" ✓")],
        vec![retain(1), delete(5), insert("Hi"), retain(10)],
        vec![retain(13), insert("!")],
        vec![delete(1), retain(13)],
        vec![retain(2), insert(" there"), retain(11)],
        vec![retain(19), insert(" 🎉")],
        vec![delete(2), retain(19)],
        vec![retain(10), insert("—"), retain(9)],
    ];
    let mut texts = vec![String::new()];
    for (base, op) in script.into_iter().enumerate() {
        let answer = edit(&mut api, doc, base as u64, op.clone()).await;
        assert_eq!(answer.version, base as u64 + 1);
        texts.push(apply(texts.last().expect("a text"), &op));
    }
    let snapshots = format!("SELECT count(*) FROM snapshots WHERE doc = '{doc}' AND version IN (5, 10)");
    eventually(Duration::from_secs(10), "snapshots at versions 5 and 10", || server.count(&snapshots) == 2)
        .await;

    let history = api
        .read_history(ReadHistoryRequest { doc: doc.into(), ..Default::default() })
        .await
        .expect("ReadHistory")
        .into_inner();
    assert_eq!(history.events.len(), 12);
    assert_eq!(history.next_from_version, None, "the default page (100) holds all 12");
    let mut replayed = String::new();
    for (version, text) in texts.iter().enumerate() {
        let got = api
            .get_document(GetDocumentRequest { doc: doc.into(), version: Some(version as u64) })
            .await
            .expect("GetDocument")
            .into_inner();
        assert_eq!((got.version, got.latest_version), (version as u64, 12));
        assert_eq!(&got.text, text, "version {version}");
        assert_eq!(&replayed, text, "replay up to version {version}");
        if let Some(event) = history.events.get(version) {
            replayed = apply(&replayed, &event.op);
        }
    }
    let after = api
        .get_document(GetDocumentRequest { doc: doc.into(), version: Some(13) })
        .await
        .expect_err("no version 13");
    assert_eq!(api_error(&after, Code::NotFound).code, "not_found");
    assert!(after.message().contains("13") && after.message().contains("12"), "{after:?}");
}

/// Pages of history: who, when, which client, and the page arithmetic; the limits of
/// docs/DOCUMENTS.md (100 by default, at most 1,000).
pub async fn history_comes_in_pages_with_authors_and_times(server: &Server) {
    let doc = "reads/history";
    let mut ada = server.client("ada").await;
    let mut bob = server.client("bob").await;
    let started =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis();
    edit(&mut ada, doc, 0, vec![insert("a")]).await;
    edit(&mut bob, doc, 1, vec![retain(1), insert("b")]).await;
    let page = |from, to, size| ReadHistoryRequest {
        doc: doc.into(),
        from_version: from,
        to_version: to,
        page_size: size,
    };
    let history = ada.read_history(page(0, 0, 1)).await.expect("ReadHistory").into_inner();
    assert_eq!(history.events.len(), 1);
    assert_eq!(history.next_from_version, Some(1));
    let first = &history.events[0];
    assert_eq!((first.version, first.author.as_str(), first.seq), (1, "ada", 1));
    assert_eq!(first.client.len(), 43, "a scoped client id");
    assert!(first.committed_at_ms as u128 >= started - 5_000, "{} vs {started}", first.committed_at_ms);
    let rest = ada.read_history(page(1, 0, 1)).await.expect("ReadHistory").into_inner();
    assert_eq!(rest.events.iter().map(|e| (e.version, e.author.as_str())).collect::<Vec<_>>(), [(2, "bob")]);
    assert_eq!(rest.next_from_version, None, "the page reached the latest version");
    assert_ne!(rest.events[0].client, first.client);

    let error = |status: tonic::Status, code| api_error(&status, code).code;
    assert_eq!(
        error(ada.read_history(page(0, 3, 0)).await.expect_err("to after latest"), Code::NotFound),
        "not_found"
    );
    assert_eq!(
        error(ada.read_history(page(3, 0, 0)).await.expect_err("from after latest"), Code::NotFound),
        "not_found"
    );
    assert_eq!(
        error(ada.read_history(page(2, 1, 0)).await.expect_err("from after to"), Code::InvalidArgument),
        "bad_request"
    );

    // 1,001 events: the default page is 100, a page of 5,000 is lowered to 1,000.
    let long = "reads/long-history";
    let writer = ada.clone();
    futures::stream::iter(0..1001)
        .map(|_| {
            let mut api = writer.clone();
            async move { edit(&mut api, long, 0, vec![insert("x")]).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let request = |size| ReadHistoryRequest { doc: long.into(), page_size: size, ..Default::default() };
    let default = ada.read_history(request(0)).await.expect("ReadHistory").into_inner();
    assert_eq!((default.events.len(), default.next_from_version), (100, Some(100)));
    let capped = ada.read_history(request(5_000)).await.expect("ReadHistory").into_inner();
    assert_eq!((capped.events.len(), capped.next_from_version), (1_000, Some(1_000)));
    assert_eq!(capped.events.last().map(|e| e.version), Some(1_000));
}

/// Diff both ways and TransformPosition through inserts and deletes.
pub async fn diffs_and_positions(server: &Server) {
    let doc = "reads/diff";
    let mut api = server.client("ada").await;
    edit(&mut api, doc, 0, vec![insert("hello world")]).await; // 1
    edit(&mut api, doc, 1, vec![retain(6), insert("big "), retain(5)]).await; // 2: "hello big world"
    edit(&mut api, doc, 2, vec![delete(6), retain(9)]).await; // 3: "big world"
    let texts = ["", "hello world", "hello big world", "big world"];
    for (from, to) in [(0, 3), (1, 3), (3, 1), (2, 0), (2, 2)] {
        let op = api
            .diff(DiffRequest { doc: doc.into(), from_version: from, to_version: to })
            .await
            .unwrap_or_else(|e| panic!("Diff {from}→{to}: {e:?}"))
            .into_inner()
            .op;
        assert_eq!(apply(texts[from as usize], &op), texts[to as usize], "Diff {from}→{to}: {op:?}");
    }
    let beyond =
        api.diff(DiffRequest { doc: doc.into(), from_version: 0, to_version: 4 }).await.expect_err("no 4");
    assert_eq!(api_error(&beyond, Code::NotFound).code, "not_found");

    let moved = |position, from, to, stick_after| {
        let mut api = api.clone();
        async move {
            let request = TransformPositionRequest {
                doc: doc.into(),
                position,
                from_version: from,
                to_version: to,
                stick_after,
            };
            api.transform_position(request).await.map(|r| r.into_inner().position)
        }
    };
    // Before "world" at version 1; "big " is inserted exactly there at 2; "hello " goes at 3.
    assert_eq!(moved(6, 1, 2, false).await.expect("moved"), 6, "stays before the insertion");
    assert_eq!(moved(6, 1, 2, true).await.expect("moved"), 10, "moves after the insertion");
    assert_eq!(moved(6, 1, 3, false).await.expect("moved"), 0, "pulled to the deletion's start");
    assert_eq!(moved(6, 1, 3, true).await.expect("moved"), 4);
    assert_eq!(moved(11, 1, 3, false).await.expect("moved"), 9, "the end stays the end");
    assert_eq!(moved(3, 2, 2, false).await.expect("moved"), 3);
    let backward = moved(0, 3, 1, false).await.expect_err("backward");
    assert_eq!(api_error(&backward, Code::InvalidArgument).code, "bad_request");
    let past_the_end = moved(12, 1, 3, false).await.expect_err("past the end of version 1");
    assert_eq!(api_error(&past_the_end, Code::InvalidArgument).code, "bad_request");
    assert!(past_the_end.message().contains("11"), "names the length: {past_the_end:?}");
}

/// Checkpoints are immutable: the same name and version again is the same checkpoint; another
/// version is `already_exists`; they list oldest version first.
pub async fn checkpoints_are_named_once(server: &Server) {
    let doc = "reads/checkpoints";
    let mut api = server.client("ada").await;
    for base in 0..3 {
        edit(&mut api, doc, base, vec![retain(base), insert("x")]).await;
    }
    let create =
        |name: &str, version| CreateCheckpointRequest { doc: doc.into(), name: name.into(), version };
    let first = api.create_checkpoint(create("draft ✓", Some(2))).await.expect("created").into_inner();
    assert_eq!((first.version, first.author.as_str(), first.name.as_str()), (2, "ada", "draft ✓"));
    assert!(first.created_at_ms > 0);
    let again = api.create_checkpoint(create("draft ✓", Some(2))).await.expect("idempotent").into_inner();
    assert_eq!(again, first, "the stored checkpoint, unchanged");
    let conflict = api.create_checkpoint(create("draft ✓", Some(3))).await.expect_err("another version");
    assert_eq!(api_error(&conflict, Code::AlreadyExists).code, "already_exists");
    assert!(conflict.message().contains("version 2"), "names the version it has: {conflict:?}");
    let latest = api.create_checkpoint(create("release", None)).await.expect("at the latest").into_inner();
    assert_eq!(latest.version, 3);
    let early = api.create_checkpoint(create("start", Some(0))).await.expect("version 0").into_inner();
    assert_eq!(early.version, 0);

    let listed = api
        .list_checkpoints(ListCheckpointsRequest { doc: doc.into() })
        .await
        .expect("ListCheckpoints")
        .into_inner()
        .checkpoints;
    let names: Vec<(&str, u64)> = listed.iter().map(|c| (c.name.as_str(), c.version)).collect();
    assert_eq!(names, [("start", 0), ("draft ✓", 2), ("release", 3)]);

    let too_long = api.create_checkpoint(create(&"n".repeat(129), None)).await.expect_err("129 characters");
    assert_eq!(api_error(&too_long, Code::InvalidArgument).code, "bad_request");
    assert!(too_long.message().contains("128"), "{too_long:?}");
    let control = api.create_checkpoint(create("a\nb", None)).await.expect_err("a newline");
    assert_eq!(api_error(&control, Code::InvalidArgument).code, "bad_request");
    let future = api.create_checkpoint(create("future", Some(9))).await.expect_err("no version 9");
    assert_eq!(api_error(&future, Code::NotFound).code, "not_found");
}
