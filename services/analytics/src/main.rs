//! `tandem-analytics`: counts the committed edits of `<namespace>.events` into Postgres tables of
//! its own (docs/ANALYTICS.md). A thin shell around [`tandem_analytics::run`].

use std::process::ExitCode;

use anyhow::Context;
use tandem_analytics::Config;
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let config: Config = tandem_telemetry::service::parse_or_exit();
    if let Err(why) = config.group() {
        eprintln!("{why}");
        return ExitCode::from(64);
    }
    tandem_telemetry::init_instance(&config.instance);
    tandem_telemetry::service::run_service(async move {
        // First, so that no metric set by the consumer is lost to the absent recorder.
        let metrics = tandem_telemetry::metrics_recorder();
        let http = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?),
            None => None,
        };
        tandem_analytics::run(config, http, metrics, tandem_telemetry::service::shutdown_signal()).await
    })
}
