//! The command line: one subcommand per workload preset, each with overridable parameters, and
//! `summarize` for the medians of several runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::typing::TypingConfig;
use crate::RunConfig;

/// Most simulated clients in one run: each is a WebSocket connection with its own task.
pub const MAX_CLIENTS: usize = 20_000;
/// Highest typing rate of one client, in ops per second.
pub const MAX_RATE: f64 = 1000.0;
/// Longest warm-up or measuring time.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Load generator for Tandem: simulated editors over real WebSockets, latency measured with HDR
/// histograms, convergence checked at the end.
#[derive(Debug, Parser)]
#[command(name = "tandem-loadgen", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// D documents × C clients, each typing R ops/s: 85 % one-character inserts near its previous
    /// position, 15 % one-character deletes (backspace).
    Typing(TypingArgs),
    /// Prints the medians of several JSON reports (`--json` of earlier runs) of one workload.
    Summarize {
        /// The reports.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Settings every preset has.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// A gateway's WebSocket URL, `ws://HOST:PORT/v1/ws`; repeat it for several gateways, the clients
    /// are spread over them round robin.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Bearer token sent on every connection.
    #[arg(long, env = "TANDEM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seconds of measuring, after the warm-up.
    #[arg(long, default_value = "30", value_parser = parse_secs)]
    pub duration: Duration,
    /// Seconds of load before measuring starts; nothing submitted then is recorded.
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Longest wait at the end for every client to be acknowledged and caught up.
    #[arg(long, default_value = "30", value_parser = parse_secs)]
    pub settle_timeout: Duration,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Seed of the simulated typing (random when not given; printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Free text stored in the report, e.g. the mode or the commit measured.
    #[arg(long)]
    pub label: Option<String>,
    /// No progress line every second.
    #[arg(long)]
    pub quiet: bool,
}

/// The `typing` preset's parameters; the defaults are issue 5's (100 × 5 at 5 ops/s).
#[derive(Debug, Clone, Args)]
pub struct TypingArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Documents (D).
    #[arg(long, default_value_t = 100)]
    pub docs: usize,
    /// Clients per document (C), each its own connection.
    #[arg(long, default_value_t = 5)]
    pub clients: usize,
    /// Ops per second typed by each client (R).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
}

impl CommonArgs {
    /// Checks the values once, so the run never meets a bad one.
    pub fn validate(self) -> Result<RunConfig, String> {
        if self.urls.is_empty() {
            return Err("give at least one --url".into());
        }
        for url in &self.urls {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(format!("--url {url}: expected ws://HOST:PORT/v1/ws"));
            }
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION || self.warmup > MAX_DURATION {
            return Err(format!("--duration must be above 0 and --warmup at most {MAX_DURATION:?}"));
        }
        if self.settle_timeout.is_zero() || self.settle_timeout > MAX_DURATION {
            return Err("--settle-timeout must be above 0".into());
        }
        Ok(RunConfig {
            urls: self.urls,
            token: self.token,
            duration: self.duration,
            warmup: self.warmup,
            settle_timeout: self.settle_timeout,
            seed: self.seed.unwrap_or_else(rand::random),
            label: self.label,
            progress: !self.quiet,
        })
    }
}

impl TypingArgs {
    pub fn validate(self) -> Result<TypingConfig, String> {
        if self.docs == 0 || self.clients == 0 {
            return Err("--docs and --clients must be at least 1".into());
        }
        let total = self.docs.saturating_mul(self.clients);
        if total > MAX_CLIENTS {
            return Err(format!(
                "--docs × --clients is {total}, at most {MAX_CLIENTS} clients are supported"
            ));
        }
        if !(self.rate > 0.0 && self.rate <= MAX_RATE) {
            return Err(format!("--rate must be above 0 and at most {MAX_RATE}"));
        }
        Ok(TypingConfig {
            run: self.common.validate()?,
            docs: self.docs,
            clients: self.clients,
            rate: self.rate,
        })
    }
}

/// Seconds, fractions allowed: `30`, `2.5`.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a duration in seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typing(args: &[&str]) -> Result<TypingConfig, String> {
        let mut argv = vec!["tandem-loadgen", "typing", "--url", "ws://127.0.0.1:1/v1/ws"];
        argv.extend(args);
        match Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command {
            Command::Typing(args) => args.validate(),
            Command::Summarize { .. } => unreachable!("parsed typing"),
        }
    }

    #[test]
    fn defaults_are_the_issue_s_typing_preset() {
        let config = typing(&[]).unwrap();
        assert_eq!((config.docs, config.clients, config.rate), (100, 5, 5.0));
        assert_eq!(
            (config.run.duration, config.run.warmup),
            (Duration::from_secs(30), Duration::from_secs(5))
        );
        assert!(config.run.progress);
    }

    #[test]
    fn parameters_are_overridable_and_checked() {
        let config =
            typing(&["--docs", "20", "--clients", "2", "--rate", "2.5", "--duration", "1.5"]).unwrap();
        assert_eq!((config.docs, config.clients, config.rate), (20, 2, 2.5));
        assert_eq!(config.run.duration, Duration::from_millis(1500));
        assert!(typing(&["--rate", "0"]).is_err());
        assert!(typing(&["--docs", "0"]).is_err());
        assert!(typing(&["--docs", "10000", "--clients", "10"]).is_err());
        assert!(typing(&["--duration", "-1"]).is_err());
        assert!(typing(&["--url", "http://x/"]).is_err());
    }
}
