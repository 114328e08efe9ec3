//! Applying one fault to the cluster and undoing it as an orchestrator would (restart what was
//! killed, wake what was frozen, heal the network), then waiting for the affected documents to
//! commit again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tandem_client::Client;
use tandem_protocol::DocId;

use super::recovery::{committed_versions, wait_recovered, AckLog, Affected};
use super::schedule::{Fault, FaultKind, Target};
use crate::cluster::Cluster;
use crate::proxy::ProxyMode;

/// How long after a fault's hold its documents may take to commit again before it counts as not
/// recovered (and the next fault comes anyway).
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(90);

/// One fault as it was applied.
#[derive(Debug, Clone)]
pub struct Injected {
    pub fault: Fault,
    /// The process it hit, resolved (e.g. which sequencer was the busy owner).
    pub target: String,
    pub started: Instant,
    /// What had to commit again.
    pub affected: Affected,
    /// From the fault until everything affected committed again; `None`: not within the limit.
    pub recovery: Option<Duration>,
    /// Acks taken from the fault until its recovery (or until the limit).
    pub acks_meanwhile: u64,
    /// The versions the documents had committed when the fault hit (empty: Postgres did not say).
    pub baseline: Vec<u64>,
    /// Services found exited on their own after this fault (and restarted).
    pub unplanned_restarts: Vec<String>,
}

/// Applies faults to one cluster; keeps what it needs to know which sequencer owns what.
pub struct FaultDriver<'a> {
    cluster: &'a mut Cluster,
    docs: Vec<DocId>,
    /// The document typed into the most: its partition is "the busy partition".
    busy_doc: usize,
    /// Where each sequencer's log of its current run begins.
    log_starts: Vec<u64>,
}

impl<'a> FaultDriver<'a> {
    pub fn new(cluster: &'a mut Cluster, docs: Vec<DocId>, busy_doc: usize) -> Self {
        let log_starts = vec![0; cluster.sequencer_count()];
        Self { cluster, docs, busy_doc, log_starts }
    }

    /// The partitions each running sequencer owns now, from the claims and revocations in its log
    /// since it last started; a partition two of them claimed goes to the latest claim.
    pub fn owners(&mut self) -> BTreeMap<u32, usize> {
        let mut latest: BTreeMap<u32, (String, usize)> = BTreeMap::new();
        for i in 0..self.cluster.sequencer_count() {
            if !self.cluster.sequencer(i).is_running() {
                continue;
            }
            let log = self.cluster.sequencer(i).log();
            let start = usize::try_from(self.log_starts[i]).unwrap_or(0);
            let Some(run) = log.get(start..) else { continue };
            for (partition, at) in owned_partitions(run) {
                if latest.get(&partition).is_none_or(|(when, _)| *when < at) {
                    latest.insert(partition, (at, i));
                }
            }
        }
        latest.into_iter().map(|(p, (_, i))| (p, i)).collect()
    }

    /// The documents whose partitions sequencer `i` owns; every document when it owns none (or
    /// nothing is known), so the fault is still measured against something.
    fn docs_of(&mut self, i: usize) -> Vec<usize> {
        let owners = self.owners();
        let partitions = self.cluster.partitions();
        let docs: Vec<usize> = (0..self.docs.len())
            .filter(|&d| owners.get(&tandem_bus::partition_of(&self.docs[d], partitions)) == Some(&i))
            .collect();
        if docs.is_empty() {
            (0..self.docs.len()).collect()
        } else {
            docs
        }
    }

    fn busy_owner(&mut self) -> Option<usize> {
        let partition = tandem_bus::partition_of(&self.docs[self.busy_doc], self.cluster.partitions());
        self.owners().get(&partition).copied()
    }

    fn resolve_sequencer(&mut self, target: Target, fallback: usize) -> (usize, String) {
        match target {
            Target::Sequencer(i) => (i % self.cluster.sequencer_count(), format!("sequencer {i}")),
            _ => match self.busy_owner() {
                Some(i) => (i, format!("sequencer {i} (busy owner)")),
                None => {
                    let i = fallback % self.cluster.sequencer_count();
                    (i, format!("sequencer {i} (busy owner unknown)"))
                }
            },
        }
    }

