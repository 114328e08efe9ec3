//! The recorder: takes what the simulated clients report, keeps the latency histograms, and matches
//! each committed op with its deliveries at the other clients of the document. Pure: the
//! [monitor](crate::monitor) task owns it and feeds it.
//!
//! The matching is keyed by (document, committed version): the author learns the version from its
//! ack, the receivers from the op itself (which arrives transformed, so its content cannot be used).
//! Either side may be reported first: two clients on two gateways do not hear in a fixed order.
//! Everything kept for matching is bounded in time ([`MATCH_WINDOW`]) and in size
//! ([`MAX_UNMATCHED`]); what falls out is counted, not silently forgotten.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tandem_client::ClientId;

use crate::Schedule;

/// Capacity of the channel from the clients' tasks to the recorder; a record that does not fit is
/// dropped and counted by its sender.
pub const RECORD_CAPACITY: usize = 65_536;
/// How long a committed op waits for its deliveries (and a delivery for its commit) before it is
/// counted as missing.
pub const MATCH_WINDOW: Duration = Duration::from_secs(60);
/// Most commits and early deliveries kept waiting for their match.
pub const MAX_UNMATCHED: usize = 1_000_000;
/// Largest latency a histogram holds (longer ones are recorded as this), in microseconds.
const MAX_MICROS: u64 = 3_600_000_000;

/// What a simulated client reports.
#[derive(Debug)]
pub enum Record {
    /// The author's op on `doc` was acknowledged as `version`; `submits` are the instants of the
    /// keystrokes it carried.
    Commit { doc: u32, version: u64, author: ClientId, submits: Vec<Instant>, acked_at: Instant },
    /// Another client took `version` of `doc`, written by `author`, at `at`.
    Arrival { doc: u32, version: u64, author: ClientId, at: Instant },
}

/// Counters of the recorder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matching {
    /// Measured keystrokes whose ack was taken.
    pub acked: u64,
    /// Acknowledged ops that carried at least one measured keystroke.
    pub committed_ops: u64,
    /// Deliveries matched with their commit (measured or not).
    pub deliveries: u64,
    /// Deliveries expected but never reported within the window (e.g. a client that reloaded).
    pub deliveries_missing: u64,
    /// Deliveries whose commit was never reported within the window.
    pub deliveries_orphaned: u64,
    /// Deliveries that named another author than the ack of the same version: a server bug.
    pub author_mismatches: u64,
}

/// What one second of the run looked like, for the progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tick {
    pub acked: u64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub remote_p50_ms: f64,
    pub remote_p99_ms: f64,
    /// The ack p99 of the measuring window so far.
    pub ack_p99_so_far_ms: f64,
}

/// The histograms (microseconds) and counters at the end of a run.
#[derive(Debug)]
pub struct Recorded {
    pub ack: Histogram<u64>,
    pub remote: Histogram<u64>,
    pub matching: Matching,
}

struct Commit {
    author: ClientId,
    submits: Vec<Instant>,
    seen: u32,
    created: Instant,
}

/// The matching and the histograms, without I/O.
pub struct Recorder {
    /// Clients of a document other than the author: the deliveries each commit expects.
    receivers: u32,
    sinks: Sinks,
    commits: HashMap<(u32, u64), Commit>,
    early: HashMap<(u32, u64), Vec<(ClientId, Instant)>>,
    early_len: usize,
}

/// Where samples and counts go.
struct Sinks {
    schedule: Schedule,
    ack: Histogram<u64>,
    remote: Histogram<u64>,
    tick_ack: Histogram<u64>,
    tick_remote: Histogram<u64>,
    tick_acked: u64,
    matching: Matching,
}

impl Sinks {
    /// One delivery of `commit`: a remote-latency sample per keystroke it carried.
    fn deliver(&mut self, commit: &mut Commit, author: &ClientId, at: Instant) {
        commit.seen += 1;
        if *author != commit.author {
            self.matching.author_mismatches += 1;
            return;
        }
        self.matching.deliveries += 1;
        for &submit in &commit.submits {
            let latency = micros(submit, at);
            self.tick_remote.saturating_record(latency);
            if self.schedule.measures(submit) {
                self.remote.saturating_record(latency);
            }
        }
    }
}

