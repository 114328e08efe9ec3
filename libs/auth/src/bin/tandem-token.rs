//! `tandem-token`: mints development tokens, and makes the secrets to sign them.
//!
//! ```text
//! tandem-token new-secret > dev.secret
//! tandem-token mint --secret-file dev.secret --user alice --write 'team-a/*' --read handbook
//! ```
//!
//! The token goes to standard output only: never into a log or a URL.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tandem_auth::{mint, MintKey, MintRequest, DEFAULT_AUDIENCE, DEFAULT_ISSUER};

#[derive(Debug, Parser)]
#[command(version, about = "Mint development tokens for Tandem")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new random HS256 secret (64 hex characters) for `--jwt-hs256-secret-file`.
    NewSecret,
    /// Print a signed token.
    Mint {
        /// HS256 secret file (the server's `--jwt-hs256-secret-file`).
        #[arg(long, conflicts_with_all = ["rs256_private_key", "ed25519_private_key"])]
        secret_file: Option<PathBuf>,
        /// RS256 private key (PEM).
        #[arg(long, conflicts_with = "ed25519_private_key")]
        rs256_private_key: Option<PathBuf>,
        /// Ed25519 private key (PKCS#8 PEM).
        #[arg(long)]
        ed25519_private_key: Option<PathBuf>,
        /// The user id (`sub`).
        #[arg(long)]
        user: String,
        /// Documents the user may read: an id, a prefix ending in `*`, or `*` (repeatable).
        #[arg(long)]
        read: Vec<String>,
        /// Documents the user may write (and read); same patterns (repeatable).
        #[arg(long)]
        write: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600, allow_negative_numbers = true)]
        ttl: i64,
        #[arg(long, default_value = DEFAULT_AUDIENCE)]
        audience: String,
        #[arg(long, default_value = DEFAULT_ISSUER)]
        issuer: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-token: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::NewSecret => {
            let mut bytes = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut bytes))
                .map_err(|e| format!("read /dev/urandom: {e}"))?;
            println!("{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
            Ok(())
        }
        Command::Mint {
            secret_file,
            rs256_private_key,
            ed25519_private_key,
            user,
            read,
            write,
            ttl,
            audience,
            issuer,
        } => {
            let read_file =
                |path: &PathBuf| std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()));
            let key = match (secret_file, rs256_private_key, ed25519_private_key) {
                (Some(path), _, _) => MintKey::Hs256(read_file(&path)?.trim_ascii().to_vec()),
                (_, Some(path), _) => MintKey::Rs256(read_file(&path)?),
                (_, _, Some(path)) => MintKey::EdDsa(read_file(&path)?),
                _ => {
                    return Err("give --secret-file, --rs256-private-key or --ed25519-private-key".to_owned())
                }
            };
            if read.is_empty() && write.is_empty() {
                return Err("the token would open no document: give --read and/or --write".to_owned());
            }
            let request =
                MintRequest { user, read, write, ttl_secs: ttl, not_before_secs: None, audience, issuer };
            println!("{}", mint(&key, &request).map_err(|e| e.to_string())?);
            Ok(())
        }
    }
}
