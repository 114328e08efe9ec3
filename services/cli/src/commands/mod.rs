//! What each subcommand does: connect, call the Documents API, print. One module per kind of work:
//! [`read`] (get, history, diff, export, checkpoint list), [`write`](mod@write) (apply, checkpoint create,
//! delete), [`watch`] and [`import`].

use std::io::Write;

use crate::args::{CheckpointCommand, Cli, Command};
use crate::connect::{self, Api};
use crate::error::{CliError, Exit};

pub mod import;
pub mod read;
pub mod watch;
pub mod write;

/// Where results go: stdout, as text or as JSON.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
}

impl Out {
    /// Writes `text` and a newline, flushed (a watch is read line by line).
    pub fn line(&self, text: &str) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}").and_then(|()| stdout.flush()).map_err(write_error)
    }

    /// Writes `text` exactly (a document's text).
    pub fn raw(&self, text: &str) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(write_error)
    }

    pub fn value(&self, value: &serde_json::Value) -> Result<(), CliError> {
        self.line(&value.to_string())
    }
}

fn write_error(e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // The reader went away (`tandem export d | head`): nothing more to say to anyone.
        std::process::exit(0);
    }
    CliError::local(Exit::Usage, "write to stdout", e.to_string())
}

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let out = Out { json: cli.json };
    let timeout = cli.connection.timeout;
    // Asked before connecting: a question is cheaper than a connection.
    if let Command::Delete { doc, yes: false } = &cli.command {
        write::confirm_delete(doc)?;
    }
    let mut api: Api = connect::connect(&cli.connection).await?;
    let api = &mut api;
    match cli.command {
        Command::Get { doc, version } => read::get(api, timeout, out, doc, version).await,
        Command::History { doc, from, to, page_size } => {
            read::history(api, timeout, out, &doc, from, to, page_size).await
        }
        Command::Diff { doc, from, to } => read::diff(api, timeout, out, doc, from, to).await,
        Command::Export { doc } => read::export(api, timeout, out, &doc).await,
        Command::Checkpoint(CheckpointCommand::List { doc }) => {
            read::list_checkpoints(api, timeout, out, doc).await
        }
        Command::Checkpoint(CheckpointCommand::Create { doc, name, version }) => {
            write::create_checkpoint(api, timeout, out, doc, name, version).await
        }
        Command::Apply(args) => write::apply(api, timeout, out, args).await,
        Command::Delete { doc, .. } => write::delete(api, timeout, out, doc).await,
        Command::Watch { doc, from } => watch::watch(api, timeout, out, doc, from).await,
        Command::Import { doc, file } => import::import(api, timeout, out, &doc, file).await,
    }
}
