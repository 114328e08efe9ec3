//! Tracing set-up shared by every Tandem service, so every process logs the same way.

use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber: human-readable lines on stderr, filtered by `TANDEM_LOG`
/// (or `RUST_LOG`), `info` by default. Stdout stays free for what a service prints on purpose.
pub fn init() {
    let filter = std::env::var("TANDEM_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .map(EnvFilter::new)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
