//! `tandem-standalone`: all of Tandem in one process — the gateway, the sequencer, the embedded event
//! store in a data folder and the in-process bus. The mode a newcomer runs first (`make run`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tandem_bus::in_process::{in_process, InProcessConfig};
use tandem_bus::OpConsumer;
use tandem_gateway::cli::EdgeArgs;
use tandem_gateway::GatewayDeps;
use tandem_sequencer::{run_partition, Limits, PartitionConfig};
use tandem_store::embedded::{SqliteOptions, SqliteStore};
use tandem_store::EventStore;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// Tandem in one process. Every flag can also be set with the environment variable shown.
/// mimalloc instead of glibc's malloc: fewer instructions per allocation and no `malloc_consolidate`
/// pauses; an op allocates a few dozen times between its frame and its ack.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "TANDEM_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Folder of the event store; documents survive restarts here.
    #[arg(long, env = "TANDEM_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Sequencer partitions (parallel writers).
    #[arg(long, env = "TANDEM_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    partitions: u32,
    /// Write a snapshot every this many versions of a document (0: never).
    #[arg(long, env = "TANDEM_SNAPSHOT_EVERY", default_value_t = 1000)]
    snapshot_every: u64,
    /// Longest document, in characters.
    #[arg(long, env = "TANDEM_MAX_DOCUMENT_CHARS", default_value_t = 10_000_000)]
    max_document_chars: usize,
    /// Most characters one op may insert.
    #[arg(long, env = "TANDEM_MAX_OP_CHARS", default_value_t = 1_000_000)]
    max_op_chars: usize,
    /// Oldest `base` accepted, in versions behind the document.
    #[arg(long, env = "TANDEM_MAX_BASE_LAG", default_value_t = tandem_sequencer::Limits::default().max_base_lag)]
    max_base_lag: u64,
    /// Authentication, browser safety and per-connection limits.
    #[command(flatten)]
    edge: EdgeArgs,
    /// A token of trusted services: the Documents API lets its bearer read and write every document.
    #[arg(long, env = "TANDEM_SERVICE_TOKEN", hide_env_values = true)]
    service_token: Option<tandem_gateway::ServiceToken>,
    /// fsync every commit (survives power loss); without it a commit survives a process crash only.
    #[arg(long, env = "TANDEM_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    fsync: bool,
    /// Runtime worker threads. By default one fewer than the machine's cores, at least one: the
    /// event store's writer thread is this process's other busy thread, and a worker per core
    /// would make the two take turns on a core (on 2 cores one worker spends 6–8 % less CPU per op;
    /// BENCHMARKS.md, issue 15).
    #[arg(long, env = "TANDEM_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

/// The runtime's workers when `--worker-threads` is not given.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get().saturating_sub(1).max(1))
}

fn main() -> ExitCode {
    let config: Config = tandem_telemetry::service::parse_or_exit();
    if config.print_config {
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    tandem_telemetry::init();
    let workers = config.worker_threads.map_or_else(default_workers, usize::from);
    tandem_telemetry::service::run_service_with_workers(Some(workers), run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Configuration errors (no authentication configured, an unreadable key) stop the start first.
    let mut gateway_config = config.edge.gateway_config()?;
    gateway_config.service_token = config.service_token.clone();
    // Bind first: a taken port is reported before any real work starts.
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("bind {}", config.listen))?;
    let address = listener.local_addr().context("read the bound address")?;
    let store = SqliteStore::open(&config.data_dir, SqliteOptions { synchronous_full: config.fsync })
        .with_context(|| format!("open the event store in {}", config.data_dir.display()))?;
    let store: Arc<dyn EventStore> = Arc::new(store);

    let (submitter, consumers, publisher, subscriber) =
        in_process(&InProcessConfig { partitions: config.partitions, ..Default::default() });
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let partition_config = PartitionConfig {
        limits: Limits {
            max_document_chars: config.max_document_chars,
            max_op_insert_chars: config.max_op_chars,
            max_base_lag: config.max_base_lag,
            ..Limits::default()
        },
        snapshot_every: config.snapshot_every,
        ..PartitionConfig::default()
    };
    let publisher = Arc::new(publisher);
    // Why partitions failed, for the exit status: a process stopped by a failure must not exit 0.
    let (failed_tx, mut failed) = mpsc::channel::<anyhow::Error>(consumers.len().max(1));
    for consumer in consumers {
        let (store, publisher, config, shutdown, failed_tx) =
            (store.clone(), publisher.clone(), partition_config.clone(), shutdown.clone(), failed_tx.clone());
        tasks.spawn(async move {
            // A sequencer partition is critical: without it no op commits, so its end (an error or a
            // panic alike) ends the process instead of leaving a half-alive server.
            let id = consumer.partition();
            let partition = tokio::spawn(run_partition(consumer, store, publisher, config, shutdown.clone()));
            let failure = match partition.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(anyhow::Error::new(e).context(format!("sequencer partition {id} failed"))),
                Err(e) => Some(anyhow::anyhow!("sequencer partition {id} panicked: {e}")),
            };
            if let Some(e) = failure {
                // Said now as well: the gateway's drain delays the exit that reports it.
                error!("{e:#}");
                let _ = failed_tx.try_send(e);
            }
            shutdown.cancel();
        });
    }

    let extra_routes =
        tandem_telemetry::metrics_recorder().map(tandem_telemetry::metrics_routes).unwrap_or_default();
    let deps =
        GatewayDeps { submitter: Arc::new(submitter), events: Arc::new(subscriber), store, extra_routes };
    // The gateway drains first (its clients keep getting acks during the grace), so it has a stop
    // signal of its own; the partitions stop after it.
    let drain_grace = gateway_config.drain_grace;
    let stop_gateway = CancellationToken::new();
    let mut gateway = tokio::spawn(tandem_gateway::run(gateway_config, listener, deps, stop_gateway.clone()));
    tasks.close();

    println!("Tandem (single-process mode) listening on http://{address}/");
    println!(
        "  Documents gRPC API on the same port (HTTP/2): tandem.v1.Documents, grpc.health.v1, reflection"
    );
    config.edge.announce();
    println!(
        "  open http://{address}/?doc=welcome in two browser tabs; data in {}",
        config.data_dir.display()
    );

    let mut gateway_result = None;
    tokio::select! {
        _ = tandem_telemetry::service::shutdown_signal() => info!("shutting down: draining"),
        _ = shutdown.cancelled() => warn!("a critical task ended; shutting down"),
        result = &mut gateway => {
            warn!("the gateway stopped; shutting down");
            gateway_result = Some(result);
        }
    }
    stop_gateway.cancel();
    if gateway_result.is_none() {
        let limit = drain_grace + Duration::from_secs(10);
        gateway_result = tandem_telemetry::service::wait_for_stop(&mut gateway, limit, "the gateway").await;
    }
    shutdown.cancel();
    tokio::select! {
        _ = tasks.wait() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => warn!("tasks did not finish within 10 s"),
        _ = tandem_telemetry::service::shutdown_signal() => warn!("second signal: exiting now"),
    }
    // A failed partition is the cause of the stop, so its error is the one reported.
    if let Ok(failure) = failed.try_recv() {
        return Err(failure);
    }
    if let Some(result) = gateway_result {
        result.context("gateway task")?.context("gateway")?;
    }
    Ok(())
}
