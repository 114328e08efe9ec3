//! The command line: one subcommand per workload preset, each with overridable parameters (a
//! preset's defaults are its issue-5 figures), `summarize` for the medians of several runs, and
//! `html` to render a JSON report again.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::ApiConfig;
use crate::broker::BrokerConfig;
use crate::connections::{ConnectionsConfig, MAX_CONNECTIONS};
use crate::history::HistoryConfig;
use crate::procstat::WatchSpec;
use crate::replay::{self, ReplayConfig};
use crate::stalled::StalledConfig;
use crate::typing::TypingConfig;
use crate::RunConfig;

/// Longest history the `history` preset writes: its typist's text (about 0.7 characters per op)
/// stays under the sequencer's default document limit of 10,000,000 characters.
pub const MAX_HISTORY_OPS: u64 = 10_000_000;
/// Most simulated clients in one run: each is a WebSocket connection with its own task.
pub const MAX_CLIENTS: usize = 20_000;
/// Highest typing rate of one client, in ops per second.
pub const MAX_RATE: f64 = 1000.0;
/// Longest warm-up or measuring time.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Load generator for Tandem: simulated editors over real WebSockets, latency measured with HDR
/// histograms, CPU and memory of the processes under test sampled, convergence checked at the end.
#[derive(Debug, Parser)]
#[command(name = "tandem-loadgen", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Runtime worker threads; by default one per core. One worker spends less CPU per op at `max`
    /// on 2 cores (13.8–14.6 against 15.3–16.7 µs) but adds its own queueing to what it measures at
    /// `typing` (ack p50 0.84–0.86 against 0.71–0.77 ms; BENCHMARKS.md, issue 15), so it is a choice.
    #[arg(long, global = true, env = "TANDEM_LOADGEN_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
}

impl Cli {
    /// The runtime's workers: `--worker-threads`, or one per core.
    pub fn workers(&self) -> usize {
        self.worker_threads
            .map_or_else(|| std::thread::available_parallelism().map_or(1, |cores| cores.get()), usize::from)
    }
}

