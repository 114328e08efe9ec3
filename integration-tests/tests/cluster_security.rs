//! Authentication in the distributed mode, on real processes: the gateways verify users' tokens and
//! permissions exactly as the single process does (docs/SECURITY.md runs every attack there), and the
//! sequencers serve only callers with the service token.

use serde_json::json;
use tandem_bus::OpSubmitter;
use tandem_integration_tests::auth::DevKeys;
use tandem_integration_tests::cluster::Cluster;
use tandem_integration_tests::RawConn;
use tandem_protocol::records::Submission;
use tandem_protocol::{ClientId, DocId};
use tandem_rpc::{GrpcSubmitter, SubmitterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_check_users_and_sequencers_check_gateways() {
    let keys = DevKeys::new();
    let mut cluster =
        Cluster::builder().gateways(2).sequencers(1).partitions(2).jwt_key_file(&keys.key_file()).start();

    // A user with a token edits through one gateway and reads through the other.
    let alice = keys.token("alice", &[], &["team-a/*"]);
    let mut writer = RawConn::hello_with_token(&cluster.gateway_ws_url(0), "alice-1", &alice).await;
    writer.send(json!({"type": "open", "doc": "team-a/plan"})).await;
    writer.expect("snapshot").await;
    writer.send(json!({"type": "op", "doc": "team-a/plan", "seq": 1, "base": 0, "op": ["ship it"]})).await;
    assert_eq!(writer.expect("ack").await["version"], 1);

    // No token, a forged one, and a token without access are refused by the other gateway too.
    for (headers, status) in [
        (vec![], 401),
        (vec![("authorization", format!("Bearer {}", keys.forged_token("mallory", &["*"])))], 401),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let refused = RawConn::upgrade(&cluster.gateway_ws_url(1), &headers).await.err().expect("refused");
        assert_eq!(refused.status, status, "{refused:?}");
    }
    let bob = keys.token("bob", &["team-b/*"], &[]);
    let mut outsider = RawConn::hello_with_token(&cluster.gateway_ws_url(1), "bob-1", &bob).await;
    outsider.send(json!({"type": "open", "doc": "team-a/plan"})).await;
    let forbidden = outsider.expect_error("forbidden").await;
    assert!(forbidden["message"].as_str().unwrap_or_default().contains("may not read"), "{forbidden}");
    let reader_token = keys.token("reader", &["team-a/*"], &[]);
    let mut reader = RawConn::hello_with_token(&cluster.gateway_ws_url(1), "reader-1", &reader_token).await;
    reader.send(json!({"type": "open", "doc": "team-a/plan"})).await;
    assert_eq!(reader.expect("snapshot").await["text"], "ship it");
    reader.send(json!({"type": "op", "doc": "team-a/plan", "seq": 1, "base": 1, "op": [7, "?"]})).await;
    reader.expect_error("forbidden").await;

    // The sequencer refuses a caller without the service token, so nobody can bypass the gateways.
    let sequencer = format!("http://{}", cluster.sequencer(0).address());
    let options = SubmitterOptions { token: Some("guess".to_owned()), ..SubmitterOptions::default() };
    let intruder = GrpcSubmitter::new(vec![sequencer], options).expect("valid options");
    let submission = Submission {
        author: String::new(),
        delete_document: false,
        doc: DocId::parse("team-a/plan").expect("id"),
        client: ClientId::parse("intruder").expect("id"),
        seq: 1,
        base: 1,
        op: serde_json::from_value(json!([7, " now"])).expect("op"),
    };
    // The submitter connects in the background: until it has, submits fail as not connected.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let refused = loop {
        let refused = intruder.submit(submission.clone()).await.expect_err("refused").to_string();
        if refused.contains("bearer token") || std::time::Instant::now() > deadline {
            break refused;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(refused.contains("bearer token is not valid"), "{refused}");

    // Nothing the refused callers sent reached the document.
    writer.send(json!({"type": "op", "doc": "team-a/plan", "seq": 2, "base": 1, "op": [7, "!"]})).await;
    assert_eq!(writer.expect("ack").await["version"], 2);
    let rows =
        cluster.database().query("SELECT version, op FROM events WHERE doc = 'team-a/plan' ORDER BY version");
    assert_eq!(rows, vec![r#"1|["ship it"]"#.to_owned(), r#"2|[7,"!"]"#.to_owned()]);
}
