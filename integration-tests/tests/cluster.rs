//! The distributed mode on real processes: Apache Kafka, Postgres, sequencers and gateways.
//!
//! Seeded: the seed is printed; replay with `TANDEM_SEED=<seed>`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tandem_client::{Client, ClientOptions};
use tandem_integration_tests::cluster::{Cluster, TestDatabase};
use tandem_integration_tests::seed;
use tandem_integration_tests::typists::{
    assert_everything_converged, postgres_text, type_for, type_with, SETTLE,
};
use tandem_protocol::DocId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_gateways_converge_to_what_postgres_reconstructs() {
    let seed = seed();
    let cluster = Cluster::builder().gateways(2).sequencers(2).partitions(4).start();
    let urls = [cluster.gateway_ws_url(0), cluster.gateway_ws_url(1)];
    let docs: Vec<DocId> = (0..3).map(|i| DocId::parse(&format!("shared-{i}")).unwrap()).collect();
    let typists = type_for(&urls, &docs, &['a', 'b', 'c', 'd'], seed, Duration::from_secs(3)).await;
    assert_everything_converged(&typists, cluster.database(), &docs, seed).await;
    // A fresh reader's snapshot from either gateway is the same text.
    for url in &urls {
        let reader = Client::connect(url, ClientOptions::default()).await.expect("connect");
        for doc in &docs {
            let fresh = reader.open(doc).await.expect("open");
            let (text, versions) = postgres_text(cluster.database(), doc);
            fresh.wait_version(versions.len() as u64, SETTLE).await.expect("caught up");
            assert_eq!(fresh.text(), text);
        }
    }
}