/// The runtime a command runs on, with `workers` workers ([`Cli::workers`]).
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// D documents × C clients, each typing R ops/s: 85 % one-character inserts near its previous
    /// position, 15 % one-character deletes (backspace).
    Typing(TypingArgs),
    /// One document, 50 clients typing 5 ops/s each: contention and fan-out on a single document.
    #[command(mut_arg("docs", |a| a.default_value("1")), mut_arg("clients", |a| a.default_value("50")))]
    HotDoc(TypingArgs),
    /// 100 documents × 2 clients typing far faster than a round trip: each client sends its next op
    /// (the edits composed meanwhile) as soon as the previous one is acknowledged, so the committed
    /// ops/s is the server's throughput.
    #[command(mut_arg("clients", |a| a.default_value("2")), mut_arg("rate", |a| a.default_value("200")))]
    Max(TypingArgs),
    /// N idle connections, each subscribed to one of D documents, held for the measuring time:
    /// connect rate and time, and what the connections cost the watched processes in memory.
    #[command(mut_arg("warmup", |a| a.default_value("0")))]
    Connections(ConnectionsArgs),
    /// The editing traces typed into fresh documents by one client each, as fast as the server
    /// acknowledges; every document must end at the trace's final text. `--duration` is the time
    /// limit.
    #[command(mut_arg("warmup", |a| a.default_value("0")), mut_arg("duration", |a| a.default_value("600")))]
    Replay(ReplayArgs),
    /// One busy document plus N connections that open it and never read again: the gateway's RSS
    /// over time, and how many of the stalled readers it disconnected (4408 `overloaded`).
    #[command(mut_arg("duration", |a| a.default_value("60")))]
    StalledReaders(StalledArgs),
    /// Writes a document with a long history (default 1,000,000 versions) into the cluster's Postgres
    /// event log as its sequencer would, then opens it from fresh connections: the time from `open`
    /// to the whole `snapshot` (cluster mode only: it needs the event log's URL).
    #[command(mut_arg("warmup", |a| a.default_value("0")), mut_arg("duration", |a| a.default_value("1")))]
    History(HistoryArgs),
    /// The Documents gRPC API: D documents, each with one writer submitting ApplyEdit at R edits/s
    /// (closed-loop above its round trip) and W watchers following it with WatchDocument: ApplyEdit
    /// latency and throughput, delivery latency to the watchers, CPU per edit.
    Api(ApiArgs),
    /// One Kafka hop on its own: records published one per request at a steady rate into a fresh
    /// topic and read back, with Tandem's own producer and reader; publish and hop latency per step
    /// of records stored, to tell the broker's cost from Tandem's.
    Broker(BrokerArgs),
    /// D documents × 2 editors on two gateways, each typing R keystrokes/s and announcing its caret
    /// with each: the latency of a caret between gateways next to an op's remote latency.
    Presence(crate::presence::PresenceArgs),
    /// Prints the medians of several JSON reports (`--json` of earlier runs) of one workload.
    Summarize {
        /// The reports.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Renders a JSON report (`--json` of an earlier run) as an HTML page.
    Html {
        /// The report.
        json: PathBuf,
        /// The page to write.
        #[arg(long, short)]
        out: PathBuf,
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
    /// A process to sample (CPU, RSS) every 500 ms: NAME=PID, or NAME=listen:PORT for the process
    /// listening on that TCP port here; a trailing `+` adds its children (`postgres=listen:5432+`);
    /// repeat for several. The load generator is always sampled.
    #[arg(long = "watch", value_name = "NAME=PID")]
    pub watch: Vec<WatchSpec>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the report as a self-contained HTML page (charts inline) to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
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

/// The typing workload's parameters (`typing`, `hot-doc`, `max`); the defaults are `typing`'s.
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
    /// Keystrokes per second typed by each client (R).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// What the clients talk to: Tandem, or a ShareDB 7 server (`deploy/sharedb.sh run PORT`,
    /// `--url ws://127.0.0.1:PORT`) with the same keystrokes, for a side-by-side.
    #[arg(long, value_enum, default_value_t = Server::Tandem)]
    pub server: Server,
}

/// The server a typing preset runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Server {
    Tandem,
    Sharedb,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections (N), each a client subscribed to one document.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Documents the connections are spread over (D).
    #[arg(long, default_value_t = 100)]
    pub docs: usize,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// A trace to replay: a name in --traces-dir (`rustcode`) or a file; repeat for several. All the
    /// traces of --traces-dir when not given.
    #[arg(long = "trace")]
    pub traces: Vec<String>,
    /// Where the traces are.
    #[arg(long, env = "TANDEM_TRACES_DIR", default_value = replay::DEFAULT_TRACES_DIR)]
    pub traces_dir: PathBuf,
    /// Documents each trace is typed into at the same time, one client each.
    #[arg(long, default_value_t = 1)]
    pub copies: usize,
    /// Patches typed each time an ack comes back; the client composes them into its next op.
    #[arg(long, default_value_t = 16)]
    pub burst: usize,
    /// Replay only the first N patches of each trace.
    #[arg(long)]
    pub max_patches: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct StalledArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Clients typing into the document.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Keystrokes per second of each writer.
    #[arg(long, default_value_t = 25.0)]
    pub rate: f64,
    /// Connections that open the document and never read (N).
    #[arg(long, default_value_t = 1000)]
    pub readers: usize,
    /// Receive buffer asked for on each stalled reader's socket, in bytes.
    #[arg(long, default_value_t = 4096)]
    pub recv_buffer: u32,
}

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Documents (D), each with one writer; the gRPC endpoint is the --url's host and port.
    #[arg(long, default_value_t = 20)]
    pub docs: usize,
    /// Watchers per document (W), each a WatchDocument stream on a connection of its own.
    #[arg(long, default_value_t = 2)]
    pub watchers: usize,
    /// ApplyEdits per second of each writer (R); each waits for the previous answer.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
}

impl ApiArgs {
    pub fn validate(self) -> Result<ApiConfig, String> {
        if self.docs == 0 {
            return Err("--docs must be at least 1".into());
        }
        let callers = self.docs.saturating_mul(self.watchers.saturating_add(1));
        if callers > MAX_CLIENTS {
            return Err(format!(
                "--docs × (1 + --watchers) is {callers}, at most {MAX_CLIENTS} are supported"
            ));
        }
        check_rate(self.rate)?;
        let run = self.common.validate()?;
        let grpc_urls = run.urls.iter().map(|url| grpc_url(url)).collect::<Result<_, _>>()?;
        Ok(ApiConfig { run, grpc_urls, docs: self.docs, watchers: self.watchers, rate: self.rate })
    }
}