/// A latency histogram in microseconds, from 1 µs to an hour (`MAX_MICROS`).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("the bounds are valid")
}

fn micros(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX).max(1)
}

fn ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(quantile) as f64 / 1000.0
    }
}

impl Recorder {
    /// `clients_per_doc` includes the author, so each commit expects `clients_per_doc - 1` deliveries.
    pub fn new(schedule: Schedule, clients_per_doc: usize) -> Self {
        Self {
            receivers: u32::try_from(clients_per_doc.saturating_sub(1)).unwrap_or(u32::MAX),
            sinks: Sinks {
                schedule,
                ack: histogram(),
                remote: histogram(),
                tick_ack: histogram(),
                tick_remote: histogram(),
                tick_acked: 0,
                matching: Matching::default(),
            },
            commits: HashMap::new(),
            early: HashMap::new(),
            early_len: 0,
        }
    }

    pub fn schedule(&self) -> Schedule {
        self.sinks.schedule
    }

    pub fn on_record(&mut self, record: Record) {
        match record {
            Record::Commit { doc, version, author, submits, acked_at } => {
                self.on_commit((doc, version), Commit { author, submits, seen: 0, created: acked_at })
            }
            Record::Arrival { doc, version, author, at } => self.on_arrival((doc, version), author, at),
        }
    }

    fn on_commit(&mut self, key: (u32, u64), mut commit: Commit) {
        let sinks = &mut self.sinks;
        let mut measured = false;
        for &submit in &commit.submits {
            let latency = micros(submit, commit.created);
            sinks.tick_ack.saturating_record(latency);
            sinks.tick_acked += 1;
            if sinks.schedule.measures(submit) {
                sinks.ack.saturating_record(latency);
                sinks.matching.acked += 1;
                measured = true;
            }
        }
        sinks.matching.committed_ops += u64::from(measured);
        if let Some(arrivals) = self.early.remove(&key) {
            self.early_len -= arrivals.len();
            for (author, at) in arrivals {
                sinks.deliver(&mut commit, &author, at);
            }
        }
        if commit.seen < self.receivers {
            if self.commits.len() >= MAX_UNMATCHED {
                sinks.matching.deliveries_missing += u64::from(self.receivers - commit.seen);
            } else {
                self.commits.insert(key, commit);
            }
        }
    }

    fn on_arrival(&mut self, key: (u32, u64), author: ClientId, at: Instant) {
        if let Some(commit) = self.commits.get_mut(&key) {
            self.sinks.deliver(commit, &author, at);
            if commit.seen >= self.receivers {
                self.commits.remove(&key);
            }
        } else if self.early_len >= MAX_UNMATCHED {
            self.sinks.matching.deliveries_orphaned += 1;
        } else {
            self.early.entry(key).or_default().push((author, at));
            self.early_len += 1;
        }
    }

    /// Counts and forgets what waited longer than [`MATCH_WINDOW`] (everything, with `all`).
    pub fn expire(&mut self, now: Instant, all: bool) {
        let fresh = |since: Instant| !all && now.saturating_duration_since(since) < MATCH_WINDOW;
        let receivers = self.receivers;
        let mut missing = 0;
        self.commits.retain(|_, c| {
            let keep = fresh(c.created);
            if !keep {
                missing += u64::from(receivers.saturating_sub(c.seen));
            }
            keep
        });
        self.early.retain(|_, arrivals| {
            arrivals.retain(|(_, at)| fresh(*at));
            !arrivals.is_empty()
        });
        let left: usize = self.early.values().map(Vec::len).sum();
        let matching = &mut self.sinks.matching;
        matching.deliveries_missing += missing;
        matching.deliveries_orphaned += (self.early_len - left) as u64;
        self.early_len = left;
    }

