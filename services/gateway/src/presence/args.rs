//! Command-line flags of presence, part of the edge's flags (`EdgeArgs`).

use std::time::Duration;

use super::PresenceConfig;

/// Presence limits and timing. Every flag can also be set with the environment variable shown.
#[derive(Debug, Clone, clap::Args)]
pub struct PresenceArgs {
    /// Presence updates one connection may have relayed per second; faster ones are coalesced
    /// (the latest of each document wins).
    #[arg(long, env = "TANDEM_PRESENCE_PER_SECOND", default_value_t = PresenceConfig::default().updates_per_second,
        value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub presence_per_second: u32,
    /// How often each live presence is re-announced to the other gateways, in milliseconds.
    #[arg(long, env = "TANDEM_PRESENCE_HEARTBEAT_MS", default_value_t = millis(PresenceConfig::default().heartbeat))]
    pub presence_heartbeat_ms: u64,
    /// How long a presence from another gateway lives without being re-announced, in milliseconds
    /// (a few heartbeats).
    #[arg(long, env = "TANDEM_PRESENCE_TIMEOUT_MS", default_value_t = millis(PresenceConfig::default().timeout))]
    pub presence_timeout_ms: u64,
    /// How many versions behind the document a selection's version may be.
    #[arg(long, env = "TANDEM_PRESENCE_MAX_VERSION_LAG", default_value_t = PresenceConfig::default().max_version_lag)]
    pub presence_max_version_lag: u64,
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

impl PresenceArgs {
    /// The configuration these flags describe, without a bus (the service adds its own).
    pub fn config(&self) -> anyhow::Result<PresenceConfig> {
        if self.presence_timeout_ms <= self.presence_heartbeat_ms {
            anyhow::bail!(
                "--presence-timeout-ms ({}) must be longer than --presence-heartbeat-ms ({}), \
                 or live presences would time out between heartbeats",
                self.presence_timeout_ms,
                self.presence_heartbeat_ms
            );
        }
        Ok(PresenceConfig {
            updates_per_second: self.presence_per_second,
            heartbeat: Duration::from_millis(self.presence_heartbeat_ms.max(1)),
            timeout: Duration::from_millis(self.presence_timeout_ms),
            max_version_lag: self.presence_max_version_lag.max(1),
            bus: None,
        })
    }
}