/// The highest committed version of each document.
fn versions_now(db: &TestDatabase, docs: &[DocId]) -> Vec<u64> {
    docs.iter()
        .map(|doc| {
            let rows = db.query(&format!("SELECT coalesce(max(version), 0) FROM events WHERE doc = '{doc}'"));
            rows.first().and_then(|r| r.parse().ok()).unwrap_or(0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sequencer_hands_its_partitions_over_and_loses_nothing() {
    let seed = seed();
    let mut cluster = Cluster::builder().gateways(1).sequencers(2).partitions(4).start();
    let urls = [cluster.gateway_ws_url(0)];
    // Enough documents that both sequencers own some of them.
    let docs: Vec<DocId> = (0..8).map(|i| DocId::parse(&format!("busy-{i}")).unwrap()).collect();
    let typing = type_for(&urls, &docs, &['x', 'y'], seed, Duration::from_secs(20));
    let kill_and_watch = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.sequencer(0).kill();
        let killed_at = std::time::SystemTime::now();
        // The killed owner's documents resume only once the survivor owns their partitions.
        wait_until_resumed(cluster.database(), &docs, killed_at, Duration::from_secs(16)).await
    };
    let (typists, resumed) = tokio::join!(typing, kill_and_watch);
    let takeover = slowest(&resumed);
    // Target (issue 10, BENCHMARKS.md): within 3 s. Printed, not asserted: a timing is a benchmark.
    eprintln!(
        "takeover after SIGKILL of a sequencer: {:.2} s until every document committed again (per document: {:?})",
        takeover.as_secs_f64(),
        resumed.iter().map(|r| r.map(|d| format!("{:.2}", d.as_secs_f64()))).collect::<Vec<_>>()
    );
    assert!(takeover < Duration::from_secs(16), "seed {seed}: some documents never resumed: {resumed:?}");
    assert_everything_converged(&typists, cluster.database(), &docs, seed).await;
}

/// Polls [`resumed_after`] until every document has committed after `instant`, or `limit` passed.
async fn wait_until_resumed(
    db: &TestDatabase,
    docs: &[DocId],
    instant: std::time::SystemTime,
    limit: Duration,
) -> Vec<Option<Duration>> {
    let deadline = Instant::now() + limit;
    loop {
        let resumed = resumed_after(db, docs, instant);
        if resumed.iter().all(Option::is_some) || Instant::now() >= deadline {
            return resumed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last document to resume (`Duration::MAX` when one never did).
fn slowest(resumed: &[Option<Duration>]) -> Duration {
    resumed.iter().map(|r| r.unwrap_or(Duration::MAX)).max().unwrap_or_default()
}

/// For each document, how long after `instant` its first commit came (by Postgres's clock, the
/// machine's: `committed_at` is the committing transaction's start), if one has.
fn resumed_after(db: &TestDatabase, docs: &[DocId], instant: std::time::SystemTime) -> Vec<Option<Duration>> {
    let micros = instant.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_micros();
    let rows = db.query(&format!(
        "SELECT doc, extract(epoch FROM min(committed_at) - to_timestamp({micros} / 1e6)) FROM events \
         WHERE committed_at > to_timestamp({micros} / 1e6) GROUP BY doc"
    ));
    let after: BTreeMap<&str, f64> = rows
        .iter()
        .filter_map(|row| row.split_once('|'))
        .filter_map(|(doc, seconds)| Some((doc, seconds.parse().ok()?)))
        .collect();
    docs.iter().map(|doc| after.get(doc.as_str()).map(|&s| Duration::from_secs_f64(s.max(0.0)))).collect()
}

/// A gateway's `GET /readyz`: status and body (0 when it does not answer).
fn readiness(address: &str) -> (u16, String) {
    tandem_integration_tests::http_get(address, "/readyz").unwrap_or((0, String::new()))
}

/// Polls `/readyz` until it answers `status`; its body then, or `None` after `limit`.
async fn wait_for_readiness(address: &str, status: u16, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let (now, body) = readiness(address);
        if now == status {
            return Some(body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Waits until `condition` holds on the cluster, polling; panics with `what` after `limit`.
async fn wait_until(
    cluster: &mut Cluster,
    limit: Duration,
    what: &str,
    condition: impl Fn(&mut Cluster) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !condition(cluster) {
        if Instant::now() > deadline {
            let logs: Vec<String> =
                (0..cluster.sequencer_count()).map(|i| cluster.sequencer(i).log()).collect();
            panic!("timed out waiting until {what}; sequencer logs:\n{}", logs.join("\n-----\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Partition claims a sequencer made (its partition loop logs one line per claim).
fn claims(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("tandem_sequencer::partition") && l.contains("partition claimed"))
        .count()
}

/// A cluster of one gateway and two sequencers, each owning one of the two partitions.
async fn cluster_with_two_owners() -> Cluster {
    let mut cluster = Cluster::builder().gateways(1).sequencers(2).partitions(2).start();
    wait_until(&mut cluster, Duration::from_secs(40), "both sequencers own a partition", |c| {
        claims(&c.sequencer(0).log()) >= 1 && claims(&c.sequencer(1).log()) >= 1
    })
    .await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_whose_partitions_moved_cannot_commit_after_waking() {
    let seed = seed();
    let mut cluster = cluster_with_two_owners().await;
    let urls = [cluster.gateway_ws_url(0)];
    let docs: Vec<DocId> = (0..8).map(|i| DocId::parse(&format!("contended-{i}")).unwrap()).collect();
    let typing = type_for(&urls, &docs, &['p', 'q'], seed, Duration::from_secs(22));
    let freeze_and_thaw = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let survivor_claims = claims(&cluster.sequencer(1).log());
        let frozen_log_before = cluster.sequencer(0).log().len();
        cluster.sequencer(0).freeze();
        // The group gives the frozen member's partition to the survivor, which claims it: a new epoch.
        wait_until(&mut cluster, Duration::from_secs(30), "the survivor takes the partition over", |c| {
            claims(&c.sequencer(1).log()) > survivor_claims
        })
        .await;
        cluster.sequencer(0).thaw();
        tokio::time::sleep(Duration::from_secs(5)).await;
        cluster.sequencer(0).log()[frozen_log_before..].to_owned()
    };
    let (typists, after_thaw) = tokio::join!(typing, freeze_and_thaw);
    // The woken owner stopped its stale partition loop (fenced on commit, or revoked) ...
    assert!(
        after_thaw.contains("taken over by another owner") || after_thaw.contains("partition revoked"),
        "seed {seed}: the stale owner did not stand down; its log after waking:\n{after_thaw}"
    );
    // ... and nothing it did broke the history: linear versions, every op exactly once, converged.
    assert_everything_converged(&typists, cluster.database(), &docs, seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_gateway_move_to_the_other_and_each_op_applies_once() {
    let seed = seed();
    let mut cluster = Cluster::builder().gateways(2).sequencers(1).partitions(2).start();
    let urls = [cluster.gateway_ws_url(0), cluster.gateway_ws_url(1)];
    let docs: Vec<DocId> = (0..4).map(|i| DocId::parse(&format!("moving-{i}")).unwrap()).collect();
    let typing = type_with(&urls, &docs, &['m', 'n', 'o'], seed, Duration::from_secs(8), true);
    let kill = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.gateway(0).kill();
    };
    let (typists, ()) = tokio::join!(typing, kill);
    assert_everything_converged(&typists, cluster.database(), &docs, seed).await;
    for (client, _, _) in &typists.clients {
        let stats = client.stats();
        assert!(stats.failovers >= 1, "seed {seed}: {} never moved: {stats:?}", client.client_id());
        assert_eq!(
            stats.current_url,
            urls[1],
            "seed {seed}: {} is not on the surviving gateway",
            client.client_id()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashing_mid_load_loses_no_acknowledged_op() {
    let seed = seed();
    let mut cluster = Cluster::builder().gateways(1).sequencers(1).partitions(2).private_postgres().start();
    let urls = [cluster.gateway_ws_url(0)];
    let docs: Vec<DocId> = (0..4).map(|i| DocId::parse(&format!("durable-{i}")).unwrap()).collect();
    let typing = type_for(&urls, &docs, &['u', 'v'], seed, Duration::from_secs(12));
    let crash = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = versions_now(cluster.database(), &docs);
        cluster.postgres().crash();
        // Down for a while: commits fail and are retried; nothing is acknowledged meanwhile.
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.postgres().start_again();
        before
    };
    let (typists, before) = tokio::join!(typing, crash);
    // Every version committed before the crash is still there ...
    let after = versions_now(cluster.database(), &docs);
    for (doc, (b, a)) in docs.iter().zip(before.iter().zip(&after)) {
        assert!(a >= b, "seed {seed}: {doc} went back from version {b} to {a}");
    }
    // ... and every op every client typed (all acknowledged now) is applied exactly once.
    assert_everything_converged(&typists, cluster.database(), &docs, seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequencer_stopped_with_sigterm_hands_its_partitions_over_at_once() {
    let seed = seed();
    let mut cluster = cluster_with_two_owners().await;
    let urls = [cluster.gateway_ws_url(0)];
    let docs: Vec<DocId> = (0..6).map(|i| DocId::parse(&format!("handover-{i}")).unwrap()).collect();
    let typing = type_for(&urls, &docs, &['g', 'h'], seed, Duration::from_secs(10));
    let stop = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let survivor_claims = claims(&cluster.sequencer(1).log());
        let stopped_at = std::time::SystemTime::now();
        assert!(cluster.sequencer(0).terminate(), "SIGTERM ends the sequencer cleanly");
        wait_until(&mut cluster, Duration::from_secs(30), "the survivor claims the partition", |c| {
            claims(&c.sequencer(1).log()) > survivor_claims
        })
        .await;
        wait_until_resumed(cluster.database(), &docs, stopped_at, Duration::from_secs(10)).await
    };
    let (typists, resumed) = tokio::join!(typing, stop);
    let handover = slowest(&resumed);
    // Target (issue 10, BENCHMARKS.md): within 1 s. Printed, not asserted: a timing is a benchmark.
    eprintln!(
        "handover after SIGTERM: {:.2} s until every document committed again (leave, rebalance, claim, commit)",
        handover.as_secs_f64()
    );
    assert!(handover < Duration::from_secs(10), "seed {seed}: some documents never resumed: {resumed:?}");
    assert_everything_converged(&typists, cluster.database(), &docs, seed).await;
}

/// Apache Kafka is SIGKILLed mid-load and restarted on the same data folder. While it is down,
/// submits fail (`unavailable`, resent by the clients; the gateway's `/readyz` says 503), the owner
/// retries its publishes, and its group session lapses (the coordinator is gone), so it gives its
/// partitions up and claims them again once the broker is back (`/readyz` says 200 again). Afterwards every acknowledged op is in the log exactly once, the
/// versions are linear, and every client converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_mid_load_loses_no_acknowledged_op() {
    let seed = seed();
    let mut cluster = Cluster::builder().own_broker().gateways(2).sequencers(1).partitions(2).start();
    cluster.wait_until_every_partition_is_claimed(Duration::from_secs(40)).await;
    let claims_before = claims(&cluster.sequencer(0).log());
    let urls = [cluster.gateway_ws_url(0), cluster.gateway_ws_url(1)];
    let docs: Vec<DocId> = (0..4).map(|i| DocId::parse(&format!("broker-crash-{i}")).unwrap()).collect();
    let typing = type_for(&urls, &docs, &['k', 'l', 'm'], seed, Duration::from_secs(14));
    let gateway = cluster.gateway(0).address().to_owned();
    let crash = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = versions_now(cluster.database(), &docs);
        assert_eq!(readiness(&gateway).0, 200, "seed {seed}: the gateway is ready before the crash");
        cluster.broker().kill();
        // The gateway stops being ready once its submits fail (the sequencer cannot append).
        let unready = wait_for_readiness(&gateway, 503, Duration::from_secs(25)).await;
        let restarted = Instant::now();
        cluster.broker().restart();
        eprintln!("broker answered again {:.1} s after its restart", restarted.elapsed().as_secs_f64());
        let ready = wait_for_readiness(&gateway, 200, Duration::from_secs(40)).await;
        (before, unready, ready)
    };
    let (typists, (before, unready, ready)) = tokio::join!(typing, crash);
    assert!(unready.is_some(), "seed {seed}: /readyz never said 503 while the broker was down");
    assert!(ready.is_some(), "seed {seed}: /readyz never said 200 again after the broker came back");
    eprintln!("/readyz while the broker was down:\n{}", unready.unwrap_or_default());
    assert_everything_converged(&typists, cluster.database(), &docs, seed).await;
    let after = versions_now(cluster.database(), &docs);
    for (doc, (b, a)) in docs.iter().zip(before.iter().zip(&after)) {
        assert!(a > b, "seed {seed}: {doc} committed nothing after the broker came back ({b} -> {a})");
    }
    eprintln!(
        "partition claims across the broker's restart: {} (a lapsed group session re-claims)",
        claims(&cluster.sequencer(0).log()) - claims_before
    );
}
