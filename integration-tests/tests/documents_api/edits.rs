//! ApplyEdit: idempotency by request id, server-side transformation of a stale base, refusals;
//! and who may call what.

use futures::StreamExt;
use serde_json::json;
use tandem_proto::proto::{
    ApplyEditRequest, CreateCheckpointRequest, DeleteDocumentRequest, GetDocumentRequest, ReadHistoryRequest,
    WatchDocumentRequest,
};
use tonic::Code;

use super::harness::{
    api_error, delete, edit, insert, latest, retain, websocket_edit, Api, Server, SERVICE_TOKEN,
};

fn request(
    doc: &str,
    base: u64,
    op: Vec<tandem_proto::proto::Component>,
    request_id: &str,
) -> ApplyEditRequest {
    ApplyEditRequest { doc: doc.into(), base_version: base, op, request_id: request_id.into() }
}

/// The client id the event log has for each version of `doc`, from the API's history.
async fn clients(api: &mut Api, doc: &str) -> Vec<String> {
    let history = api
        .read_history(ReadHistoryRequest { doc: doc.into(), ..Default::default() })
        .await
        .expect("ReadHistory")
        .into_inner();
    history.events.into_iter().map(|e| e.client).collect()
}

/// The same request id, retried (one after the other, and five at once), commits once: the
/// retries get the first commit back as a `duplicate`, and the event log has exactly one event of
/// the request's client. Another user's request with the same id is a request of its own.
pub async fn a_retried_edit_commits_once(server: &Server) {
    let doc = "edits/retry";
    let mut ada = server.client("ada").await;
    let first =
        ada.apply_edit(request(doc, 0, vec![insert("once")], "retry-1")).await.expect("applied").into_inner();
    assert_eq!((first.version, first.duplicate), (1, false));
    let retry =
        ada.apply_edit(request(doc, 0, vec![insert("once")], "retry-1")).await.expect("retried").into_inner();
    assert_eq!((retry.version, &retry.op, retry.duplicate), (1, &first.op, true));
    // On another connection, and five at once.
    let mut again = server.client("ada").await;
    let retries = futures::stream::iter(0..5)
        .map(|_| {
            let mut api = again.clone();
            async move { api.apply_edit(request(doc, 0, vec![insert("once")], "retry-1")).await }
        })
        .buffer_unordered(5)
        .collect::<Vec<_>>()
        .await;
    for answer in retries {
        let answer = answer.expect("retried").into_inner();
        assert_eq!((answer.version, answer.duplicate), (1, true));
    }
    assert_eq!(latest(&mut again, doc).await, ("once".to_owned(), 1));
    let client = clients(&mut ada, doc).await.remove(0);
    let rows =
        server.count(&format!("SELECT count(*) FROM events WHERE doc = '{doc}' AND client = '{client}'"));
    assert_eq!(rows, 1, "exactly one event of the request's client");
    assert_eq!(server.count(&format!("SELECT count(*) FROM events WHERE doc = '{doc}'")), 1);

    // The same id from bob is bob's own request; ada's next request id is a new edit.
    let mut bob = server.client("bob").await;
    let bobs = bob
        .apply_edit(request(doc, 1, vec![retain(4), insert("!")], "retry-1"))
        .await
        .expect("bob's")
        .into_inner();
    assert_eq!((bobs.version, bobs.duplicate), (2, false));
    let next = ada
        .apply_edit(request(doc, 2, vec![insert(">"), retain(5)], "retry-2"))
        .await
        .expect("new id")
        .into_inner();
    assert_eq!((next.version, next.duplicate), (3, false));
    let clients = clients(&mut ada, doc).await;
    assert_eq!(clients.len(), 3);
    assert!(clients[0] != clients[1] && clients[0] != clients[2] && clients[1] != clients[2], "{clients:?}");
    // A rejection is remembered too: the same request gets the same refusal.
    let beyond = |api: &mut Api| {
        let mut api = api.clone();
        async move {
            api.apply_edit(request(doc, 3, vec![retain(99)], "retry-3")).await.expect_err("does not fit")
        }
    };
    let refused = beyond(&mut ada).await;
    assert_eq!(api_error(&refused, Code::FailedPrecondition).code, "invalid_op");
    let again = beyond(&mut ada).await;
    assert_eq!((again.code(), again.message()), (refused.code(), refused.message()));
}

/// An edit made against an old version is transformed on the server past what was committed since
/// (a WebSocket client's edit, then another API edit), and answered with the op as committed.
pub async fn an_edit_on_a_stale_base_is_transformed(server: &Server) {
    let doc = "edits/stale";
    let mut api = server.client("ada").await;
    edit(&mut api, doc, 0, vec![insert("hello")]).await; // 1: "hello"
    let mut ws = server.websocket("bob", "desk").await;
    ws.send(json!({"type": "open", "doc": doc})).await;
    ws.expect("snapshot").await;
    let version = websocket_edit(&mut ws, doc, 1, 1, json!(["X", 5])).await; // "Xhello"
    assert_eq!(version, 2);
    // Made against version 1: "!" after "hello".
    let stale = edit(&mut api, doc, 1, vec![retain(5), insert("!")]).await;
    assert_eq!(stale.version, 3);
    assert_eq!(stale.op, vec![retain(6), insert("!")], "moved past the WebSocket's X");
    assert_eq!(latest(&mut api, doc).await, ("Xhello!".to_owned(), 3));
    // Also made against version 1: delete "lo".
    let older = edit(&mut api, doc, 1, vec![retain(3), delete(2)]).await;
    assert_eq!(older.version, 4);
    assert_eq!(older.op, vec![retain(4), delete(2), retain(1)]);
    assert_eq!(latest(&mut api, doc).await, ("Xhel!".to_owned(), 4));
    // The WebSocket session saw every API edit as others' ops, with the op as committed.
    for expected in [3, 4] {
        let frame = ws.expect("op").await;
        assert_eq!(frame["version"], expected, "{frame}");
    }
}