/// The gRPC endpoint of a gateway, which serves the Documents API on its WebSocket's port:
/// `ws://HOST:PORT/v1/ws` → `http://HOST:PORT`.
fn grpc_url(ws: &str) -> Result<String, String> {
    let rest = ws
        .strip_prefix("ws://")
        .ok_or_else(|| format!("--url {ws}: the api preset speaks plain gRPC, give ws://HOST:PORT/v1/ws"))?;
    let host_port = rest.split('/').next().unwrap_or_default();
    if host_port.is_empty() {
        return Err(format!("--url {ws}: no host"));
    }
    Ok(format!("http://{host_port}"))
}

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Kafka bootstrap brokers, `host:port`.
    #[arg(long, env = "TANDEM_BROKERS")]
    pub brokers: String,
    /// Records published, one per request.
    #[arg(long, default_value_t = 30_000)]
    pub records: u64,
    /// Records per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Records per row of the report.
    #[arg(long, default_value_t = 5_000)]
    pub step: u64,
    /// The reader's `fetch.wait.max.ms`, as `--kafka-fetch-wait-ms` of the services (their default).
    #[arg(long, default_value_t = tandem_bus::kafka::KafkaConfig::default().fetch_wait.as_millis() as u64)]
    pub fetch_wait_ms: u64,
    /// The producer's `linger.ms`, as `--kafka-linger-ms` of the services.
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line per step.
    #[arg(long)]
    pub quiet: bool,
}

impl BrokerArgs {
    pub fn validate(&self) -> Result<BrokerConfig, String> {
        if !(1..=10_000_000).contains(&self.records) || self.step == 0 {
            return Err("--records must be 1 to 10000000 and --step at least 1".into());
        }
        check_rate(self.rate)?;
        Ok(BrokerConfig {
            brokers: self.brokers.clone(),
            records: self.records,
            rate: self.rate,
            step: self.step,
            fetch_wait: Duration::from_millis(self.fetch_wait_ms),
            linger: Duration::from_millis(self.linger_ms),
            progress: !self.quiet,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The cluster's Postgres event log, where the history is written.
    #[arg(long, env = "TANDEM_POSTGRES_URL")]
    pub postgres_url: String,
    /// Versions of history the document gets.
    #[arg(long, default_value_t = 1_000_000)]
    pub ops: u64,
    /// Timed opens, each from a fresh connection, round robin over the gateways.
    #[arg(long, default_value_t = 20)]
    pub opens: usize,
    /// The sequencers' snapshot interval (their `--snapshot-every`): the newest snapshot is left this
    /// many versions behind the head: every open reads a full interval of events after it.
    #[arg(long, default_value_t = 1000)]
    pub snapshot_every: u64,
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
            watch: self.watch,
        })
    }
}

fn check_rate(rate: f64) -> Result<(), String> {
    if rate > 0.0 && rate <= MAX_RATE {
        Ok(())
    } else {
        Err(format!("--rate must be above 0 and at most {MAX_RATE}"))
    }
}

impl TypingArgs {
    /// `preset` names the report: `typing`, `hot-doc` or `max`.
    pub fn validate(self, preset: &'static str) -> Result<TypingConfig, String> {
        if self.docs == 0 || self.clients == 0 {
            return Err("--docs and --clients must be at least 1".into());
        }
        let total = self.docs.saturating_mul(self.clients);
        if total > MAX_CLIENTS {
            return Err(format!(
                "--docs × --clients is {total}, at most {MAX_CLIENTS} clients are supported"
            ));
        }
        check_rate(self.rate)?;
        Ok(TypingConfig {
            preset,
            run: self.common.validate()?,
            docs: self.docs,
            clients: self.clients,
            rate: self.rate,
        })
    }
}

impl ConnectionsArgs {
    pub fn validate(self) -> Result<ConnectionsConfig, String> {
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(format!("--connections must be 1 to {MAX_CONNECTIONS}"));
        }
        if self.docs == 0 || self.connect_concurrency == 0 {
            return Err("--docs and --connect-concurrency must be at least 1".into());
        }
        Ok(ConnectionsConfig {
            run: self.common.validate()?,
            connections: self.connections,
            docs: self.docs,
            concurrency: self.connect_concurrency,
        })
    }
}

