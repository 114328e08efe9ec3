//! `open` with `since` through the real gateway: a replay of every version up to the catch-up
//! limit, a `snapshot` then `opened` past it (docs/PROTOCOL.md, "This implementation").

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::{gateway, Backend, Client};
use tandem_gateway::{GatewayConfig, GatewayDeps};

const WAIT: Duration = Duration::from_secs(5);

fn kind(frame: &Value) -> (String, u64) {
    (frame["type"].as_str().unwrap_or_default().to_owned(), frame["version"].as_u64().unwrap_or_default())
}

#[tokio::test]
async fn an_open_past_the_catch_up_limit_gets_a_snapshot_and_a_near_one_a_replay() {
    let backend = Backend::start();
    let deps = GatewayDeps {
        submitter: Arc::new(backend.submitter.clone()),
        events: Arc::new(backend.subscriber.clone()),
        store: backend.store.clone(),
        extra_routes: axum::Router::new(),
    };
    let config = GatewayConfig { catch_up_limit: 3, ..GatewayConfig::default() };
    let (address, running) = gateway(config, deps, &backend.shutdown).await;

    let mut writer = Client::connect(address, "writer").await;
    writer.send(json!({"type": "open", "doc": "d"})).await;
    assert_eq!(kind(&writer.next(WAIT).await), ("snapshot".into(), 0));
    for version in 1..=6u64 {
        let op = json!([version - 1, "x"]);
        writer.send(json!({"type": "op", "doc": "d", "seq": version, "base": version - 1, "op": op})).await;
        assert_eq!(kind(&writer.next(WAIT).await), ("ack".into(), version));
    }

    let mut far = Client::connect(address, "far").await;
    far.send(json!({"type": "open", "doc": "d", "since": 2})).await;
    let snapshot = far.next(WAIT).await;
    assert_eq!(kind(&snapshot), ("snapshot".into(), 6), "{snapshot}");
    assert_eq!(snapshot["text"], "xxxxxx");
    assert_eq!(kind(&far.next(WAIT).await), ("opened".into(), 6));

    let mut near = Client::connect(address, "near").await;
    near.send(json!({"type": "open", "doc": "d", "since": 3})).await;
    let frames = [near.next(WAIT).await, near.next(WAIT).await, near.next(WAIT).await, near.next(WAIT).await];
    let got: Vec<_> = frames.iter().map(kind).collect();
    let expected: Vec<(String, u64)> =
        vec![("op".into(), 4), ("op".into(), 5), ("op".into(), 6), ("opened".into(), 6)];
    assert_eq!(got, expected);

    // Both are live subscribers now.
    writer.send(json!({"type": "op", "doc": "d", "seq": 7, "base": 6, "op": [6, "y"]})).await;
    assert_eq!(kind(&far.next(WAIT).await), ("op".into(), 7));
    assert_eq!(kind(&near.next(WAIT).await), ("op".into(), 7));
    backend.stop(running).await;
}
