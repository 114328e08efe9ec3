//! `tandem`: see `tandem --help`, and the crate documentation of [`tandem_cli`].

use std::process::ExitCode;

use clap::Parser;
use tandem_cli::args::Cli;
use tandem_cli::commands;

fn main() -> ExitCode {
    // clap prints help and usage errors itself (usage errors exit with 2, like Exit::Usage).
    let cli = Cli::parse();
    let json = cli.json;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("the tokio runtime starts");
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                eprintln!("{}", e.to_json());
            } else {
                eprintln!("tandem: {e}");
            }
            ExitCode::from(e.exit.code())
        }
    }
}
