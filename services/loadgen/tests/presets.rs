//! Every preset, briefly and at small sizes, against a real single-process server (the
//! `tandem-standalone` binary, built first: `cargo build -p tandem-standalone`, or set `TANDEM_BIN`).
//! Asserts what must hold on any machine — the load ran, converged, without errors, the watched
//! server was sampled, the JSON and HTML reports are sane — and nothing about timing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tandem_integration_tests::Standalone;
use tandem_loadgen::connections::{self, ConnectionsConfig};
use tandem_loadgen::procstat::{Target, WatchSpec};
use tandem_loadgen::replay::{self, ReplayConfig, DEFAULT_TRACES_DIR};
use tandem_loadgen::report::Report;
use tandem_loadgen::stalled::{self, StalledConfig};
use tandem_loadgen::typing::{self, TypingConfig};
use tandem_loadgen::RunConfig;

/// The server's port, from `ws://127.0.0.1:PORT/v1/ws`.
fn port(server: &Standalone) -> u16 {
    let url = server.ws_url();
    let port = url.trim_start_matches("ws://").split(['/', ':']).nth(1).expect("a port in the url");
    port.parse().expect("a numeric port")
}

/// A short run against `server`, which is watched as `standalone`.
fn run_config(server: &Standalone, duration: Duration) -> RunConfig {
    RunConfig {
        urls: vec![server.ws_url()],
        token: None,
        duration,
        warmup: Duration::from_millis(500),
        settle_timeout: Duration::from_secs(20),
        seed: tandem_integration_tests::seed(),
        label: Some("test".into()),
        progress: true,
        watch: vec![WatchSpec {
            name: "standalone".into(),
            target: Target::Listener(port(server)),
            with_children: false,
        }],
    }
}

/// What every report must show: converged, no error, the server sampled; and it survives JSON.
fn assert_sane(report: &Report) {
    println!("{}", report.table());
    assert!(report.convergence.converged, "{:?}", report.convergence);
    assert_eq!(report.errors.total, 0, "{:?}", report.errors);
    assert_eq!(report.matching.author_mismatches, 0);
    let names: Vec<&str> = report.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["loadgen", "standalone"]);
    for p in &report.processes {
        assert!(p.rss_peak_mib > 0.0 && !p.samples.is_empty() && !p.gone, "{p:?}");
    }
    assert!(!report.timeline.is_empty());
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("report.json");
    report.write_json(&path).expect("write the report");
    assert_eq!(Report::read_json(&path).expect("read the report").run_id, report.run_id);
    let html = dir.path().join("report.html");
    tandem_loadgen::html::write(report, &html).expect("write the page");
    assert_self_contained(&html);
}

/// An HTML page with its charts inline and nothing fetched from elsewhere.
fn assert_self_contained(path: &Path) {
    let page = std::fs::read_to_string(path).expect("the page");
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<svg") && page.contains("<polyline"));
    for external in ["src=", "href=", "<script", "@import", "url("] {
        assert!(!page.contains(external), "the page refers to something outside: {external}");
    }
}

fn assert_typed(report: &Report) {
    assert!(report.edits.submitted > 0 && report.matching.acked > 0 && report.rates.acked > 0.0);
    assert_eq!((report.edits.lost, report.edits.unacked, report.edits.records_dropped), (0, 0, 0));
    assert_eq!(report.matching.acked, report.edits.submitted, "every measured keystroke acknowledged");
    assert!(report.is_clean());
}