impl ReplayArgs {
    pub fn validate(self) -> Result<ReplayConfig, String> {
        if self.copies == 0 || self.burst == 0 || self.max_patches == Some(0) {
            return Err("--copies, --burst and --max-patches must be at least 1".into());
        }
        let traces = if self.traces.is_empty() {
            replay::traces_in(&self.traces_dir).map_err(|e| format!("{e:#}"))?
        } else {
            self.traces.iter().map(|t| resolve_trace(&self.traces_dir, t)).collect::<Result<_, _>>()?
        };
        if traces.is_empty() {
            return Err(format!("no trace in {}", self.traces_dir.display()));
        }
        if traces.len().saturating_mul(self.copies) > MAX_CLIENTS {
            return Err(format!("traces × --copies is above {MAX_CLIENTS}"));
        }
        Ok(ReplayConfig {
            run: self.common.validate()?,
            traces,
            copies: self.copies,
            burst: self.burst,
            max_patches: self.max_patches,
        })
    }
}

/// A trace given by name (`rustcode` → `DIR/rustcode.json.gz` or `.json`) or as a file.
fn resolve_trace(dir: &std::path::Path, trace: &str) -> Result<PathBuf, String> {
    let candidates =
        [PathBuf::from(trace), dir.join(format!("{trace}.json.gz")), dir.join(format!("{trace}.json"))];
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| format!("--trace {trace}: no such file, nor {trace}.json.gz in {}", dir.display()))
}

impl StalledArgs {
    pub fn validate(self) -> Result<StalledConfig, String> {
        if self.writers == 0 || self.writers > MAX_CLIENTS {
            return Err(format!("--writers must be 1 to {MAX_CLIENTS}"));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.readers) {
            return Err(format!("--readers must be 1 to {MAX_CONNECTIONS}"));
        }
        if self.recv_buffer < 1024 {
            return Err("--recv-buffer must be at least 1024 bytes".into());
        }
        check_rate(self.rate)?;
        let run = self.common.validate()?;
        if !run.urls[0].starts_with("ws://") {
            return Err("stalled readers speak plain ws://".into());
        }
        Ok(StalledConfig {
            run,
            writers: self.writers,
            rate: self.rate,
            readers: self.readers,
            recv_buffer: self.recv_buffer,
        })
    }
}

