//! The Grafana dashboard (deploy/grafana/tandem.json) queries only metrics the services export: a
//! cluster on real processes serves some edits and an error, then every metric name in every
//! panel's query must be in a gateway's or a sequencer's `/metrics` (docs/OPERATIONS.md, "Metrics
//! and the dashboard").

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use tandem_client::{Client, ClientOptions};
use tandem_integration_tests::cluster::Cluster;
use tandem_integration_tests::{http_get, RawConn};
use tandem_protocol::DocId;

/// Every `tandem_*` metric a query names, without the `_bucket`/`_sum`/`_count` of a histogram.
fn queried_metrics(dashboard: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            for (start, _) in expr.match_indices("tandem_") {
                let name: String =
                    expr[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                names.insert(name);
            }
        }
    }
    names
}

/// The metric names in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported() {
    let path = tandem_integration_tests::manifest_dir().join("../deploy/grafana/tandem.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard"))
        .expect("the dashboard is JSON");
    let queried = queried_metrics(&dashboard);
    assert!(queried.len() >= 10, "the dashboard queries too little: {queried:?}");

    let mut cluster = Cluster::builder().gateways(1).sequencers(1).partitions(1).start();
    let url = cluster.gateway_ws_url(0);
    let client = Client::connect(&url, ClientOptions::default()).await.expect("connect");
    let handle = client.open(&DocId::parse("dashboard").unwrap()).await.expect("open");
    for i in 0..20 {
        handle.insert(i, "x").expect("insert");
    }
    handle.wait_synced(Duration::from_secs(30)).await.expect("acknowledged");
    // One error frame, so the errors-by-code series exists.
    let mut raw = RawConn::hello(&url, "dashboard-errors").await;
    raw.send(json!({"type": "op", "doc": "never-opened", "seq": 1, "base": 0, "op": ["a"]})).await;
    raw.expect_error("bad_request").await;

    let gateway = http_get(cluster.gateway(0).address(), "/metrics").expect("gateway metrics").1;
    let sequencer = http_get(cluster.sequencer_http_address(0), "/metrics").expect("sequencer metrics").1;
    let mut available = exported(&gateway);
    available.extend(exported(&sequencer));
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| {
            !["", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| available.contains(&format!("{name}{suffix}")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nobody exports: {missing:?}\nexported: {available:?}"
    );
    // Histograms are real Prometheus histograms (buckets), so quantiles aggregate over replicas.
    assert!(available.contains("tandem_gateway_ack_seconds_bucket"), "{available:?}");
}
