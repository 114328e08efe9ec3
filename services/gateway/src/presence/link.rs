//! The other gateways' announcements: read from the presence bus, handed to the document tasks.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{unix_ms, Presences};

/// How often presences of documents nobody here has open are checked for their timeout.
const SWEEP: Duration = Duration::from_secs(1);
/// The pause before a presence stream that ended is opened again.
const REOPEN: Duration = Duration::from_secs(1);

/// Reads the bus until `shutdown`. A record's timeout runs from when its gateway sent it (as far
/// as the clocks agree, and at most a replay window back), so one read late, or replayed at
/// start, does not live longer.
pub(super) async fn run(presences: Arc<Presences>, shutdown: CancellationToken) {
    let Some(bus) = presences.config.bus.clone() else {
        return; // alone: nobody else announces anything
    };
    let timeout = presences.config.timeout;
    // Every live presence is re-announced within a heartbeat: reading that far back learns them all.
    let replay = presences.config.heartbeat + Duration::from_secs(1);
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        let opening = {
            let bus = bus.clone();
            tokio::task::spawn_blocking(move || bus.subscribe(replay))
        };
        let mut stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            opened = opening => match opened {
                Ok(stream) => stream,
                Err(e) => {
                    warn!(error = %e, "opening the presence stream failed");
                    tokio::time::sleep(REOPEN).await;
                    continue;
                }
            },
        };
        info!("reading other gateways' presence");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sweep.tick() => presences.sweep(tokio::time::Instant::now()),
                record = stream.next() => {
                    let Some(record) = record else { break };
                    if record.gateway == presences.gateway {
                        continue;
                    }
                    // Capped: a record older than the replay window can only mean a skewed clock.
                    let age = Duration::from_millis(unix_ms().saturating_sub(record.sent_at_ms));
                    let left = timeout.saturating_sub(age.min(replay));
                    metrics::counter!("tandem_gateway_presence_received_total").increment(1);
                    presences.route_remote((record, tokio::time::Instant::now() + left));
                }
            }
        }
        warn!("the presence stream ended; opening it again");
        tokio::time::sleep(REOPEN).await;
    }
}