/// Malformed requests are `bad_request` naming the field; an op that does not fit is `invalid_op`;
/// a request over the message size limit (`--max-frame-bytes 65536`) is `too_large`.
pub async fn bad_requests_name_the_problem(server: &Server) {
    let doc = "edits/bad";
    let mut api = server.client("ada").await;
    for (bad_id, why) in [("", "empty"), ("has space", "a space"), (&"r".repeat(65) as &str, "65 characters")]
    {
        let refused = api.apply_edit(request(doc, 0, vec![insert("x")], bad_id)).await.expect_err(why);
        assert_eq!(api_error(&refused, Code::InvalidArgument).code, "bad_request", "{why}");
        assert!(refused.message().contains("request_id"), "{refused:?}");
    }
    let bad_doc =
        api.apply_edit(request("no spaces allowed", 0, vec![insert("x")], "r1")).await.expect_err("doc");
    assert_eq!(api_error(&bad_doc, Code::InvalidArgument).code, "bad_request");
    assert!(bad_doc.message().contains("doc"), "{bad_doc:?}");
    let ahead = api.apply_edit(request(doc, 7, vec![insert("x")], "r2")).await.expect_err("base ahead");
    assert_eq!(api_error(&ahead, Code::FailedPrecondition).code, "invalid_op");
    let big = "y".repeat(70_000);
    let too_large = api.apply_edit(request(doc, 0, vec![insert(&big)], "r3")).await.expect_err("70 kB");
    assert_eq!(api_error(&too_large, Code::ResourceExhausted).code, "too_large");
    assert!(too_large.message().contains("65536"), "names the limit: {too_large:?}");
    // Past twice the limit (at least 4 MiB) gRPC itself refuses the message, before the API reads it.
    let huge = "z".repeat(5 << 20);
    let refused = api.apply_edit(request(doc, 0, vec![insert(&huge)], "r4")).await.expect_err("5 MiB");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert_eq!(latest(&mut api, doc).await.1, 0, "nothing was committed");
}

/// A token allows what its `docs` claim says: reading needs read permission, everything that
/// changes a document write permission (`forbidden`, PERMISSION_DENIED otherwise); no token or a
/// bad one is `unauthorized`. The service token may do everything, as the author it names.
pub async fn permissions_are_the_websockets(server: &Server) {
    let doc = "auth/readable";
    let mut writer = server.client("ada").await;
    edit(&mut writer, doc, 0, vec![insert("text")]).await;
    let reader_token = server.keys.token("rita", &[doc], &[]);
    let mut reader = server.client_with(Some(&reader_token), None).await;
    assert_eq!(latest(&mut reader, doc).await, ("text".to_owned(), 1), "read permission reads");

    let forbidden = |status: tonic::Status| {
        let error = api_error(&status, Code::PermissionDenied);
        assert_eq!(error.code, "forbidden");
        assert!(error.message.contains("rita"), "names the user: {}", error.message);
    };
    forbidden(
        reader.apply_edit(request(doc, 1, vec![insert("x")], "r1")).await.expect_err("no write permission"),
    );
    let checkpoint = CreateCheckpointRequest { doc: doc.into(), name: "c".into(), version: None };
    forbidden(reader.create_checkpoint(checkpoint).await.expect_err("no write permission"));
    forbidden(reader.delete_document(DeleteDocumentRequest { doc: doc.into() }).await.expect_err("no write"));
    let other = GetDocumentRequest { doc: "auth/secret".into(), version: None };
    forbidden(reader.get_document(other).await.expect_err("no read permission"));
    let watch = WatchDocumentRequest { doc: "auth/secret".into(), from_version: 0 };
    forbidden(reader.watch_document(watch).await.expect_err("no read permission"));
    assert_eq!(latest(&mut writer, doc).await.1, 1, "nothing changed");

    let unauthorized =
        |status: tonic::Status| assert_eq!(api_error(&status, Code::Unauthenticated).code, "unauthorized");
    let get = || GetDocumentRequest { doc: doc.into(), version: None };
    unauthorized(server.client_with(None, None).await.get_document(get()).await.expect_err("no token"));
    let forged = server.keys.forged_token("ada", &["*"]);
    unauthorized(
        server.client_with(Some(&forged), None).await.get_document(get()).await.expect_err("forged"),
    );

    let mut service = server.client_with(Some(SERVICE_TOKEN), Some("carol")).await;
    let by_service =
        service.apply_edit(request(doc, 1, vec![retain(4), insert("!")], "svc-1")).await.expect("applied");
    assert_eq!(by_service.into_inner().version, 2);
    let mut anonymous_service = server.client_with(Some(SERVICE_TOKEN), None).await;
    edit(&mut anonymous_service, doc, 2, vec![insert(">"), retain(5)]).await;
    // A user cannot name another author.
    let ada_as_bob = server.client_with(Some(&server.keys.token("ada", &[], &["*"])), Some("bob")).await;
    edit(&mut ada_as_bob.clone(), doc, 3, vec![insert("<"), retain(6)]).await;
    let history = writer
        .read_history(ReadHistoryRequest { doc: doc.into(), ..Default::default() })
        .await
        .expect("ReadHistory")
        .into_inner();
    let authors: Vec<&str> = history.events.iter().map(|e| e.author.as_str()).collect();
    assert_eq!(authors, ["ada", "carol", "service", "ada"]);
}
