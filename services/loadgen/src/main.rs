//! `tandem-loadgen`: runs a workload preset against Tandem gateways and reports what it measured.
//!
//! Exit status: 0 when the run was clean (converged, no error), 2 when it ran but was not, 1 when
//! it could not run, 64 for a bad command line.

use std::path::PathBuf;
use std::process::ExitCode;

use tandem_loadgen::cli::{runtime, Cli, Command, CommonArgs, Server, TypingArgs};
use tandem_loadgen::report::{self, Report};
use tandem_loadgen::{api, broker, connections, history, html, replay, sharedb_editor, stalled, typing};

/// mimalloc instead of glibc's malloc, as the single process uses: the load generator allocates
/// for every frame it sends and reads, and must cost less than the server it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A validated preset, ready to run.
enum Job {
    Typing(typing::TypingConfig),
    /// A typing preset against ShareDB (`--server sharedb`).
    ShareDb(typing::TypingConfig),
    Connections(connections::ConnectionsConfig),
    Replay(replay::ReplayConfig),
    Stalled(stalled::StalledConfig),
    History(history::HistoryConfig),
    Api(api::ApiConfig),
}

impl Job {
    async fn run(self) -> anyhow::Result<Report> {
        match self {
            Job::Typing(config) => typing::run(&config).await,
            Job::ShareDb(config) => sharedb_editor::run(&config).await,
            Job::Connections(config) => connections::run(&config).await,
            Job::Replay(config) => replay::run(&config).await,
            Job::Stalled(config) => stalled::run(&config).await,
            Job::History(config) => history::run(&config).await,
            Job::Api(config) => api::run(&config).await,
        }
    }
}

/// Where the report goes besides the table.
struct Outputs {
    json: Option<PathBuf>,
    html: Option<PathBuf>,
}

impl Outputs {
    fn of(common: &CommonArgs) -> Self {
        Self { json: common.json.clone(), html: common.html.clone() }
    }
}

fn main() -> ExitCode {
    let cli: Cli = tandem_telemetry::service::parse_or_exit();
    if std::env::var_os("TANDEM_LOG").is_none() && std::env::var_os("RUST_LOG").is_none() {
        // Thousands of clients each warning about the same server error would bury the table.
        std::env::set_var("TANDEM_LOG", "error");
    }
    tandem_telemetry::init();
    let workers = cli.workers();
    let (outputs, job) = match cli.command {
        Command::Typing(args) => (Outputs::of(&args.common), typing_job(args, "typing")),
        Command::HotDoc(args) => (Outputs::of(&args.common), typing_job(args, "hot-doc")),
        Command::Max(args) => (Outputs::of(&args.common), typing_job(args, "max")),
        Command::Connections(args) => (Outputs::of(&args.common), args.validate().map(Job::Connections)),
        Command::Replay(args) => (Outputs::of(&args.common), args.validate().map(Job::Replay)),
        Command::StalledReaders(args) => (Outputs::of(&args.common), args.validate().map(Job::Stalled)),
        Command::History(args) => (Outputs::of(&args.common), args.validate().map(Job::History)),
        Command::Api(args) => (Outputs::of(&args.common), args.validate().map(Job::Api)),
        Command::Broker(args) => return probe_broker(&args, workers),
        Command::Presence(args) => return tandem_loadgen::presence::run_cli(&args, workers),
        Command::Summarize { files } => return summarize(&files),
        Command::Html { json, out } => {
            return match Report::read_json(&json).and_then(|r| html::write(&r, &out)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            };
        }
    };
    let job = match job {
        Ok(job) => job,
        Err(e) => {
            eprintln!("tandem-loadgen: {e}");
            return ExitCode::from(64);
        }
    };
    // Thousands of connections need as many descriptors: take what the hard limit allows.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("tandem-loadgen: cannot raise the open-file limit: {e}");
    }
    match runtime(workers).block_on(job.run()) {
        Ok(report) => finish(&report, &outputs),
        Err(e) => fail(&e),
    }
}

/// A typing preset against the server `--server` names.
fn typing_job(args: TypingArgs, preset: &'static str) -> Result<Job, String> {
    let server = args.server;
    args.validate(preset).map(|config| match server {
        Server::Tandem => Job::Typing(config),
        Server::Sharedb => Job::ShareDb(config),
    })
}

/// The broker probe: its own table and JSON, not a load report.
fn probe_broker(args: &tandem_loadgen::cli::BrokerArgs, workers: usize) -> ExitCode {
    let config = match args.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tandem-loadgen: {e}");
            return ExitCode::from(64);
        }
    };
    let report = match runtime(workers).block_on(broker::run(&config)) {
        Ok(report) => report,
        Err(e) => return fail(&e),
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(anyhow::Error::from)
            .and_then(|json| std::fs::write(path, json + "\n").map_err(anyhow::Error::from));
        if let Err(e) = written {
            return fail(&e.context(format!("write {}", path.display())));
        }
    }
    if report.lost == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn summarize(files: &[PathBuf]) -> ExitCode {
    match files.iter().map(|f| Report::read_json(f)).collect::<Result<Vec<_>, _>>() {
        Ok(reports) => {
            print!("{}", report::summarize(&reports));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("tandem-loadgen: {e:#}");
    ExitCode::FAILURE
}

/// Prints the table, writes the JSON and the HTML, and turns the verdict into the exit status.
fn finish(report: &Report, outputs: &Outputs) -> ExitCode {
    print!("{}", report.table());
    let written = outputs
        .json
        .as_ref()
        .map_or(Ok(()), |path| report.write_json(path))
        .and_then(|()| outputs.html.as_ref().map_or(Ok(()), |path| html::write(report, path)));
    if let Err(e) = written {
        return fail(&e);
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