    /// The last second's figures; starts the next second.
    pub fn take_tick(&mut self) -> Tick {
        let sinks = &mut self.sinks;
        let tick = Tick {
            acked: sinks.tick_acked,
            ack_p50_ms: ms(&sinks.tick_ack, 0.5),
            ack_p99_ms: ms(&sinks.tick_ack, 0.99),
            remote_p50_ms: ms(&sinks.tick_remote, 0.5),
            remote_p99_ms: ms(&sinks.tick_remote, 0.99),
            ack_p99_so_far_ms: ms(&sinks.ack, 0.99),
        };
        sinks.tick_ack.reset();
        sinks.tick_remote.reset();
        sinks.tick_acked = 0;
        tick
    }

    /// Everything recorded; what still waits for a match is counted as missing or orphaned.
    pub fn finish(mut self) -> Recorded {
        self.expire(Instant::now(), true);
        Recorded { ack: self.sinks.ack, remote: self.sinks.remote, matching: self.sinks.matching }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::parse(s).unwrap()
    }

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    /// A recorder measuring from 1 s to 11 s after `base`, three clients per document.
    fn recorder(base: Instant) -> Recorder {
        Recorder::new(Schedule::new(base, Duration::from_secs(1), Duration::from_secs(10)), 3)
    }

    fn commit(doc: u32, version: u64, author: &str, submits: Vec<Instant>, acked_at: Instant) -> Record {
        Record::Commit { doc, version, author: id(author), submits, acked_at }
    }

    fn arrival(doc: u32, version: u64, author: &str, at: Instant) -> Record {
        Record::Arrival { doc, version, author: id(author), at }
    }

    #[test]
    fn deliveries_match_their_commit_in_either_order() {
        let base = Instant::now();
        let mut r = recorder(base);
        // Two keystrokes composed into one op, acked at 2010 ms.
        r.on_record(arrival(0, 7, "a", at(base, 2030))); // before the ack is known
        r.on_record(commit(0, 7, "a", vec![at(base, 2000), at(base, 2005)], at(base, 2010)));
        r.on_record(arrival(0, 7, "a", at(base, 2040)));
        // Same version of another document: a different op.
        r.on_record(commit(1, 7, "b", vec![at(base, 3000)], at(base, 3002)));
        let done = r.finish();
        assert_eq!(done.ack.len(), 3);
        assert_eq!(done.ack.max(), done.ack.highest_equivalent(10_000));
        assert_eq!(done.remote.len(), 4, "two keystrokes × two receivers");
        assert_eq!(done.remote.min(), done.remote.lowest_equivalent(25_000));
        let m = done.matching;
        assert_eq!((m.acked, m.committed_ops, m.deliveries), (3, 2, 2));
        assert_eq!((m.deliveries_missing, m.deliveries_orphaned, m.author_mismatches), (2, 0, 0));
    }

    #[test]
    fn warm_up_keystrokes_are_matched_but_not_recorded() {
        let base = Instant::now();
        let mut r = recorder(base);
        r.on_record(commit(0, 1, "a", vec![at(base, 500)], at(base, 1500)));
        r.on_record(arrival(0, 1, "a", at(base, 1600)));
        r.on_record(arrival(0, 1, "a", at(base, 1700)));
        assert_eq!(r.take_tick().acked, 1, "the progress line shows every phase");
        let done = r.finish();
        assert!(done.ack.is_empty() && done.remote.is_empty());
        assert_eq!((done.matching.acked, done.matching.deliveries), (0, 2));
        assert_eq!(done.matching.deliveries_missing, 0);
    }

    #[test]
    fn wrong_authors_and_unmatched_records_are_counted() {
        let base = Instant::now();
        let mut r = recorder(base);
        r.on_record(commit(0, 1, "a", vec![at(base, 2000)], at(base, 2001)));
        r.on_record(arrival(0, 1, "b", at(base, 2002)));
        r.on_record(arrival(0, 2, "a", at(base, 2003))); // never committed
        r.expire(at(base, 2003) + MATCH_WINDOW, false);
        let m = r.finish().matching;
        assert_eq!((m.author_mismatches, m.deliveries_missing, m.deliveries_orphaned), (1, 1, 1));
    }
}
