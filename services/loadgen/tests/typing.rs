//! The `typing` preset against a real single-process server (the `tandem-standalone` binary, built
//! first: `cargo build -p tandem-standalone`, or set `TANDEM_BIN`). Asserts what must hold on any
//! machine — convergence, no error, acknowledged keystrokes, matched deliveries — and nothing about
//! timing: this machine is shared and noisy, the figures belong in the report.

use std::time::Duration;

use tandem_integration_tests::Standalone;
use tandem_loadgen::typing::{self, TypingConfig};
use tandem_loadgen::RunConfig;

fn config(urls: Vec<String>, seed: u64) -> TypingConfig {
    TypingConfig {
        preset: "typing",
        run: RunConfig {
            urls,
            token: None,
            duration: Duration::from_secs(3),
            warmup: Duration::from_millis(500),
            settle_timeout: Duration::from_secs(20),
            seed,
            label: Some("test".into()),
            progress: true,
            watch: Vec::new(),
        },
        docs: 4,
        clients: 3,
        rate: 20.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_converges_without_errors_against_the_single_process_server() {
    let server = Standalone::start();
    let seed = tandem_integration_tests::seed();
    // The same gateway twice: exercises the round robin and the failover list without a cluster.
    let report =
        typing::run(&config(vec![server.ws_url(), server.ws_url()], seed)).await.expect("the run sets up");
    println!("{}", report.table());

    assert!(report.convergence.converged, "{:?}", report.convergence);
    assert_eq!((report.convergence.documents, report.convergence.clients), (4, 12));
    assert_eq!(report.errors.total, 0, "{:?}", report.errors);
    assert!(report.edits.refused.is_empty(), "{:?}", report.edits.refused);
    assert_eq!((report.edits.lost, report.edits.unacked, report.edits.records_dropped), (0, 0, 0));
    assert_eq!(report.connections.events_dropped, 0);
    assert!(report.edits.submitted > 0);
    assert_eq!(report.matching.acked, report.edits.submitted, "every measured keystroke acknowledged");
    assert_eq!(report.ack_latency_ms.count, report.matching.acked);
    assert!(report.matching.committed_ops > 0);
    // Every acknowledged op reached the two other clients of its document, by the right author.
    let m = &report.matching;
    assert!(m.deliveries > 0);
    assert_eq!((m.deliveries_missing, m.deliveries_orphaned, m.author_mismatches), (0, 0, 0), "{m:?}");
    assert_eq!(
        report.remote_latency_ms.count,
        2 * report.matching.acked,
        "one sample per keystroke and receiver"
    );
    assert!(report.is_clean());

    // The JSON report reads back.
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("report.json");
    report.write_json(&path).expect("write the report");
    let again = tandem_loadgen::report::Report::read_json(&path).expect("read the report");
    assert_eq!(again.run_id, report.run_id);
    assert!(tandem_loadgen::report::summarize(&[again]).contains("| 1 |"));
}

#[tokio::test]
async fn an_unreachable_gateway_fails_the_set_up() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("ws://{free}/v1/ws"); // the listener is dropped: nothing listens there now
    let error = typing::run(&config(vec![url], 1)).await.expect_err("nothing to connect to");
    assert!(format!("{error:#}").contains("connect client 0"), "{error:#}");
}
