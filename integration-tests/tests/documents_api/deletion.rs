//! DeleteDocument: the document's rows are purged, its tombstone stored (and, in the cluster,
//! published on the events topic), its WebSocket subscribers and watchers told, and its id used
//! again from version 0.

use std::time::Duration;

use serde_json::json;
use tandem_bus::kafka::{KafkaConfig, KafkaEventSubscriber};
use tandem_bus::{Delivery, EventStream, EventSubscriber};
use tandem_proto::proto::watch_document_response::Event;
use tandem_proto::proto::{
    ApplyEditRequest, CreateCheckpointRequest, DeleteDocumentRequest, GetDocumentRequest,
    ListCheckpointsRequest, ReadHistoryRequest, WatchDocumentRequest,
};
use tandem_protocol::records::{DocumentDeleted, SequencedRecord};
use tandem_protocol::DocId;
use tonic::Code;

use super::harness::{api_error, edit, eventually, insert, latest, retain, Server};

pub async fn a_deleted_document_is_purged_and_everyone_is_told(server: &Server) {
    let doc = "deletion/doc";
    let mut api = server.client("ada").await;
    for base in 0..6 {
        edit(&mut api, doc, base, vec![retain(base), insert("x")]).await;
    }
    let checkpoint =
        |version| CreateCheckpointRequest { doc: doc.into(), name: "before".into(), version: Some(version) };
    api.create_checkpoint(checkpoint(3)).await.expect("a checkpoint");
    let refused =
        ApplyEditRequest { doc: doc.into(), base_version: 6, op: vec![retain(99)], request_id: "bad".into() };
    api.apply_edit(refused).await.expect_err("a rejection, which the log remembers");
    let snapshot = format!("SELECT count(*) FROM snapshots WHERE doc = '{doc}'");
    eventually(Duration::from_secs(10), "the snapshot at version 5", || server.count(&snapshot) > 0).await;
    for table in ["events", "rejections", "checkpoints"] {
        assert!(server.count(&format!("SELECT count(*) FROM {table} WHERE doc = '{doc}'")) > 0, "{table}");
    }

    let mut ws = server.websocket("bob", "desk").await;
    ws.send(json!({"type": "open", "doc": doc})).await;
    assert_eq!(ws.expect("snapshot").await["version"], 6);
    let mut watch = api
        .watch_document(WatchDocumentRequest { doc: doc.into(), from_version: 6 })
        .await
        .expect("watching")
        .into_inner();
    assert!(matches!(
        watch.message().await.expect("an event").expect("caught up").event,
        Some(Event::CaughtUp(_))
    ));
    let mut topic = match server.cluster() {
        Some(cluster) => Some(events_topic(cluster).await),
        None => None,
    };

    let deleted =
        api.delete_document(DeleteDocumentRequest { doc: doc.into() }).await.expect("deleted").into_inner();
    assert_eq!(deleted.last_version, 6);

    let error = ws.expect_error("invalid_op").await;
    assert_eq!(error["doc"], doc);
    assert!(error.get("seq").is_none(), "about the document, not an op: {error}");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("deleted")), "{error}");
    let tombstone = watch.message().await.expect("the tombstone").expect("before the end").event;
    match tombstone {
        Some(Event::Deleted(d)) => {
            assert_eq!((d.doc.as_str(), d.last_version, d.author.as_str()), (doc, 6, "ada"))
        }
        other => panic!("expected the tombstone, got {other:?}"),
    }
    assert!(watch.message().await.expect("a clean end").is_none(), "the watch ends after the tombstone");

    for table in ["events", "rejections", "snapshots", "checkpoints"] {
        let rows = server.count(&format!("SELECT count(*) FROM {table} WHERE doc = '{doc}'"));
        assert_eq!(rows, 0, "{table} of the deleted document");
    }
    let stored = server.sql(&format!("SELECT last_version, author FROM tombstones WHERE doc = '{doc}'"));
    assert_eq!(stored, ["6|ada"]);
    if let Some(topic) = topic.as_mut() {
        let published = tombstone_on(topic.as_mut(), doc).await;
        assert_eq!((published.last_version, published.author.as_str()), (6, "ada"));
    }

    // The document reads as never written, and its id starts again from version 0.
    assert_eq!(latest(&mut api, doc).await, (String::new(), 0));
    let history = api.read_history(ReadHistoryRequest { doc: doc.into(), ..Default::default() }).await;
    assert!(history.expect("ReadHistory").into_inner().events.is_empty());
    let listed = api.list_checkpoints(ListCheckpointsRequest { doc: doc.into() }).await.expect("listed");
    assert!(listed.into_inner().checkpoints.is_empty());
    let gone =
        api.get_document(GetDocumentRequest { doc: doc.into(), version: Some(3) }).await.expect_err("gone");
    assert_eq!(api_error(&gone, Code::NotFound).code, "not_found");
    // The WebSocket client does what PROTOCOL.md says after `invalid_op`: close, open again.
    ws.send(json!({"type": "close", "doc": doc})).await;
    ws.send(json!({"type": "open", "doc": doc})).await;
    let reopened = ws.expect("snapshot").await;
    assert_eq!((reopened["version"].as_u64(), reopened["text"].as_str()), (Some(0), Some("")));
    assert_eq!(edit(&mut api, doc, 0, vec![insert("again")]).await.version, 1);
    assert_eq!(ws.expect("op").await["version"], 1);
    let reused = api.create_checkpoint(checkpoint(1)).await.expect("the name is free again").into_inner();
    assert_eq!(reused.version, 1);

    // A document that never had a version is deleted too (its tombstone says 0).
    let never =
        api.delete_document(DeleteDocumentRequest { doc: "deletion/never".into() }).await.expect("deleted");
    assert_eq!(never.into_inner().last_version, 0);
}

/// A reader of the cluster's events topic, from its end now.
async fn events_topic(cluster: &tandem_integration_tests::cluster::Cluster) -> Box<dyn EventStream> {
    let config = KafkaConfig {
        brokers: cluster.broker_address(),
        events_topic: format!("{}.events", cluster.namespace().as_str()),
        partitions: cluster.partitions(),
        client_id: "documents-api-test".to_owned(),
        ..KafkaConfig::default()
    };
    let subscriber = KafkaEventSubscriber::new(&config);
    tokio::task::spawn_blocking(move || subscriber.subscribe()).await.expect("subscribed")
}

/// The next tombstone of `doc` on the topic.
async fn tombstone_on(topic: &mut dyn EventStream, doc: &str) -> DocumentDeleted {
    let doc = DocId::parse(doc).expect("an id");
    let read = async {
        loop {
            match topic.next().await.expect("the topic is readable") {
                Delivery::Record { record, .. } => match &*record {
                    SequencedRecord::Deleted(deleted) if deleted.doc == doc => return deleted.clone(),
                    _ => continue,
                },
                Delivery::Lagged(_) => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("the tombstone on the events topic")
}
