//! Recovery measured with the clients' acks: a fault is over once every document it affected (or,
//! for a gateway, every document of every client that was connected to it) has had an op
//! acknowledged after the fault began, at a version above the one the document had committed when
//! the fault hit (so an ack still on its way for an earlier commit does not count as recovery). The
//! acks in between are the ops acknowledged meanwhile.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One acknowledged op, as a client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub at: Instant,
    /// Index of the client in the load.
    pub client: usize,
    pub seq: u64,
    pub version: u64,
}

/// Every ack of the run, per document (index into the load's documents); shared between the
/// load's observers, which append, and the fault driver, which reads.
#[derive(Debug)]
pub struct AckLog {
    docs: Mutex<Vec<Vec<Ack>>>,
}

/// How far back of a fault's start the scans look: acks of different clients are appended by
/// different tasks, so they are ordered only roughly.
const DISORDER: Duration = Duration::from_secs(5);

/// What a fault affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affected {
    /// These documents (indexes) must commit again.
    Docs(Vec<usize>),
    /// Each of these clients must have an op of each document acknowledged again.
    Clients { clients: Vec<usize>, docs: usize },
}

impl Affected {
    /// How many (client, doc) or doc units must see an ack.
    pub fn units(&self) -> usize {
        match self {
            Affected::Docs(docs) => docs.len(),
            Affected::Clients { clients, docs } => clients.len() * docs,
        }
    }
}

impl AckLog {
    pub fn new(docs: usize) -> Self {
        Self { docs: Mutex::new(vec![Vec::new(); docs]) }
    }

    pub fn push(&self, doc: usize, ack: Ack) {
        self.docs.lock().expect("ack log")[doc].push(ack);
    }

    /// Every ack, per document.
    pub fn snapshot(&self) -> Vec<Vec<Ack>> {
        self.docs.lock().expect("ack log").clone()
    }

    pub fn total(&self) -> usize {
        self.docs.lock().expect("ack log").iter().map(Vec::len).sum()
    }

    /// When every unit of `affected` had an ack after `since` of a version above `baseline[doc]`
    /// (0 where unknown), if all have.
    pub fn recovered_at(&self, affected: &Affected, baseline: &[u64], since: Instant) -> Option<Instant> {
        let docs = self.docs.lock().expect("ack log");
        let first_after = |doc: usize, client: Option<usize>| -> Option<Instant> {
            let above = baseline.get(doc).copied().unwrap_or(0);
            recent(&docs[doc], since)
                .filter(|a| a.at > since && a.version > above && client.is_none_or(|c| a.client == c))
                .map(|a| a.at)
                .min()
        };
        let mut last = since;
        match affected {
            Affected::Docs(list) => {
                for &doc in list {
                    last = last.max(first_after(doc, None)?);
                }
            }
            Affected::Clients { clients, docs: n } => {
                for &client in clients {
                    for doc in 0..*n {
                        last = last.max(first_after(doc, Some(client))?);
                    }
                }
            }
        }
        Some(last)
    }

    /// Acks taken in `from..=to`, over every document.
    pub fn acks_between(&self, from: Instant, to: Instant) -> u64 {
        let docs = self.docs.lock().expect("ack log");
        docs.iter().map(|acks| recent(acks, from).filter(|a| a.at >= from && a.at <= to).count() as u64).sum()
    }
}

/// The acks of one document from a little before `since` on (scanning back from the newest).
fn recent(acks: &[Ack], since: Instant) -> impl Iterator<Item = &Ack> {
    let horizon = since.checked_sub(DISORDER).unwrap_or(since);
    let start = acks.iter().rposition(|a| a.at < horizon).map_or(0, |i| i + 1);
    acks[start..].iter()
}

/// Waits (polling, at most `limit` after `since`) until `affected` recovered: the time from
/// `since` to its recovery, `None` on timeout. `stop` ends the wait early (Ctrl-C).
pub fn wait_recovered(
    log: &AckLog,
    affected: &Affected,
    baseline: &[u64],
    since: Instant,
    limit: Duration,
    stop: &dyn Fn() -> bool,
) -> Option<Duration> {
    loop {
        if let Some(at) = log.recovered_at(affected, baseline, since) {
            return Some(at - since);
        }
        if since.elapsed() >= limit || stop() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The last committed version of each of `docs` (0 for none), asked of Postgres at `database_url`
/// with psql; `None` when it does not answer within a few seconds.
pub fn committed_versions(database_url: &str, docs: &[tandem_protocol::DocId]) -> Option<Vec<u64>> {
    let sql = "SET statement_timeout = 5000; SELECT doc, max(version) FROM events GROUP BY doc";
    let output = std::process::Command::new("psql")
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&output.stdout);
    let max: std::collections::HashMap<&str, u64> = text
        .lines()
        .filter_map(|r| r.split_once('|'))
        .filter_map(|(doc, v)| Some((doc, v.parse().ok()?)))
        .collect();
    Some(docs.iter().map(|d| max.get(d.as_str()).copied().unwrap_or(0)).collect())
}

/// p50, p99 and max of `samples` (nearest rank); `None` when empty.
pub fn percentiles(samples: &[Duration]) -> Option<(Duration, Duration, Duration)> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = |p: f64| {
        let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i]
    };
    Some((rank(0.50), rank(0.99), *sorted.last().expect("not empty")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(at: Instant, client: usize, version: u64) -> Ack {
        Ack { at, client, seq: version, version }
    }

    #[test]
    fn recovery_is_the_last_first_ack_after_the_fault() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let log = AckLog::new(2);
        log.push(0, ack(ms(0), 0, 1));
        log.push(1, ack(ms(5), 1, 1));
        let fault = ms(10);
        assert_eq!(log.recovered_at(&Affected::Docs(vec![0, 1]), &[], fault), None);
        log.push(0, ack(ms(30), 0, 2));
        assert_eq!(log.recovered_at(&Affected::Docs(vec![0]), &[], fault), Some(ms(30)));
        assert_eq!(log.recovered_at(&Affected::Docs(vec![0, 1]), &[], fault), None);
        log.push(1, ack(ms(80), 0, 2));
        assert_eq!(log.recovered_at(&Affected::Docs(vec![0, 1]), &[], fault), Some(ms(80)));
        // Per client: client 1 has not seen an ack on doc 0 or 1 since the fault.
        let clients = Affected::Clients { clients: vec![1], docs: 2 };
        assert_eq!(log.recovered_at(&clients, &[], fault), None);
        log.push(0, ack(ms(90), 1, 3));
        log.push(1, ack(ms(85), 1, 3));
        assert_eq!(log.recovered_at(&clients, &[], fault), Some(ms(90)));
        assert_eq!(log.acks_between(fault, ms(85)), 3);
        // An ack of a version committed before the fault is not a recovery.
        assert_eq!(log.recovered_at(&Affected::Docs(vec![0]), &[2, 0], fault), Some(ms(90)));
        assert_eq!(log.recovered_at(&Affected::Docs(vec![0]), &[3, 0], fault), None);
        assert_eq!(log.total(), 6);
        assert_eq!(clients.units(), 2);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let (p50, p99, max) = percentiles(&samples).unwrap();
        assert_eq!(
            (p50, p99, max),
            (Duration::from_millis(50), Duration::from_millis(99), Duration::from_millis(100))
        );
        assert_eq!(percentiles(&[]), None);
    }
}
