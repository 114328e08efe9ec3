//! The lifecycle every Tandem binary shares: parse the command line, run the body on a runtime,
//! wait for a stop signal, turn the outcome into an exit status.

use std::future::Future;
use std::process::ExitCode;

use tracing::{error, warn};

/// Parses the command line. `--help` and `--version` print and exit 0; a bad command line prints
/// clap's one clear message and exits 64 (EX_USAGE), the same for every Tandem binary.
pub fn parse_or_exit<C: clap::Parser>() -> C {
    match C::try_parse() {
        Ok(config) => config,
        Err(e) if e.use_stderr() => {
            eprintln!("{e}");
            std::process::exit(64);
        }
        Err(e) => {
            let _ = e.print();
            std::process::exit(0);
        }
    }
}

/// Runs a service's body on a multi-threaded runtime; a failure is logged with its whole chain of
/// causes and exits 1.
pub fn run_service(body: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    run_service_with_workers(None, body)
}

/// [`run_service`] on `workers` runtime worker threads (tokio's default, a thread per core or
/// `TOKIO_WORKER_THREADS`, when `None`).
pub fn run_service_with_workers(
    workers: Option<usize>,
    body: impl Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers.max(1));
    }
    let runtime = builder.enable_all().build().expect("the tokio runtime starts");
    let outcome = runtime.block_on(body);
    // The spans of the last seconds are still in the batch processor: export them before exit.
    crate::otel::shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// After a stop was asked of `task`: waits for it to end, at most `limit`, or until a second stop
/// signal (an impatient operator); its outcome, or `None` when it did not end (said in the log).
pub async fn wait_for_stop<T>(
    task: &mut tokio::task::JoinHandle<T>,
    limit: std::time::Duration,
    what: &str,
) -> Option<Result<T, tokio::task::JoinError>> {
    tokio::select! {
        result = task => Some(result),
        _ = tokio::time::sleep(limit) => {
            warn!("{what} did not stop within {} s", limit.as_secs());
            None
        }
        _ = shutdown_signal() => {
            warn!("second signal: not waiting for {what}");
            None
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes and `make cluster-down` send).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