impl HistoryArgs {
    pub fn validate(self) -> Result<HistoryConfig, String> {
        if !(1..=MAX_HISTORY_OPS).contains(&self.ops) {
            return Err(format!("--ops must be 1 to {MAX_HISTORY_OPS}"));
        }
        if !(1..=10_000).contains(&self.opens) {
            return Err("--opens must be 1 to 10000".into());
        }
        if !self.postgres_url.starts_with("postgres://") && !self.postgres_url.starts_with("postgresql://") {
            return Err(format!("--postgres-url {}: expected postgres://…", self.postgres_url));
        }
        Ok(HistoryConfig {
            run: self.common.validate()?,
            postgres_url: self.postgres_url,
            ops: self.ops,
            opens: self.opens,
            snapshot_every: self.snapshot_every,
            batch: 10_000,
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

    fn parse(preset: &str, args: &[&str]) -> Command {
        let mut argv = vec!["tandem-loadgen", preset, "--url", "ws://127.0.0.1:1/v1/ws"];
        argv.extend(args);
        Cli::try_parse_from(argv).expect("parses").command
    }

    fn typing(preset: &str, args: &[&str]) -> Result<TypingConfig, String> {
        match parse(preset, args) {
            Command::Typing(args) => args.validate("typing"),
            Command::HotDoc(args) => args.validate("hot-doc"),
            Command::Max(args) => args.validate("max"),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_issue_s_presets() {
        let config = typing("typing", &[]).unwrap();
        assert_eq!((config.docs, config.clients, config.rate), (100, 5, 5.0));
        assert_eq!(
            (config.run.duration, config.run.warmup),
            (Duration::from_secs(30), Duration::from_secs(5))
        );
        assert!(config.run.progress);
        let hot = typing("hot-doc", &[]).unwrap();
        assert_eq!((hot.docs, hot.clients, hot.rate), (1, 50, 5.0));
        let max = typing("max", &[]).unwrap();
        assert_eq!((max.docs, max.clients, max.rate), (100, 2, 200.0));

        let Command::Connections(c) = parse("connections", &[]) else { panic!() };
        let c = c.validate().unwrap();
        assert_eq!((c.connections, c.docs, c.run.warmup), (10_000, 100, Duration::ZERO));
        let Command::Replay(r) = parse("replay", &[]) else { panic!() };
        let r = r.validate().unwrap();
        assert_eq!((r.traces.len(), r.copies, r.run.duration), (4, 1, Duration::from_secs(600)));
        let Command::StalledReaders(s) = parse("stalled-readers", &[]) else { panic!() };
        let s = s.validate().unwrap();
        assert_eq!((s.readers, s.writers, s.run.duration), (1000, 4, Duration::from_secs(60)));
    }

    #[test]
    fn parameters_are_overridable_and_checked() {
        let config =
            typing("typing", &["--docs", "20", "--clients", "2", "--rate", "2.5", "--duration", "1.5"])
                .unwrap();
        assert_eq!((config.docs, config.clients, config.rate), (20, 2, 2.5));
        assert_eq!(config.run.duration, Duration::from_millis(1500));
        let hot = typing("hot-doc", &["--clients", "7", "--watch", "gw=listen:80"]).unwrap();
        assert_eq!((hot.docs, hot.clients, hot.run.watch.len()), (1, 7, 1));
        assert!(typing("typing", &["--rate", "0"]).is_err());
        assert!(typing("typing", &["--docs", "0"]).is_err());
        assert!(typing("typing", &["--docs", "10000", "--clients", "10"]).is_err());
        assert!(Cli::try_parse_from(["tandem-loadgen", "typing", "--url", "ws://x/", "--duration", "-1"])
            .is_err());
        assert!(
            Cli::try_parse_from(["tandem-loadgen", "typing", "--url", "ws://x/", "--watch", "gw"]).is_err()
        );
        assert!(typing("typing", &["--url", "http://x/"]).is_err());

        let Command::Replay(r) = parse("replay", &["--trace", "rustcode", "--max-patches", "10"]) else {
            panic!()
        };
        let r = r.validate().unwrap();
        assert!(r.traces[0].ends_with("rustcode.json.gz"));
        assert_eq!(r.max_patches, Some(10));
        let Command::Replay(r) = parse("replay", &["--trace", "no-such-trace"]) else { panic!() };
        assert!(r.validate().is_err());
    }

    /// The promise of `--worker-threads`: one per core by default, any count from one when given,
    /// after the subcommand as before it; zero refused with the range.
    #[test]
    fn worker_threads_default_to_the_cores_and_are_overridable() {
        let cores = std::thread::available_parallelism().unwrap().get();
        let cli = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let default = cli(&["tandem-loadgen", "typing", "--url", "ws://x/"]).unwrap();
        assert_eq!(default.workers(), cores);
        let after = cli(&["tandem-loadgen", "max", "--url", "ws://x/", "--worker-threads", "3"]).unwrap();
        assert_eq!(after.workers(), 3);
        let before = cli(&["tandem-loadgen", "--worker-threads", "5", "max", "--url", "ws://x/"]).unwrap();
        assert_eq!(before.workers(), 5);
        let zero = cli(&["tandem-loadgen", "max", "--url", "ws://x/", "--worker-threads", "0"]).unwrap_err();
        assert!(zero.to_string().contains("1.."), "{zero}");
        assert_eq!(runtime(2).metrics().num_workers(), 2);
    }

    #[test]
    fn the_api_preset_finds_the_grpc_port_at_the_websocket_s() {
        let Command::Api(a) = parse("api", &["--url", "ws://10.0.0.2:8082/v1/ws"]) else { panic!() };
        let a = a.validate().unwrap();
        assert_eq!((a.docs, a.watchers, a.rate), (20, 2, 20.0));
        assert_eq!(a.grpc_urls, ["http://127.0.0.1:1", "http://10.0.0.2:8082"]);
        let Command::Api(a) = parse("api", &["--watchers", "0", "--rate", "1000"]) else { panic!() };
        assert_eq!(a.validate().unwrap().watchers, 0);
        let Command::Api(a) = parse("api", &["--docs", "0"]) else { panic!() };
        assert!(a.validate().is_err());
        let Command::Api(a) = parse("api", &["--docs", "10000", "--watchers", "2"]) else { panic!() };
        assert!(a.validate().unwrap_err().contains("at most 20000"));
        assert!(grpc_url("wss://x/v1/ws").unwrap_err().contains("plain gRPC"));
    }
}
