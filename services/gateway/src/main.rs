//! `tandem-gateway`: the WebSocket edge of the distributed mode.
//!
//! Clients connect here; ops go to the sequencer service over gRPC; every committed record comes
//! back through Kafka topic `tandem.events` (all partitions, no consumer group); catch-up and gap
//! repair read the Postgres event log.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tandem_bus::kafka::{ensure_presence_topic, KafkaArgs, KafkaEventSubscriber, KafkaPresenceBus};
use tandem_gateway::cli::EdgeArgs;
use tandem_gateway::GatewayDeps;
use tandem_rpc::{GrpcSubmitter, SubmitterOptions};
use tandem_store::postgres::{PostgresConfig, PostgresStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The gateway service. Every flag can also be set with the environment variable shown.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Config {
    /// Address of the WebSocket and HTTP endpoint (port 0 picks a free port).
    #[arg(long, env = "TANDEM_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Sequencer gRPC endpoints, e.g. `http://127.0.0.1:50051` (repeat or separate with commas).
    #[arg(long = "sequencer", env = "TANDEM_SEQUENCERS", value_delimiter = ',', required = true)]
    sequencers: Vec<String>,
    /// The Postgres event log (read only: catch-up and gap repair).
    #[arg(long, env = "TANDEM_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/tandem")]
    postgres_url: String,
    /// The Kafka bus (partitions must match the sequencers').
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Names this process in logs and in the broker.
    #[arg(long, env = "TANDEM_INSTANCE", default_value = "gateway")]
    instance: String,
    /// Shared token presented to the sequencers; the Documents API accepts it too, as a trusted
    /// service that may read and write every document.
    #[arg(long, env = "TANDEM_SERVICE_TOKEN", hide_env_values = true)]
    service_token: Option<String>,
    /// Authentication, browser safety and per-connection limits.
    #[command(flatten)]
    edge: EdgeArgs,
}

fn main() -> ExitCode {
    let config: Config = tandem_telemetry::service::parse_or_exit();
    tandem_telemetry::init_instance(&config.instance);
    tandem_telemetry::service::run_service(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut gateway_config = config.edge.gateway_config()?;
    // An empty token is no token: the Documents API must not accept an empty bearer.
    gateway_config.service_token = config.service_token.as_deref().and_then(|t| t.parse().ok());
    let drain_grace = gateway_config.drain_grace;
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("bind {}", config.listen))?;
    let address = listener.local_addr().context("read the bound address")?;
    let store = PostgresStore::connect(PostgresConfig::new(&config.postgres_url))
        .await
        .context("connect to Postgres")?;
    let kafka = config.kafka.config(&config.instance);
    info!(kafka = %config.kafka.describe(), "kafka settings");
    // Presence crosses gateways on a topic of its own (docs/ARCHITECTURE.md, "Presence").
    if let Err(e) = ensure_presence_topic(&kafka).await {
        tracing::warn!(error = %e, "cannot create the presence topic; presence stays local until it exists");
    }
    let presence_bus = KafkaPresenceBus::new(&kafka).context("create the presence producer")?;
    gateway_config.presence.bus = Some(Arc::new(presence_bus));
    let options = SubmitterOptions { token: config.service_token.clone(), ..SubmitterOptions::default() };
    let submitter =
        GrpcSubmitter::new(config.sequencers.clone(), options).context("create the gRPC submitter")?;
    let deps = GatewayDeps {
        submitter: Arc::new(submitter),
        events: Arc::new(KafkaEventSubscriber::new(&kafka)),
        store: Arc::new(store),
        // Prometheus text at GET /metrics on the gateway's own port.
        extra_routes: tandem_telemetry::metrics_recorder()
            .map(tandem_telemetry::metrics_routes)
            .unwrap_or_default(),
    };
    let shutdown = CancellationToken::new();
    let mut gateway = tokio::spawn(tandem_gateway::run(gateway_config, listener, deps, shutdown.clone()));
    println!("gateway {} listening on http://{address}/", config.instance);
    println!(
        "  Documents gRPC API on the same port (HTTP/2): tandem.v1.Documents, grpc.health.v1, reflection"
    );
    config.edge.announce();
    tokio::select! {
        _ = tandem_telemetry::service::shutdown_signal() => info!("shutting down: draining"),
        result = &mut gateway => {
            result.context("gateway task")?.context("gateway")?;
            anyhow::bail!("the gateway stopped");
        }
    }
    shutdown.cancel();
    // The drain grace, then the close handshakes (each bounded by the write timeout and a linger).
    let limit = drain_grace + Duration::from_secs(10);
    if let Some(result) = tandem_telemetry::service::wait_for_stop(&mut gateway, limit, "the gateway").await {
        result.context("gateway task")?.context("gateway")?;
    }
    Ok(())
}
