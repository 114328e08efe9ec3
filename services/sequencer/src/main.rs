//! `tandem-sequencer`: the sequencer service of the distributed mode.
//!
//! - gRPC ingress: gateways submit ops; each is appended to Kafka topic `tandem.ops` (acks=all)
//!   before the gateway hears `accepted`;
//! - partition owners: the process joins the sequencers' consumer group on `tandem.ops`; for every
//!   partition Kafka assigns it, it claims the partition in Postgres (bumping its epoch, which fences
//!   the previous owner), resumes at the stored offset, republishes what the previous owner committed
//!   but had not published, and runs the partition loop; a revoked partition's loop is stopped after
//!   its batch in hand;
//! - health: `grpc.health.v1` on the gRPC port, and `/healthz`, `/readyz` (with `/metrics`) on the
//!   HTTP port (see the `health` module).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tandem_auth::JwtArgs;
use tandem_bus::kafka::{
    ensure_topics, Assignment, KafkaArgs, KafkaEventPublisher, KafkaOpLog, KafkaOpSubmitter,
};
use tandem_bus::{EventPublisher, PartitionId};
use tandem_rpc::{CallerAuth, SequencerIngress};
use tandem_sequencer::{run_partition, Limits, PartitionConfig, PartitionError};
use tandem_store::postgres::{PostgresConfig, PostgresStore};
use tandem_store::EventStore;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

mod health;

/// The sequencer service. Every flag can also be set with the environment variable shown.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Config {
    /// Address of the gRPC ingress (port 0 picks a free port).
    #[arg(long, env = "TANDEM_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    grpc_listen: SocketAddr,
    /// The Postgres event log.
    #[arg(long, env = "TANDEM_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/tandem")]
    postgres_url: String,
    /// The Kafka bus.
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Names this process in logs and in the broker.
    #[arg(long, env = "TANDEM_INSTANCE", default_value = "sequencer")]
    instance: String,
    /// Shared token gateways present (`authorization: Bearer …`); its bearer may write every document.
    /// Prefer the environment variable: a command line is visible to every user of the machine.
    #[arg(long, env = "TANDEM_SERVICE_TOKEN", hide_env_values = true)]
    service_token: Option<String>,
    /// User tokens of internal clients calling the gRPC API directly (`--jwt-key-file` turns them on):
    /// each may write only the documents its token allows.
    #[command(flatten)]
    jwt: JwtArgs,
    /// Serve gRPC callers WITHOUT authentication (development only; said at start).
    #[arg(long, env = "TANDEM_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Where to serve HTTP: Prometheus metrics (`GET /metrics`), liveness (`GET /healthz`) and
    /// readiness (`GET /readyz`); none: not served (gRPC health is always on the gRPC port).
    #[arg(long, env = "TANDEM_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Write a snapshot every this many versions of a document (0: never).
    #[arg(long, env = "TANDEM_SNAPSHOT_EVERY", default_value_t = 1000)]
    snapshot_every: u64,
    /// Longest document, in characters.
    #[arg(long, env = "TANDEM_MAX_DOCUMENT_CHARS", default_value_t = 10_000_000)]
    max_document_chars: usize,
    /// Most characters one op may insert.
    #[arg(long, env = "TANDEM_MAX_OP_CHARS", default_value_t = 1_000_000)]
    max_op_chars: usize,
}

