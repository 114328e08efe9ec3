//! One trace per op, across processes, in a real OTLP receiver (Jaeger, queried through its API):
//! docs/TRACING.md, "Spans". The cluster's processes export with the standard `OTEL_*` variables
//! only; the trace of each op must hold the gateway's `receive` → `submit`, the sequencer's
//! `ingress append` → `decide` → `commit` → `publish`, every gateway's `deliver` and the author's
//! `ack`, each the child of the one before it, with the document, version and batch size.

use std::time::{Duration, Instant};

use tandem_client::{Client, ClientOptions, DocHandle};
use tandem_integration_tests::cluster::Cluster;
use tandem_integration_tests::jaeger::{Jaeger, Trace};
use tandem_integration_tests::Standalone;
use tandem_protocol::DocId;

/// How long spans may take to reach Jaeger: the services export every 100 ms here
/// (`OTEL_BSP_SCHEDULE_DELAY`), Jaeger stores after its own 100 ms batch.
const EXPORT_WAIT: Duration = Duration::from_secs(30);

const SYNC: Duration = Duration::from_secs(30);

/// The variables that turn tracing on, pointed at `jaeger`.
fn otel_env(jaeger: &Jaeger) -> [(&'static str, String); 2] {
    [("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_endpoint()), ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned())]
}

/// Types `ops` single characters, each acknowledged before the next, and waits until `reader`
/// has them all.
async fn type_acknowledged(writer: &DocHandle, reader: Option<&DocHandle>, ops: usize) {
    for i in 0..ops {
        writer.insert(i, "x").expect("insert");
        writer.wait_synced(SYNC).await.expect("acknowledged");
    }
    if let Some(reader) = reader {
        reader.wait_version(ops as u64, SYNC).await.expect("the reader has every version");
    }
}

/// The traces whose root is a `receive` of `doc`, once each holds every span in `expected`
/// (operation, how many); fails with what arrived when that takes longer than [`EXPORT_WAIT`].
fn complete_traces(
    jaeger: &Jaeger,
    service: &str,
    doc: &str,
    count: usize,
    expected: &[(&str, usize)],
) -> Vec<Trace> {
    let deadline = Instant::now() + EXPORT_WAIT;
    loop {
        let traces = jaeger.traces(service, "receive", "document", doc);
        let complete = traces.len() == count
            && traces.iter().all(|t| expected.iter().all(|(op, n)| t.named(op).len() == *n));
        if complete {
            return traces;
        }
        if Instant::now() > deadline {
            let outlines: Vec<String> = traces.iter().map(Trace::outline).collect();
            panic!(
                "expected {count} traces of {doc} with {expected:?}; Jaeger has {}:\n{}\n--- jaeger log ---\n{}",
                traces.len(),
                outlines.join("\n"),
                jaeger.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asserts that `child`'s only span is the child of `parent`'s only span.
fn assert_child(trace: &Trace, parent: &str, child: &str) {
    let (parent_span, child_span) = (trace.only(parent), trace.only(child));
    assert_eq!(
        child_span.parent.as_deref(),
        Some(parent_span.id.as_str()),
        "{child} under {parent}: {}",
        trace.outline()
    );
}

/// Asserts the attributes every owner and delivery span carries.
fn assert_tags(trace: &Trace, operation: &str, doc: &str, version: Option<u64>, batched: bool) {
    for span in trace.named(operation) {
        assert_eq!(
            span.tags.get("document").map(String::as_str),
            Some(doc),
            "{operation}: {}",
            trace.outline()
        );
        if let Some(version) = version {
            assert_eq!(
                span.tags.get("version"),
                Some(&version.to_string()),
                "{operation}: {}",
                trace.outline()
            );
        }
        if batched {
            let size: u64 = span.tags.get("batch_size").and_then(|s| s.parse().ok()).unwrap_or(0);
            assert!(size >= 1, "{operation} has a batch size: {}", trace.outline());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_op_is_one_trace_from_the_authors_gateway_through_the_sequencer_to_every_gateway() {
    let jaeger = Jaeger::start();
    let mut builder = Cluster::builder().gateways(2).sequencers(1).partitions(2);
    for (name, value) in otel_env(&jaeger) {
        builder = builder.service_env(name, &value);
    }
    let cluster = builder.start();
    let doc = DocId::parse(&format!("traced-{:08x}", rand::random::<u32>())).unwrap();
    let writer =
        Client::connect(&cluster.gateway_ws_url(0), ClientOptions::default()).await.expect("connect");
    let reader =
        Client::connect(&cluster.gateway_ws_url(1), ClientOptions::default()).await.expect("connect");
    let (written, read) = (writer.open(&doc).await.expect("open"), reader.open(&doc).await.expect("open"));
    const OPS: usize = 3;
    type_acknowledged(&written, Some(&read), OPS).await;

    let expected = [
        ("receive", 1),
        ("submit", 1),
        ("ingress append", 1),
        ("decide", 1),
        ("commit", 1),
        ("publish", 1),
        ("deliver", 2),
        ("ack", 1),
    ];
    let traces = complete_traces(&jaeger, "tandem-gateway", doc.as_str(), OPS, &expected);
    let mut versions = Vec::new();
    for trace in &traces {
        let outline = trace.outline();
        assert_eq!(trace.only("receive").parent, None, "receive is the root: {outline}");
        for (parent, child) in [
            ("receive", "submit"),
            ("submit", "ingress append"),
            ("ingress append", "decide"),
            ("decide", "commit"),
            ("commit", "publish"),
        ] {
            assert_child(trace, parent, child);
        }
        let publish = trace.only("publish");
        let delivers = trace.named("deliver");
        for deliver in &delivers {
            assert_eq!(
                deliver.parent.as_deref(),
                Some(publish.id.as_str()),
                "deliver under publish: {outline}"
            );
        }
        // One deliver per gateway; the ack comes from the author's.
        let mut delivering: Vec<_> =
            delivers.iter().map(|d| d.instance.clone().unwrap_or_default()).collect();
        delivering.sort();
        assert_eq!(delivering, ["gateway-0", "gateway-1"], "{outline}");
        let ack = trace.only("ack");
        let ack_parent = ack.parent.as_deref().and_then(|p| trace.span(p)).expect("ack has a parent");
        assert_eq!(
            (ack_parent.operation.as_str(), ack.instance.as_deref()),
            ("deliver", Some("gateway-0")),
            "{outline}"
        );
        // Each span from the process it describes.
        for (operation, service) in [
            ("receive", "tandem-gateway"),
            ("submit", "tandem-gateway"),
            ("ingress append", "tandem-sequencer"),
            ("decide", "tandem-sequencer"),
            ("commit", "tandem-sequencer"),
            ("publish", "tandem-sequencer"),
            ("ack", "tandem-gateway"),
        ] {
            assert_eq!(trace.only(operation).service, service, "{operation}: {outline}");
        }
        let version: u64 = trace.only("decide").tags["version"].parse().expect("decide records the version");
        assert_eq!(
            trace.only("decide").tags.get("outcome").map(String::as_str),
            Some("committed"),
            "{outline}"
        );
        for operation in ["receive", "submit", "ingress append", "decide"] {
            assert_tags(trace, operation, doc.as_str(), None, false);
        }
        for operation in ["commit", "publish"] {
            assert_tags(trace, operation, doc.as_str(), Some(version), true);
        }
        for operation in ["deliver", "ack"] {
            assert_tags(trace, operation, doc.as_str(), Some(version), false);
        }
        versions.push(version);
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=OPS as u64).collect::<Vec<_>>(), "one trace per op, each its own version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_process_traces_an_op_from_receive_to_ack() {
    let jaeger = Jaeger::start();
    let mut builder = Standalone::builder();
    for (name, value) in otel_env(&jaeger) {
        builder = builder.env(name, &value);
    }
    let server = builder.start();
    let doc = DocId::parse("traced-single").unwrap();
    let writer = Client::connect(&server.ws_url(), ClientOptions::default()).await.expect("connect");
    type_acknowledged(&writer.open(&doc).await.expect("open"), None, 1).await;

    let expected = [
        ("receive", 1),
        ("submit", 1),
        ("decide", 1),
        ("commit", 1),
        ("publish", 1),
        ("deliver", 1),
        ("ack", 1),
    ];
    let traces = complete_traces(&jaeger, "tandem-standalone", doc.as_str(), 1, &expected);
    let trace = &traces[0];
    for (parent, child) in [
        ("receive", "submit"),
        ("submit", "decide"),
        ("decide", "commit"),
        ("commit", "publish"),
        ("publish", "deliver"),
        ("deliver", "ack"),
    ] {
        assert_child(trace, parent, child);
    }
    assert_tags(trace, "ack", doc.as_str(), Some(1), false);
}
