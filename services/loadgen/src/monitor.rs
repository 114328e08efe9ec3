//! The monitor: one task per run that owns the [`Recorder`], feeds it what the simulated clients
//! report, and once a second takes the last second's figures into the run's timeline and prints
//! the progress line (on stderr, unless `--quiet`).
//!
//! It starts before the first connection, so the timeline and the progress line cover the
//! connecting phase too; the recorder itself is created when the preset starts its load (the
//! [`Schedule`] arrives through a oneshot channel), since only then is the measuring window known.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tandem_client::Client;
use tokio::sync::{mpsc, oneshot};

use crate::procstat;
use crate::recorder::{Record, Recorded, Recorder, Tick};
use crate::Schedule;

/// Every client of the run, registered as it connects; the monitor sums their counters.
#[derive(Clone, Default)]
pub struct Clients(Arc<Mutex<Registry>>);

#[derive(Default)]
struct Registry {
    tandem: Vec<Client>,
    /// Clients that are not Tandem's (the ShareDB editors), which count for themselves.
    others: Vec<Arc<Counters>>,
}

/// What a client that is not a Tandem [`Client`] counts for the progress line and the timeline.
#[derive(Debug, Default)]
pub struct Counters {
    /// Ops written (resubmissions included).
    pub sent: AtomicU64,
    pub errors: AtomicU64,
}

impl Clients {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, client: Client) {
        self.lock().tandem.push(client);
    }

    /// Registers a client that counts for itself; returns its counters.
    pub fn push_other(&self) -> Arc<Counters> {
        let counters = Arc::new(Counters::default());
        self.lock().others.push(Arc::clone(&counters));
        counters
    }

    pub fn all(&self) -> Vec<Client> {
        self.lock().tandem.clone()
    }

    fn totals(&self) -> Totals {
        let registry = self.lock();
        let clients = registry.tandem.len() + registry.others.len();
        let mut totals = Totals { clients, ..Totals::default() };
        for client in &registry.tandem {
            let stats = client.stats();
            totals.sent += stats.ops_sent;
            totals.errors += stats.errors;
            totals.reconnects += stats.reconnects;
        }
        for counters in &registry.others {
            totals.sent += counters.sent.load(Ordering::Relaxed);
            totals.errors += counters.errors.load(Ordering::Relaxed);
        }
        totals
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    clients: usize,
    sent: u64,
    errors: u64,
    reconnects: u64,
}

/// One second of the run, as the timeline of the report keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// End of the second, in seconds since the run started.
    pub t: f64,
    /// `connect`, `warm-up`, `measure` or `settle`.
    pub phase: String,
    pub clients: usize,
    /// Ops written by the clients in this second (resubmissions included).
    pub sent: u64,
    /// Keystrokes acknowledged in this second (warm-up included).
    pub acked: u64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub remote_p50_ms: f64,
    pub remote_p99_ms: f64,
    /// Errors and reconnects so far.
    pub errors: u64,
    pub reconnects: u64,
}

/// What the monitor hands back at the end.
pub struct Observed {
    pub recorded: Recorded,
    pub timeline: Vec<Second>,
}

/// Where the monitor looks.
pub struct Monitor {
    pub t0: Instant,
    pub clients: Clients,
    pub processes: procstat::Latest,
    /// Print a progress line every second.
    pub progress: bool,
    /// Clients of a document, the author included: each commit expects one delivery per other one.
    pub clients_per_doc: usize,
}

/// Runs until every sender of `records` is gone.
pub async fn run(
    mut records: mpsc::Receiver<Record>,
    mut begin: oneshot::Receiver<Schedule>,
    monitor: Monitor,
) -> Observed {
    let mut recorder: Option<Recorder> = None;
    let mut timeline = Timeline::default();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            // Biased: the schedule is sent before the first record, and must be taken first.
            biased;
            schedule = &mut begin, if recorder.is_none() => match schedule {
                Ok(schedule) => recorder = Some(Recorder::new(schedule, monitor.clients_per_doc)),
                // The preset ended without starting its load; keep the loop for the records' end.
                Err(_) => recorder = Some(Recorder::new(Schedule::new(monitor.t0, Duration::ZERO, Duration::ZERO), 1)),
            },
            record = records.recv() => match (record, recorder.as_mut()) {
                (Some(record), Some(recorder)) => recorder.on_record(record),
                (Some(_), None) => debug_assert!(false, "a record before the schedule"),
                (None, _) => break,
            },
            _ = ticks.tick() => timeline.take(recorder.as_mut(), &monitor),
        }
    }
    // The last, partial second: a run shorter than a second still has one.
    timeline.take(recorder.as_mut(), &monitor);
    let recorder = recorder
        .unwrap_or_else(|| Recorder::new(Schedule::new(monitor.t0, Duration::ZERO, Duration::ZERO), 1));
    Observed { recorded: recorder.finish(), timeline: timeline.seconds }
}

#[derive(Default)]
struct Timeline {
    seconds: Vec<Second>,
    /// Ops sent by the clients up to the last second.
    sent: u64,
}

impl Timeline {
    /// Takes the figures since the last call into the timeline, and prints them if asked to.
    fn take(&mut self, recorder: Option<&mut Recorder>, monitor: &Monitor) {
        let now = Instant::now();
        let (tick, phase) = match recorder {
            Some(recorder) => {
                recorder.expire(now, false);
                (recorder.take_tick(), recorder.schedule().phase(now))
            }
            None => (Tick::default(), "connect"),
        };
        let totals = monitor.clients.totals();
        let second = Second {
            t: now.saturating_duration_since(monitor.t0).as_secs_f64(),
            phase: phase.to_owned(),
            clients: totals.clients,
            sent: totals.sent.saturating_sub(self.sent),
            acked: tick.acked,
            ack_p50_ms: tick.ack_p50_ms,
            ack_p99_ms: tick.ack_p99_ms,
            remote_p50_ms: tick.remote_p50_ms,
            remote_p99_ms: tick.remote_p99_ms,
            errors: totals.errors,
            reconnects: totals.reconnects,
        };
        self.sent = totals.sent;
        if monitor.progress {
            eprintln!("{}", progress_line(&second, &tick, &monitor.processes));
        }
        self.seconds.push(second);
    }
}

fn progress_line(s: &Second, tick: &Tick, processes: &procstat::Latest) -> String {
    let mut line = format!(
        "[{:>5.0}s {:<7}] clients {:>5}  sent {:>6} ops/s  acked {:>6} keys/s  ack p50 {:>6.2} p99 {:>7.2} ms \
         (p99 so far {:.2})  remote p99 {:>7.2} ms  errors {}  reconnects {}",
        s.t, s.phase, s.clients, s.sent, s.acked, s.ack_p50_ms, s.ack_p99_ms, tick.ack_p99_so_far_ms, s.remote_p99_ms,
        s.errors, s.reconnects
    );
    let processes = processes.lock().unwrap_or_else(|e| e.into_inner());
    for (name, sample) in processes.iter() {
        if let Some(sample) = sample {
            line.push_str(&format!("  {name} {:.0}% {:.0} MiB", sample.cpu_pct, sample.rss_mib));
        }
    }
    line
}