fn main() -> ExitCode {
    let config: Config = tandem_telemetry::service::parse_or_exit();
    tandem_telemetry::init_instance(&config.instance);
    tandem_telemetry::service::run_service(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    // First, so that no metric set by the tasks started below is lost to the absent recorder.
    let metrics = tandem_telemetry::metrics_recorder();
    let listener = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("bind {}", config.grpc_listen))?;
    let address = listener.local_addr().context("read the bound address")?;
    let http_listener = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?),
        None => None,
    };

    let store = PostgresStore::connect(PostgresConfig::new(&config.postgres_url))
        .await
        .context("connect to Postgres")?;
    store.migrate().await.context("migrate the event log")?;
    let postgres = Arc::new(store);
    let store: Arc<dyn EventStore> = postgres.clone();

    let kafka = config.kafka.config(&config.instance);
    info!(kafka = %config.kafka.describe(), "kafka settings");
    // A broker that has just started may time out the first admin request: retry for a while rather
    // than fail the start.
    let mut attempt = 1;
    loop {
        match ensure_topics(&kafka).await {
            Ok(()) => break,
            Err(e) if attempt < 5 => {
                warn!(attempt, error = %e, "creating the Kafka topics failed; retrying");
                tokio::time::sleep(Duration::from_secs(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e).context("create the Kafka topics"),
        }
    }
    let submitter = Arc::new(KafkaOpSubmitter::new(&kafka).context("create the op producer")?);
    let publisher: Arc<dyn EventPublisher> =
        Arc::new(KafkaEventPublisher::new(&kafka).context("create the record producer")?);

    let shutdown = CancellationToken::new();
    let grpc_health = tandem_rpc::health::reporter().await;
    let readiness = health::Readiness { store: postgres, ops: submitter.clone(), shutdown: shutdown.clone() }
        .start(grpc_health.clone());
    let ingress = SequencerIngress::new(submitter);
    let caller_auth = CallerAuth {
        service_token: config.service_token.clone(),
        verifier: config.jwt.verifier().context("token verification")?.map(Arc::new),
    };
    let authenticated = caller_auth.service_token.is_some() || caller_auth.verifier.is_some();
    match (authenticated, config.insecure_no_auth) {
        (true, true) => anyhow::bail!("--insecure-no-auth contradicts --service-token and --jwt-key-file; give one"),
        (false, false) => anyhow::bail!(
            "gRPC callers are not authenticated: give --service-token (gateways) and/or --jwt-key-file \
             (internal clients), or --insecure-no-auth (development only)"
        ),
        (false, true) => warn!("WARNING: gRPC AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach the port can submit ops"),
        (true, false) => {}
    }
    let grpc_shutdown = shutdown.clone();
    let mut grpc = tokio::spawn(async move {
        tandem_rpc::serve(listener, ingress, caller_auth, &grpc_health, async move {
            grpc_shutdown.cancelled().await
        })
        .await
    });
    // Rare events exported at 0 from the start, so a dashboard's `rate()` has a series before the
    // first one happens (deploy/grafana/tandem.json).
    for name in [
        "tandem_sequencer_fenced_total",
        "tandem_sequencer_store_retries_total",
        "tandem_sequencer_publish_retries_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    if let Some(listener) = http_listener {
        let routes = metrics
            .map(tandem_telemetry::metrics_routes)
            .unwrap_or_default()
            .merge(health::routes(readiness));
        let http_shutdown = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, routes)
                .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
                .await
        });
    }
    let (op_log, mut assignments) = KafkaOpLog::join(&kafka).context("join the sequencer group")?;
    println!("sequencer {} grpc listening on {address}", config.instance);

    let partition_config = PartitionConfig {
        limits: Limits {
            max_document_chars: config.max_document_chars,
            max_op_insert_chars: config.max_op_chars,
            ..Limits::default()
        },
        snapshot_every: config.snapshot_every,
        ..PartitionConfig::default()
    };
    let mut owners: HashMap<PartitionId, (CancellationToken, JoinHandle<()>)> = HashMap::new();
    // A partition loop that fails for any reason but a takeover leaves its partition assigned here
    // and unowned: the process ends instead, and the group gives its partitions to the others.
    let (failed_tx, mut failed) = tokio::sync::mpsc::channel::<(PartitionId, PartitionError)>(16);
    loop {
        tokio::select! {
            Some((partition, e)) = failed.recv() => {
                anyhow::bail!("partition {partition} failed: {e}");
            }
            _ = tandem_telemetry::service::shutdown_signal() => {
                info!("shutting down: finishing the batches in hand, then leaving the group");
                break;
            }
            result = &mut grpc => {
                result.context("grpc ingress task")?.context("grpc ingress")?;
                anyhow::bail!("the grpc ingress stopped");
            }
            assignment = assignments.recv() => match assignment {
                Some(Assignment::Assigned { partition, consumer }) => {
                    info!(partition, "partition assigned");
                    let stop = shutdown.child_token();
                    let (store, publisher, config) = (store.clone(), publisher.clone(), partition_config.clone());
                    let owner_stop = stop.clone();
                    let failed_tx = failed_tx.clone();
                    let handle = tokio::spawn(async move {
                        match run_partition(consumer, store, publisher, config, owner_stop).await {
                            Ok(()) => info!(partition, "partition loop ended"),
                            // Fenced by another owner, or revoked by the group: not a failure (the
                            // chaos soak saw a broker restart end a sequencer this way).
                            Err(e) if e.is_lost_ownership() => warn!(partition, error = %e, "partition lost"),
                            Err(e) => {
                                error!(partition, error = %e, "partition loop failed");
                                let _ = failed_tx.send((partition, e)).await;
                            }
                        }
                    });
                    if let Some((old, _)) = owners.insert(partition, (stop, handle)) {
                        old.cancel();
                    }
                }
                Some(Assignment::Revoked { partition }) => {
                    info!(partition, "partition revoked");
                    if let Some((stop, handle)) = owners.remove(&partition) {
                        stop.cancel();
                        let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
                    }
                }
                None => anyhow::bail!("the consumer group driver stopped"),
            },
        }
    }
    shutdown.cancel();
    for (partition, (_, handle)) in owners.drain() {
        if tokio::time::timeout(Duration::from_secs(10), handle).await.is_err() {
            warn!(partition, "partition loop did not stop within 10 s");
        }
    }
    drop(op_log);
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc).await;
    Ok(())
}