    /// Applies `fault`, undoes it after its hold, waits for recovery (bounded), restarts any
    /// service that died meanwhile. `stop` (Ctrl-C) shortens the waits; the undo always happens.
    pub fn apply(
        &mut self,
        fault: &Fault,
        acks: &AckLog,
        clients: &[Client],
        stop: &dyn Fn() -> bool,
    ) -> Injected {
        let all: Vec<usize> = (0..self.docs.len()).collect();
        let hold = fault.hold;
        let database = self.cluster.database().url();
        // Asked right after the fault hit (before, for a Postgres fault): recovery is an ack above it.
        let mut baseline = Vec::new();
        let docs = self.docs.clone();
        let versions_now = |baseline: &mut Vec<u64>| {
            *baseline = committed_versions(&database, &docs).unwrap_or_default();
        };
        let (target, affected, started) = match fault.kind {
            FaultKind::SequencerKill | FaultKind::SequencerFreeze => {
                let (i, target) = self.resolve_sequencer(fault.target, fault.number);
                let affected = Affected::Docs(self.docs_of(i));
                let started = Instant::now();
                if fault.kind == FaultKind::SequencerKill {
                    self.cluster.sequencer(i).kill();
                    versions_now(&mut baseline);
                    sleep(hold, stop);
                    self.restart_sequencer(i);
                } else {
                    self.cluster.sequencer(i).freeze();
                    versions_now(&mut baseline);
                    sleep(hold, stop);
                    self.cluster.sequencer(i).thaw();
                }
                (target, affected, started)
            }
            FaultKind::GatewayKill => {
                let g = match fault.target {
                    Target::Gateway(g) => g % self.cluster.gateway_count(),
                    _ => 0,
                };
                let url = self.cluster.gateway_ws_url(g);
                let on_it: Vec<usize> =
                    (0..clients.len()).filter(|&c| clients[c].stats().current_url == url).collect();
                let affected = if on_it.is_empty() {
                    Affected::Docs(all)
                } else {
                    Affected::Clients { clients: on_it, docs: self.docs.len() }
                };
                let started = Instant::now();
                self.cluster.gateway(g).kill();
                versions_now(&mut baseline);
                sleep(hold, stop);
                self.cluster.gateway(g).restart();
                (format!("gateway {g}"), affected, started)
            }
            FaultKind::BrokerKill => {
                let started = Instant::now();
                self.cluster.broker().kill();
                versions_now(&mut baseline);
                sleep(hold, stop);
                self.cluster.broker().restart();
                ("broker".to_owned(), Affected::Docs(all), started)
            }
            FaultKind::PostgresFastRestart | FaultKind::PostgresImmediateRestart => {
                versions_now(&mut baseline);
                let started = Instant::now();
                if fault.kind == FaultKind::PostgresFastRestart {
                    self.cluster.postgres().stop_fast();
                } else {
                    self.cluster.postgres().crash();
                }
                sleep(hold, stop);
                self.cluster.postgres().start_again();
                ("postgres".to_owned(), Affected::Docs(all), started)
            }
            FaultKind::NetworkDrop | FaultKind::NetworkStall => {
                let Some((i, _)) = self.cluster.postgres_proxy() else {
                    panic!("a network fault was scheduled without the proxy");
                };
                let affected = Affected::Docs(self.docs_of(i));
                let mode =
                    if fault.kind == FaultKind::NetworkDrop { ProxyMode::Drop } else { ProxyMode::Stall };
                let started = Instant::now();
                self.proxy_mode(mode);
                versions_now(&mut baseline);
                sleep(hold, stop);
                self.proxy_mode(ProxyMode::Pass);
                (format!("sequencer {i} ↔ postgres"), affected, started)
            }
        };
        let recovery = wait_recovered(acks, &affected, &baseline, started, hold + RECOVERY_LIMIT, stop);
        let until = recovery.map_or_else(Instant::now, |r| started + r);
        let acks_meanwhile = acks.acks_between(started, until);
        let unplanned_restarts = self.restart_exited();
        Injected {
            fault: fault.clone(),
            target,
            started,
            affected,
            recovery,
            acks_meanwhile,
            baseline,
            unplanned_restarts,
        }
    }

    fn proxy_mode(&self, mode: ProxyMode) {
        if let Some((_, proxy)) = self.cluster.postgres_proxy() {
            proxy.set_mode(mode);
        }
    }

    fn restart_sequencer(&mut self, i: usize) {
        self.log_starts[i] = self.cluster.sequencer(i).log_len();
        self.cluster.sequencer(i).restart();
    }

    /// Restarts every sequencer and gateway that is not running (one that exited on its own, as a
    /// fenced or failed service may): what an orchestrator does. Names what it restarted.
    pub fn restart_exited(&mut self) -> Vec<String> {
        let mut restarted = Vec::new();
        for i in 0..self.cluster.sequencer_count() {
            if !self.cluster.sequencer(i).is_running() {
                self.restart_sequencer(i);
                restarted.push(format!("sequencer {i}"));
            }
        }
        for g in 0..self.cluster.gateway_count() {
            if !self.cluster.gateway(g).is_running() {
                self.cluster.gateway(g).restart();
                restarted.push(format!("gateway {g}"));
            }
        }
        restarted
    }
}

/// The partitions a sequencer's log says it owns at its end, with the time of each claim: a
/// `partition claimed` line adds one, `partition revoked` / `released` / `lost` / `partition loop
/// ended` / `failed` remove it.
pub fn owned_partitions(log: &str) -> BTreeMap<u32, String> {
    let mut owned = BTreeMap::new();
    for line in log.lines() {
        let Some(partition) = field(line, "partition=") else { continue };
        if line.contains("partition claimed") {
            let at = line.split_whitespace().next().unwrap_or_default().to_owned();
            owned.insert(partition, at);
        } else if ["partition revoked", "partition released", "partition lost", "partition loop"]
            .iter()
            .any(|m| line.contains(m))
        {
            owned.remove(&partition);
        }
    }
    owned
}

/// The number after the last `name` in `line`.
fn field(line: &str, name: &str) -> Option<u32> {
    let (_, rest) = line.rsplit_once(name)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Sleeps `length`, in slices, ending early once `stop` says so.
pub fn sleep(length: Duration, stop: &dyn Fn() -> bool) {
    let until = Instant::now() + length;
    while Instant::now() < until && !stop() {
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_follows_claims_and_revocations() {
        let log = "\
2026-01-01T00:00:01.000000Z  INFO tandem_sequencer::partition: partition claimed partition=1 epoch=1 next_offset=None
2026-01-01T00:00:01.100000Z  INFO tandem_sequencer::partition: partition claimed partition=4 epoch=1 next_offset=None
2026-01-01T00:00:02.000000Z  INFO tandem_sequencer: partition revoked partition=1
2026-01-01T00:00:03.000000Z  WARN tandem_sequencer: partition lost partition=4 error=partition 4 was taken over by another owner
2026-01-01T00:00:04.000000Z  INFO tandem_sequencer::partition: partition claimed partition=2 epoch=3 next_offset=Some(10)
2026-01-01T00:00:04.500000Z  INFO tandem_sequencer::batch: committed 3 events
";
        let owned = owned_partitions(log);
        assert_eq!(owned.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(owned[&2], "2026-01-01T00:00:04.000000Z");
    }
}
