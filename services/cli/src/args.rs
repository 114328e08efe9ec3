//! The command line: global connection flags (each also an environment variable), `--json`, and one
//! subcommand per operation of the Documents API. Everything here is parsing; what a subcommand
//! does is in [`crate::commands`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::error::EXIT_CODES_HELP;

/// The address `make run` serves on.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8080";
/// Most events ReadHistory returns in one page (docs/DOCUMENTS.md).
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Command-line client of Tandem's Documents API (gRPC): read a document at any version, page
/// through its history, apply an edit, watch it live, name versions, diff, export and import,
/// delete.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Machine output: one JSON object, or JSON lines for history, watch and export; errors as a
    /// JSON object on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the gateway is and who the caller is.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectionArgs {
    /// The gateway's gRPC address: http://HOST:PORT (HOST:PORT alone means http://).
    #[arg(long, env = "TANDEM_ADDRESS", default_value = DEFAULT_ADDRESS, global = true)]
    pub address: String,
    /// Bearer token: a user JWT, or the service token. Without one, the request carries none (a
    /// server run with --insecure-no-auth takes that).
    #[arg(long, env = "TANDEM_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// A file holding the token (surrounding whitespace is ignored); instead of --token.
    #[arg(long, env = "TANDEM_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Seconds to wait for the answer to one request (watch's stream is not limited).
    #[arg(long, default_value = "30", value_parser = parse_secs, global = true)]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prints the text of a document (at --version, else the latest). The text is printed as it is,
    /// without an added newline; --json adds the version and the latest version.
    Get {
        /// The document id.
        doc: String,
        /// The version to read; the latest when absent.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Prints the committed events with FROM < version <= TO, oldest first, a page at a time until
    /// the range is done: version, time (UTC), author and op per line (--json: one JSON object per
    /// event, as export writes them).
    History {
        /// The document id.
        doc: String,
        /// Events after this version (0: from the first).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Up to and including this version; the latest when absent.
        #[arg(long)]
        to: Option<u64>,
        /// Events per request, 1 to 1000 (the server's default when absent).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PAGE_SIZE)))]
        page_size: Option<u32>,
    },
    /// Submits one edit, transformed by the server against everything committed after --base.
    Apply(ApplyArgs),
    /// Follows a document: the events after --from, then live ones, until Ctrl-C or the document's
    /// deletion (both exit 0).
    Watch {
        /// The document id.
        doc: String,
        /// Events after this version (0: the whole history first).
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Names versions: `checkpoint create DOC NAME`, `checkpoint list DOC`.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Prints one op that turns version FROM into version TO (either may be the larger).
    Diff {
        /// The document id.
        doc: String,
        /// The version the op applies to.
        from: u64,
        /// The version it gives.
        to: u64,
    },
    /// Writes every event of the document to stdout as JSON lines: one object per event with
    /// version, author, client, seq, committed_at_ms and op (the op as on the WebSocket).
    Export {
        /// The document id.
        doc: String,
    },
    /// Applies the events of an export (JSON lines, from FILE or stdin) to a document, in order.
    #[command(long_about = IMPORT_HELP)]
    Import {
        /// The document id.
        doc: String,
        /// The export to read; stdin when absent or `-`.
        file: Option<PathBuf>,
    },
    /// Deletes a document for good: its events, snapshots and checkpoints. Asks first.
    Delete {
        /// The document id.
        doc: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

/// The long help of `import`: the request-id rule.
pub const IMPORT_HELP: &str = "\
Applies the events of an export (JSON lines, from FILE or stdin) to a document, in order, each with
ApplyEdit on base version = its exported version - 1, so that importing a whole export into a new
document reproduces the exported versions and text exactly. Only `version` and `op` of each line
are used; the events are committed with the caller as their author.

The document must be at the version before the import's first event (version 0 for a whole export),
or hold the events of an earlier run of the same import. Every event must commit as its exported
version: if the document was edited meanwhile, the import stops (exit code 12).

Request ids: event N of the input gets `imp-<version>-<H>`, where H is the first 128 bits (32 hex
digits) of SHA-256 chained over the input's events up to and including it (each event's version and
op). Running the same input again into the same document, with the same user's token, gives every
event the same request id, so the events an interrupted run committed are answered as duplicates and
not applied twice; other input, or the same events after other ones, gets other ids.";

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("edit").required(true).args(["op", "insert_at", "delete_at"])))]
pub struct ApplyArgs {
    /// The document id.
    pub doc: String,
    /// The version the edit was made against.
    #[arg(long)]
    pub base: u64,
    /// The op as JSON, as on the WebSocket: retain n, "insert", delete -n, walking the whole text of
    /// --base, e.g. '[5, " world"]'.
    #[arg(long, value_name = "JSON")]
    pub op: Option<String>,
    /// Insert TEXT at position POS (in Unicode scalar values) of the text of --base.
    #[arg(long, num_args = 2, value_names = ["POS", "TEXT"])]
    pub insert_at: Option<Vec<String>>,
    /// Delete LEN characters at position POS of the text of --base.
    #[arg(long, num_args = 2, value_names = ["POS", "LEN"])]
    pub delete_at: Option<Vec<String>>,
    /// 1 to 64 of [A-Za-z0-9._~-]; the same id retried gets the first result back. A fresh UUID when
    /// absent (printed on stderr, to retry with).
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Names a version (the latest when --version is absent). A name is given once per document.
    Create {
        /// The document id.
        doc: String,
        /// 1 to 128 characters, no control characters.
        name: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Lists the document's checkpoints, oldest version first.
    List {
        /// The document id.
        doc: String,
    },
}

/// Seconds, fractions allowed: `30`, `2.5`.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{s} s: the timeout must be above 0 and at most 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tandem").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let cli = parse(&["get", "notes", "--version", "3", "--json", "--address", "10.0.0.1:9"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.connection.address, "10.0.0.1:9");
        assert!(matches!(cli.command, Command::Get { ref doc, version: Some(3) } if doc == "notes"));
        let cli =
            parse(&["--timeout", "2.5", "history", "notes", "--from", "4", "--page-size", "10"]).unwrap();
        assert_eq!(cli.connection.timeout, Duration::from_millis(2500));
        assert!(matches!(cli.command, Command::History { from: 4, to: None, page_size: Some(10), .. }));
    }

    #[test]
    fn apply_takes_exactly_one_edit() {
        let cli = parse(&["apply", "d", "--base", "2", "--insert-at", "3", "hi there"]).unwrap();
        let Command::Apply(a) = cli.command else { panic!() };
        assert_eq!(a.insert_at, Some(vec!["3".to_owned(), "hi there".to_owned()]));
        assert_eq!((a.base, a.op, a.delete_at, a.request_id), (2, None, None, None));
        let cli = parse(&["apply", "d", "--base", "0", "--op", "[\"x\"]", "--request-id", "r-1"]).unwrap();
        let Command::Apply(a) = cli.command else { panic!() };
        assert_eq!((a.op.as_deref(), a.request_id.as_deref()), (Some("[\"x\"]"), Some("r-1")));

        let none = parse(&["apply", "d", "--base", "0"]).unwrap_err();
        assert_eq!(none.kind(), ErrorKind::MissingRequiredArgument);
        let two = parse(&["apply", "d", "--base", "0", "--op", "[]", "--delete-at", "0", "1"]).unwrap_err();
        assert_eq!(two.kind(), ErrorKind::ArgumentConflict);
        let no_base = parse(&["apply", "d", "--op", "[]"]).unwrap_err();
        assert_eq!(no_base.kind(), ErrorKind::MissingRequiredArgument);
        let half = parse(&["apply", "d", "--base", "0", "--insert-at", "3"]).unwrap_err();
        assert_eq!(half.kind(), ErrorKind::WrongNumberOfValues);
    }

    #[test]
    fn bad_numbers_and_limits_are_refused_with_their_range() {
        let e = parse(&["history", "d", "--page-size", "1001"]).unwrap_err();
        assert!(e.to_string().contains("1..=1000"), "{e}");
        assert!(parse(&["history", "d", "--page-size", "0"]).is_err());
        assert!(parse(&["get", "d", "--version", "-1"]).is_err());
        let e = parse(&["--timeout", "0", "get", "d"]).unwrap_err();
        assert!(e.to_string().contains("above 0"), "{e}");
        assert!(parse(&["diff", "d", "1"]).is_err());
    }

    #[test]
    fn checkpoint_import_and_delete_parse() {
        let cli = parse(&["checkpoint", "create", "d", "release 1", "--version", "7"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Checkpoint(CheckpointCommand::Create { ref name, version: Some(7), .. }) if name == "release 1"
        ));
        assert!(matches!(parse(&["checkpoint", "list", "d"]).unwrap().command, Command::Checkpoint(_)));
        let cli = parse(&["import", "d", "export.jsonl"]).unwrap();
        assert!(
            matches!(cli.command, Command::Import { file: Some(ref f), .. } if f.ends_with("export.jsonl"))
        );
        assert!(matches!(parse(&["delete", "d", "-y"]).unwrap().command, Command::Delete { yes: true, .. }));
        assert!(matches!(parse(&["delete", "d"]).unwrap().command, Command::Delete { yes: false, .. }));
    }

    #[test]
    fn the_help_lists_the_exit_codes_and_the_import_rule() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:") && help.contains("12  import"), "{help}");
        assert!(help.contains("TANDEM_ADDRESS") && help.contains("TANDEM_TOKEN_FILE"), "{help}");
        let mut cmd = Cli::command();
        let import = cmd.find_subcommand_mut("import").unwrap().render_long_help().to_string();
        assert!(import.contains("imp-<version>-<H>"), "{import}");
    }
}
