//! Command-line flags of the WebSocket edge, shared by `tandem-gateway` and `tandem-standalone`:
//! authentication, browser safety and every per-connection limit.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tandem_auth::JwtArgs;

use crate::{Authentication, GatewayConfig};

/// Flags of the edge. Every flag can also be set with the environment variable shown.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeArgs {
    /// Run WITHOUT authentication: every caller is `anonymous` and may read and write every document.
    /// For development on a trusted machine only.
    #[arg(long, env = "TANDEM_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// How tokens are verified (`--jwt-key-file` turns authentication on).
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Origins (e.g. `https://app.example.com`) besides this server's own whose pages may connect with
    /// the session cookie. Repeat or separate with commas.
    #[arg(long = "allowed-origin", env = "TANDEM_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Mark the session cookie `Secure` (HTTPS only). Turn off only for plain HTTP on a private network.
    #[arg(long, env = "TANDEM_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,
    /// Connections one user may have open at once.
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS_PER_USER", default_value_t = 100)]
    pub max_connections_per_user: usize,
    /// Connections one IP address may have open at once.
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,
    /// Sustained `op` and `open` messages per second on one connection.
    #[arg(long, env = "TANDEM_OPS_PER_SECOND", default_value_t = 1000)]
    pub ops_per_second: u32,
    /// `op` and `open` messages one connection may send in a burst.
    #[arg(long, env = "TANDEM_OPS_BURST", default_value_t = 2000)]
    pub ops_burst: u32,
    /// Kernel send buffer of each client socket in bytes (0: the kernel's autotuning).
    #[arg(long, env = "TANDEM_SOCKET_SEND_BUFFER", default_value_t = 128 << 10)]
    pub socket_send_buffer: usize,
    /// Largest WebSocket message, in bytes.
    #[arg(long, env = "TANDEM_MAX_FRAME_BYTES", default_value_t = 1 << 20)]
    pub max_frame_bytes: usize,
    /// Frames queued for one client before it is disconnected as `overloaded`.
    #[arg(long, env = "TANDEM_OUTBOUND_QUEUE", default_value_t = 4096)]
    pub outbound_queue: usize,
    /// Bytes queued for one client before it is disconnected as `overloaded`.
    #[arg(long, env = "TANDEM_OUTBOUND_QUEUE_BYTES", default_value_t = 8 << 20)]
    pub outbound_queue_bytes: usize,
    /// Seconds a write to a client may block before the client is disconnected as `overloaded`.
    #[arg(long, env = "TANDEM_WRITE_TIMEOUT", default_value_t = 10)]
    pub write_timeout: u64,
    /// Documents one connection may have open at once.
    #[arg(long, env = "TANDEM_MAX_OPEN_DOCUMENTS", default_value_t = 100)]
    pub max_open_documents: usize,
    /// Ops of one connection waiting for the op log before further ones are answered `unavailable`.
    #[arg(long, env = "TANDEM_SUBMIT_QUEUE", default_value_t = 64)]
    pub submit_queue: usize,
    /// Versions an `open` with `since` may be behind the document and still get a replay of every
    /// version; further behind, it gets a `snapshot` (then `opened`).
    #[arg(long, env = "TANDEM_CATCH_UP_LIMIT", default_value_t = 10_000)]
    pub catch_up_limit: u64,
    /// Seconds from connecting to the `hello` frame.
    #[arg(long, env = "TANDEM_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout: u64,
    /// Seconds a connection may stay silent before it is closed.
    #[arg(long, env = "TANDEM_IDLE_TIMEOUT", default_value_t = 120)]
    pub idle_timeout: u64,
    /// Seconds a stopping gateway keeps serving its connected clients (while not ready and refusing
    /// new ones) before it closes their connections with 1012 and exits.
    #[arg(long, env = "TANDEM_DRAIN_GRACE_SECONDS", default_value_t = 10)]
    pub drain_grace_seconds: u64,
    /// Versions queued for one Documents API watcher that reads too slowly before its stream ends
    /// as `overloaded`.
    #[arg(long, env = "TANDEM_WATCH_QUEUE", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_queue: u64,
    /// Seconds ApplyEdit and DeleteDocument of the Documents API wait for the sequencer's outcome
    /// before answering `unavailable`.
    #[arg(long, env = "TANDEM_API_WAIT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub api_wait_seconds: u64,
    /// Presence: rate limit, heartbeat and timeout.
    #[command(flatten)]
    pub presence: crate::presence::PresenceArgs,
}

impl EdgeArgs {
    /// The gateway configuration these flags describe. Fails when authentication is neither
    /// configured nor explicitly turned off, or a key cannot be read.
    pub fn gateway_config(&self) -> anyhow::Result<GatewayConfig> {
        let verifier = self.jwt.verifier().context("token verification")?;
        let auth = match (self.insecure_no_auth, verifier) {
            (true, Some(_)) => {
                anyhow::bail!("--insecure-no-auth and --jwt-key-file contradict each other; give one")
            }
            (true, None) => Authentication::Disabled,
            (false, Some(verifier)) => Authentication::Jwt(Arc::new(verifier)),
            (false, None) => anyhow::bail!(
                "authentication is not configured: give --jwt-key-file (with --jwt-algorithm), \
                 or --insecure-no-auth to run without authentication (development only)"
            ),
        };
        Ok(GatewayConfig {
            auth,
            allowed_origins: self.allowed_origins.clone(),
            cookie_secure: self.cookie_secure,
            max_connections_per_user: self.max_connections_per_user,
            max_connections_per_ip: self.max_connections_per_ip,
            ops_per_second: self.ops_per_second,
            ops_burst: self.ops_burst,
            socket_send_buffer: self.socket_send_buffer,
            max_frame_bytes: self.max_frame_bytes,
            outbound_queue: self.outbound_queue,
            outbound_queue_bytes: self.outbound_queue_bytes,
            write_timeout: Duration::from_secs(self.write_timeout),
            max_open_documents: self.max_open_documents,
            submit_queue: self.submit_queue,
            catch_up_limit: self.catch_up_limit,
            handshake_timeout: Duration::from_secs(self.handshake_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            drain_grace: Duration::from_secs(self.drain_grace_seconds),
            watch_queue: usize::try_from(self.watch_queue).unwrap_or(usize::MAX),
            api_wait: Duration::from_secs(self.api_wait_seconds),
            presence: self.presence.config()?,
            ..GatewayConfig::default()
        })
    }

    /// Prints the security line of the start banner; running without authentication is also logged
    /// as a warning, so it shows in the log too.
    pub fn announce(&self) {
        println!("  {}", self.banner());
        if self.insecure_no_auth {
            tracing::warn!("{}", self.banner());
        }
    }

    /// What a person starting the server must know about its security, for the start banner.
    fn banner(&self) -> String {
        if self.insecure_no_auth {
            "WARNING: AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach this port can read \
             and write every document. Development only."
                .to_owned()
        } else {
            format!("authentication: {}", self.jwt.describe())
        }
    }
}