/// The binary itself, with the JSON and HTML files it writes.
#[test]
fn the_typing_preset_writes_sane_json_and_html() {
    let server = Standalone::start();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (json, html) = (dir.path().join("typing.json"), dir.path().join("typing.html"));
    let output = Command::new(env!("CARGO_BIN_EXE_tandem-loadgen"))
        .args(["typing", "--url", &server.ws_url(), "--docs", "3", "--clients", "2", "--rate", "10"])
        .args([
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--watch",
            &format!("standalone=listen:{}", port(&server)),
        ])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .expect("tandem-loadgen runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{}\n{stderr}", String::from_utf8_lossy(&output.stdout));
    assert!(output.status.success(), "{:?}", output.status);
    assert!(stderr.contains("ops/s") && stderr.contains("p99"), "a progress line per second");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON")).expect("JSON");
    assert_eq!(report["preset"], "typing");
    assert_eq!(report["convergence"]["converged"], true);
    assert_eq!(report["errors"]["total"], 0);
    assert!(report["rates"]["acked"].as_f64().unwrap() > 0.0, "{}", report["rates"]);
    assert!(report["ack_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(!report["histograms"]["ack"].as_array().unwrap().is_empty());
    let standalone = &report["processes"][1];
    assert_eq!(standalone["name"], "standalone");
    assert!(standalone["rss_peak_mib"].as_f64().unwrap() > 0.0);
    assert_self_contained(&html);

    // The page renders again from the JSON alone.
    let again = dir.path().join("again.html");
    let status = Command::new(env!("CARGO_BIN_EXE_tandem-loadgen"))
        .arg("html")
        .arg(&json)
        .arg("--out")
        .arg(&again)
        .status()
        .expect("tandem-loadgen runs");
    assert!(status.success());
    assert_self_contained(&again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_doc_converges_with_every_op_delivered_to_every_other_client() {
    let server = Standalone::start();
    let config = TypingConfig {
        preset: "hot-doc",
        run: run_config(&server, Duration::from_secs(2)),
        docs: 1,
        clients: 8,
        rate: 10.0,
    };
    let report = typing::run(&config).await.expect("the run sets up");
    assert_sane(&report);
    assert_typed(&report);
    assert_eq!(report.preset, "hot-doc");
    let m = &report.matching;
    assert_eq!((m.deliveries_missing, m.deliveries_orphaned), (0, 0), "{m:?}");
    assert_eq!(
        report.remote_latency_ms.count,
        7 * report.matching.acked,
        "one sample per keystroke and receiver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_converges_and_commits() {
    let server = Standalone::start();
    let config = TypingConfig {
        preset: "max",
        run: run_config(&server, Duration::from_secs(2)),
        docs: 4,
        clients: 2,
        rate: 200.0,
    };
    let report = typing::run(&config).await.expect("the run sets up");
    assert_sane(&report);
    assert_typed(&report);
    assert!(report.rates.committed_ops > 0.0);
    assert!(report.matching.committed_ops <= report.matching.acked, "an op carries one keystroke or more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_all_set_up_held_and_measured() {
    let server = Standalone::start();
    let mut run = run_config(&server, Duration::from_secs(1));
    run.warmup = Duration::ZERO;
    let config = ConnectionsConfig { run, connections: 200, docs: 10, concurrency: 32 };
    let report = connections::run(&config).await.expect("the run sets up");
    assert_sane(&report);
    assert!(report.is_clean());
    let connect = report.connect.as_ref().expect("the connections section");
    assert_eq!(
        (connect.target, connect.connected, connect.failed, connect.still_connected),
        (200, 200, 0, 200)
    );
    assert!(connect.rate_per_sec > 0.0 && connect.latency_ms.count == 200);
    assert_eq!(report.convergence.clients, 200);
    let memory: Vec<&str> = connect.memory.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(memory, ["loadgen", "standalone"]);
    assert!(connect.memory[1].after_ramp_mib > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_ends_every_copy_at_the_trace_s_text() {
    let server = Standalone::start();
    let mut run = run_config(&server, Duration::from_secs(120));
    run.warmup = Duration::ZERO;
    let config = ReplayConfig {
        run,
        traces: vec![Path::new(DEFAULT_TRACES_DIR).join("sveltecomponent.json.gz")],
        copies: 2,
        burst: 16,
        max_patches: Some(3000),
    };
    let report = replay::run(&config).await.expect("the run sets up");
    assert_sane(&report);
    assert!(report.is_clean());
    let replay = report.replay.as_ref().expect("the replay section");
    let trace = &replay.traces[0];
    assert_eq!((trace.name.as_str(), trace.patches, trace.copies), ("sveltecomponent", 3000, 2));
    assert_eq!((trace.finished, trace.matched), (2, 2), "{trace:?}");
    assert!(trace.expected_chars > 0 && trace.patches_per_sec > 0.0);
    assert_eq!(report.edits.submitted, 6000, "every patch of both copies typed");
    assert_eq!(report.matching.acked, 6000);
    assert!(report.rates.window_secs < 120.0, "the rates are over the time the replay took");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_are_accounted_for_and_the_server_rss_reported() {
    let server = Standalone::start();
    let config = StalledConfig {
        run: run_config(&server, Duration::from_secs(3)),
        writers: 2,
        rate: 50.0,
        readers: 20,
        recv_buffer: 4096,
    };
    let report = stalled::run(&config).await.expect("the run sets up");
    assert_sane(&report);
    assert_typed(&report);
    let stalled = report.stalled_readers.as_ref().expect("the stalled-readers section");
    assert_eq!((stalled.readers, stalled.connected, stalled.connect_failed), (20, 20, 0));
    assert_eq!(stalled.disconnected() + stalled.still_open(), 20, "{stalled:?}");
    assert_eq!(stalled.behind, 0, "a reader the server kept lost nothing: {stalled:?}");
    let standalone = stalled.memory.iter().find(|m| m.name == "standalone").expect("the server is watched");
    assert!(
        standalone.before_mib > 0.0
            && standalone.peak_mib >= standalone.final_mib
            && standalone.final_mib > 0.0
    );
}

/// The history preset against a real cluster (Kafka, Postgres, a sequencer, two gateways): the
/// written history is what the gateways serve, from its newest snapshot plus a full interval of
/// events, at both gateways, and the sequencer loads it to take the next op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_written_as_the_sequencer_would_and_opened_at_every_gateway() {
    use tandem_integration_tests::cluster::Cluster;
    use tandem_loadgen::history::{self, HistoryConfig};

    let cluster = Cluster::builder().gateways(2).sequencers(1).partitions(2).start();
    // The run's window is 2 s: a cold broker's group forms more slowly than that.
    cluster.wait_until_every_partition_is_claimed(Duration::from_secs(60)).await;
    let urls = vec![cluster.gateway_ws_url(0), cluster.gateway_ws_url(1)];
    let config = HistoryConfig {
        run: RunConfig {
            urls,
            token: None,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            settle_timeout: Duration::from_secs(20),
            seed: tandem_integration_tests::seed(),
            label: Some("test".into()),
            progress: true,
            watch: Vec::new(),
        },
        postgres_url: cluster.database().url(),
        ops: 5_500,
        opens: 4,
        snapshot_every: 1000,
        batch: 700,
    };
    let report = history::run(&config).await.expect("the preset runs");
    println!("{}", report.table());
    let history = report.history.as_ref().expect("the history section");
    assert!(report.is_clean(), "{history:?}");
    assert_eq!((history.snapshot_version, history.tail_events), (5_000, 500));
    assert_eq!((history.opens_ms.len(), history.open_ms.count, history.wrong_snapshots), (4, 4, 0));
    assert!(history.open_ms.p50 > 0.0 && history.open_ms.max >= history.open_ms.p50, "{:?}", history.open_ms);
    assert!(history.first_op_ack_ms.is_some());

    // The event log has every version once, then the op of the end, and the snapshot the readers used.
    let doc = history.doc.replace('\'', "''");
    let versions = cluster
        .database()
        .query(&format!("SELECT count(*), min(version), max(version) FROM events WHERE doc = '{doc}'"));
    assert_eq!(versions, ["5501|1|5501"]);
    let snapshots = cluster.database().query(&format!("SELECT version FROM snapshots WHERE doc = '{doc}'"));
    assert_eq!(snapshots, ["5000"]);
}

/// The broker probe against Apache Kafka: every record comes back, one row per step, with
/// both latencies measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_probe_reads_back_every_record_it_publishes() {
    use tandem_integration_tests::kafka::Broker;
    use tandem_loadgen::broker::{self, BrokerConfig};

    let broker = Broker::shared();
    let config = BrokerConfig {
        brokers: broker.address(),
        records: 300,
        rate: 300.0,
        step: 100,
        fetch_wait: Duration::from_millis(5),
        linger: Duration::ZERO,
        progress: true,
    };
    let report = broker::run(&config).await.expect("the probe runs");
    println!("{}", report.table());
    assert_eq!(report.lost, 0);
    let rows: Vec<(u64, u64)> = report.steps.iter().map(|s| (s.stored_before, s.stored_after)).collect();
    assert_eq!(rows, [(0, 100), (100, 200), (200, 300)]);
    for step in &report.steps {
        assert_eq!(step.arrived, 100, "{step:?}");
        assert!(step.publish_p50_ms > 0.0 && step.hop_p50_ms > 0.0, "{step:?}");
        assert!(step.publish_p99_ms >= step.publish_p50_ms && step.hop_p99_ms >= step.hop_p50_ms);
    }
}

/// The api preset: ApplyEdit answered and every version delivered to every watcher, once, in
/// order, each watcher rebuilding the text GetDocument answers; CPU per edit reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_edits_reach_every_watcher_once_and_in_order() {
    use tandem_loadgen::api::{self, ApiConfig};

    let server = Standalone::start();
    let config = ApiConfig {
        grpc_urls: vec![format!("http://127.0.0.1:{}", port(&server))],
        run: run_config(&server, Duration::from_secs(2)),
        docs: 3,
        watchers: 2,
        rate: 20.0,
    };
    let report = api::run(&config).await.expect("the run sets up");
    assert_sane(&report);
    assert!(report.is_clean());
    let section = report.api.as_ref().expect("the api section");
    assert_eq!((section.out_of_order, section.duplicates, section.watches_ended), (0, 0, 0), "{section:?}");
    assert!(report.matching.acked > 0 && report.edits.submitted == report.matching.acked);
    assert_eq!(
        report.remote_latency_ms.count,
        2 * report.matching.acked,
        "one delivery sample per measured edit and watcher"
    );
    assert_eq!((report.matching.deliveries_missing, report.matching.deliveries_orphaned), (0, 0));
    assert_eq!(report.convergence.clients, 3 + 6);
    assert!(section.commit_to_watch_ms.count > 0 && section.edits_per_sec > 0.0, "{section:?}");
    let cpu: Vec<&str> = section.cpu_per_edit_us.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(cpu, ["loadgen", "standalone"]);
    assert!(report.table().contains("cpu per edit"));
}

/// The api preset against a real cluster (Kafka, Postgres, a sequencer, two gateways): every
/// document's watchers sit on the other gateway than its writer, and still get every version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_edits_reach_watchers_on_the_other_gateway_of_a_cluster() {
    use tandem_integration_tests::cluster::Cluster;
    use tandem_loadgen::api::{self, ApiConfig};

    let cluster = Cluster::builder().gateways(2).sequencers(1).partitions(2).start();
    // The run's window is 2 s: a cold broker's group forms more slowly than that.
    cluster.wait_until_every_partition_is_claimed(Duration::from_secs(60)).await;
    let urls = vec![cluster.gateway_ws_url(0), cluster.gateway_ws_url(1)];
    let grpc_urls = urls.iter().map(|u| u.replace("ws://", "http://").replace("/v1/ws", "")).collect();
    let config = ApiConfig {
        grpc_urls,
        run: RunConfig {
            urls,
            token: None,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            settle_timeout: Duration::from_secs(20),
            seed: tandem_integration_tests::seed(),
            label: Some("test".into()),
            progress: true,
            watch: Vec::new(),
        },
        docs: 2,
        watchers: 1,
        rate: 20.0,
    };
    let report = api::run(&config).await.expect("the run sets up");
    println!("{}", report.table());
    assert!(report.is_clean(), "{:?}", report.convergence);
    assert_eq!(report.remote_latency_ms.count, report.matching.acked, "one delivery per measured edit");
    assert_eq!(report.matching.deliveries_missing, 0);
}
