//! `tandem-loadgen`: runs a workload preset against Tandem gateways and reports what it measured.
//!
//! Exit status: 0 when the run was clean (converged, no error), 2 when it ran but was not, 1 when
//! it could not run, 64 for a bad command line.

use std::process::ExitCode;

use tandem_loadgen::cli::{Cli, Command};
use tandem_loadgen::report::{self, Report};
use tandem_loadgen::typing;

fn main() -> ExitCode {
    let cli: Cli = tandem_telemetry::service::parse_or_exit();
    if std::env::var_os("TANDEM_LOG").is_none() && std::env::var_os("RUST_LOG").is_none() {
        // Thousands of clients each warning about the same server error would bury the table.
        std::env::set_var("TANDEM_LOG", "error");
    }
    tandem_telemetry::init();
    match cli.command {
        Command::Typing(args) => {
            let json = args.common.json.clone();
            let config = match args.validate() {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("tandem-loadgen: {e}");
                    return ExitCode::from(64);
                }
            };
            let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
            let report = match runtime.block_on(typing::run(&config)) {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("tandem-loadgen: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            finish(&report, json.as_deref())
        }
        Command::Summarize { files } => {
            let reports: Result<Vec<Report>, _> = files.iter().map(|f| Report::read_json(f)).collect();
            match reports {
                Ok(reports) => {
                    print!("{}", report::summarize(&reports));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tandem-loadgen: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Prints the table, writes the JSON, and turns the verdict into the exit status.
fn finish(report: &Report, json: Option<&std::path::Path>) -> ExitCode {
    print!("{}", report.table());
    if let Some(path) = json {
        if let Err(e) = report.write_json(path) {
            eprintln!("tandem-loadgen: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
