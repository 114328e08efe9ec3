//! `tandem-loadgen`: the load-test harness of Tandem (issue 5).
//!
//! Presets (one module each, on the shared [`driver`]): [`typing`] (also `hot-doc` and `max`),
//! [`connections`], [`replay`], [`stalled`] (`stalled-readers`), [`history`] (opening a document
//! with a long history) and [`api`] (the Documents gRPC API: ApplyEdit and WatchDocument);
//! [`broker`] probes one Kafka hop on its own; [`sharedb_editor`] runs the typing presets against
//! ShareDB instead ([`sharedb`]: its protocol), for a side-by-side. Every run samples the CPU and
//! RSS of the processes named with `--watch` ([`procstat`]), keeps a per-second timeline
//! ([`monitor`]), and ends in a [`report::Report`]: a table, JSON, and an HTML page ([`html`]).
//!
//! Simulated editors are real [`tandem_client::Client`]s over real WebSockets, spread round robin
//! over one or several gateways. What is measured, and how:
//!
//! - **ack latency**: from the instant a keystroke is applied locally ([`DocHandle::splice`], which
//!   names the `seq` of the op that carries it) to the instant the client takes that op's `ack`
//!   ([`ClientEvent::Acked`]). One sample per keystroke, so time spent composed in the buffer behind
//!   an op in flight counts, as a user would feel it.
//! - **remote latency**: from the same keystroke instant to the instant another client of the
//!   document takes the op ([`ClientEvent::RemoteOp`]). Remote ops arrive transformed, so they are
//!   matched by (document, committed version), which the author learns from its ack, and the
//!   author's client id is checked. One sample per keystroke and receiving client.
//! - achieved rates, errors by code, reconnects, and at the end **convergence**: every client of a
//!   document has the text and version of a fresh reader's snapshot.
//!
//! Only keystrokes made inside the measuring window (after the warm-up) are recorded; their acks
//! and deliveries are still taken after the window closes, while the run settles.
//!
//! [`DocHandle::splice`]: tandem_client::DocHandle::splice
//! [`ClientEvent::Acked`]: tandem_client::ClientEvent::Acked
//! [`ClientEvent::RemoteOp`]: tandem_client::ClientEvent::RemoteOp

use std::time::{Duration, Instant};

pub mod api;
pub mod api_tasks;
pub mod broker;
pub mod cli;
pub mod connections;
pub mod converge;
pub mod driver;
pub mod history;
pub mod html;
pub mod monitor;
pub mod presence;
pub mod procstat;
pub mod recorder;
pub mod replay;
pub mod report;
pub mod sharedb;
pub mod sharedb_editor;
pub mod sharedb_replica;
pub mod stalled;
pub mod text_unicode;
pub mod typing;
pub mod wire;

/// Settings of one run, whatever the preset; validated (see [`cli::CommonArgs::validate`]).
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Gateway WebSocket URLs; clients are spread over them round robin.
    pub urls: Vec<String>,
    pub token: Option<String>,
    /// Measuring time, after the warm-up.
    pub duration: Duration,
    pub warmup: Duration,
    /// Longest wait at the end for every client to be synced and caught up.
    pub settle_timeout: Duration,
    pub seed: u64,
    pub label: Option<String>,
    /// Print a progress line every second (on stderr).
    pub progress: bool,
    /// Processes whose CPU and RSS are sampled.
    pub watch: Vec<procstat::WatchSpec>,
}

/// When the load runs and when it is measured.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The load starts.
    pub start: Instant,
    /// Warm-up over: keystrokes from here on are recorded.
    pub measure_start: Instant,
    /// The load stops; keystrokes before this are recorded.
    pub measure_end: Instant,
}

impl Schedule {
    pub fn new(start: Instant, warmup: Duration, duration: Duration) -> Self {
        let measure_start = start + warmup;
        Self { start, measure_start, measure_end: measure_start + duration }
    }

    /// True for a keystroke made inside the measuring window.
    pub fn measures(&self, at: Instant) -> bool {
        at >= self.measure_start && at < self.measure_end
    }

    /// The phase at `now`, for the progress line.
    pub fn phase(&self, now: Instant) -> &'static str {
        if now < self.measure_start {
            "warm-up"
        } else if now < self.measure_end {
            "measure"
        } else {
            "settle"
        }
    }
}
