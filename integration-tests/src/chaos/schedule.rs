//! The fault schedule: a pure function of the seed and the cluster's shape, so a seed replays the
//! same faults in the same order with the same lengths and gaps. Which process "the owner of the busy
//! partition" is gets decided when the fault is applied (it depends on the cluster's state), the
//! rest is fixed here.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9 of a sequencer, restarted after the hold.
    SequencerKill,
    /// SIGSTOP of a sequencer for the hold, then SIGCONT.
    SequencerFreeze,
    /// kill -9 of a gateway, restarted after the hold.
    GatewayKill,
    /// kill -9 of the Kafka broker, restarted on its data after the hold.
    BrokerKill,
    /// Postgres fast shutdown (SIGINT), started again after the hold.
    PostgresFastRestart,
    /// Postgres immediate shutdown (SIGQUIT, recovery from the WAL at start), started again after the hold.
    PostgresImmediateRestart,
    /// Every connection between one sequencer and Postgres cut, new ones refused, for the hold.
    NetworkDrop,
    /// Every byte between one sequencer and Postgres held back for the hold.
    NetworkStall,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::SequencerKill,
        FaultKind::SequencerFreeze,
        FaultKind::GatewayKill,
        FaultKind::BrokerKill,
        FaultKind::PostgresFastRestart,
        FaultKind::PostgresImmediateRestart,
        FaultKind::NetworkDrop,
        FaultKind::NetworkStall,
    ];

    /// The short name used in the log, the schedule file and the report.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::SequencerKill => "sequencer-kill",
            FaultKind::SequencerFreeze => "sequencer-freeze",
            FaultKind::GatewayKill => "gateway-kill",
            FaultKind::BrokerKill => "broker-kill",
            FaultKind::PostgresFastRestart => "postgres-fast-restart",
            FaultKind::PostgresImmediateRestart => "postgres-immediate-restart",
            FaultKind::NetworkDrop => "network-drop",
            FaultKind::NetworkStall => "network-stall",
        }
    }

    /// What it does, for the report.
    pub fn description(self) -> &'static str {
        match self {
            FaultKind::SequencerKill => {
                "kill -9 of a sequencer (the busy partition's owner most often), restarted"
            }
            FaultKind::SequencerFreeze => {
                "SIGSTOP of a sequencer (the busy partition's owner most often), SIGCONT"
            }
            FaultKind::GatewayKill => "kill -9 of a gateway, restarted; its clients fail over",
            FaultKind::BrokerKill => "kill -9 of the Kafka broker, restarted on its data",
            FaultKind::PostgresFastRestart => "Postgres fast shutdown (SIGINT), started again",
            FaultKind::PostgresImmediateRestart => {
                "Postgres immediate shutdown (SIGQUIT), WAL recovery at start"
            }
            FaultKind::NetworkDrop => "connections sequencer ↔ Postgres cut and refused (loopback proxy)",
            FaultKind::NetworkStall => "connections sequencer ↔ Postgres stalled (loopback proxy)",
        }
    }

    /// Relative frequency in a schedule.
    fn weight(self) -> u32 {
        match self {
            FaultKind::SequencerKill => 24,
            FaultKind::SequencerFreeze => 20,
            FaultKind::GatewayKill => 14,
            FaultKind::BrokerKill => 4,
            FaultKind::PostgresFastRestart => 8,
            FaultKind::PostgresImmediateRestart => 8,
            FaultKind::NetworkDrop => 11,
            FaultKind::NetworkStall => 11,
        }
    }

    /// Whether it needs the loopback proxy in front of Postgres.
    pub fn is_network(self) -> bool {
        matches!(self, FaultKind::NetworkDrop | FaultKind::NetworkStall)
    }

    /// The range of the hold (downtime, freeze or network-fault length) in milliseconds.
    fn hold_ms(self) -> (u64, u64) {
        match self {
            FaultKind::SequencerKill => (100, 3_000),
            FaultKind::SequencerFreeze => (300, 6_000),
            FaultKind::GatewayKill => (100, 3_000),
            FaultKind::BrokerKill => (200, 4_000),
            FaultKind::PostgresFastRestart => (0, 2_000),
            FaultKind::PostgresImmediateRestart => (0, 2_000),
            FaultKind::NetworkDrop => (200, 5_000),
            FaultKind::NetworkStall => (300, 8_000),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which process a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The sequencer that owns the partition of the busiest document when the fault is applied.
    BusyOwner,
    Sequencer(usize),
    Gateway(usize),
    Broker,
    Postgres,
    /// The link between the proxied sequencer and Postgres.
    PostgresLink,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::BusyOwner => f.write_str("busy owner"),
            Target::Sequencer(i) => write!(f, "sequencer {i}"),
            Target::Gateway(i) => write!(f, "gateway {i}"),
            Target::Broker => f.write_str("broker"),
            Target::Postgres => f.write_str("postgres"),
            Target::PostgresLink => f.write_str("proxied sequencer ↔ postgres"),
        }
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// 1-based position in the schedule.
    pub number: usize,
    pub kind: FaultKind,
    pub target: Target,
    /// How long the process stays down or frozen, or the network fault lasts.
    pub hold: Duration,
    /// The pause after the fault's recovery (or its timeout) before the next one.
    pub gap: Duration,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} {} hold {:.2}s gap {:.2}s",
            self.number,
            self.kind,
            self.target,
            self.hold.as_secs_f64(),
            self.gap.as_secs_f64()
        )
    }
}

/// The cluster a schedule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    pub faults: usize,
    pub sequencers: usize,
    pub gateways: usize,
    /// Network faults can be injected (a proxy sits between one sequencer and Postgres).
    pub network: bool,
}

/// The faults of a run: the same `seed` and `config` give the same list.
pub fn schedule(seed: u64, config: &ScheduleConfig) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds: Vec<FaultKind> =
        FaultKind::ALL.into_iter().filter(|k| config.network || !k.is_network()).collect();
    let total: u32 = kinds.iter().map(|k| k.weight()).sum();
    let mut drawn: Vec<FaultKind> = (0..config.faults)
        .map(|_| {
            let mut pick = rng.gen_range(0..total);
            for &kind in &kinds {
                if pick < kind.weight() {
                    return kind;
                }
                pick -= kind.weight();
            }
            unreachable!("the weights add up to the total")
        })
        .collect();
    // Every kind at least once when there is room: a short run still tries them all.
    if drawn.len() >= kinds.len() {
        for &kind in &kinds {
            if drawn.contains(&kind) {
                continue;
            }
            // Replace one draw of the most frequent kind, at a seeded position.
            let most = *kinds
                .iter()
                .max_by_key(|k| (drawn.iter().filter(|d| d == k).count(), std::cmp::Reverse(**k)))
                .expect("kinds");
            let positions: Vec<usize> = (0..drawn.len()).filter(|&i| drawn[i] == most).collect();
            drawn[positions[rng.gen_range(0..positions.len())]] = kind;
        }
    }
    drawn
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let target = match kind {
                FaultKind::SequencerKill | FaultKind::SequencerFreeze => {
                    if rng.gen_bool(0.6) || config.sequencers == 0 {
                        Target::BusyOwner
                    } else {
                        Target::Sequencer(rng.gen_range(0..config.sequencers))
                    }
                }
                FaultKind::GatewayKill => Target::Gateway(rng.gen_range(0..config.gateways.max(1))),
                FaultKind::BrokerKill => Target::Broker,
                FaultKind::PostgresFastRestart | FaultKind::PostgresImmediateRestart => Target::Postgres,
                FaultKind::NetworkDrop | FaultKind::NetworkStall => Target::PostgresLink,
            };
            let (low, high) = kind.hold_ms();
            let hold = Duration::from_millis(rng.gen_range(low..=high));
            let gap = Duration::from_millis(rng.gen_range(200..=1_500));
            Fault { number: i + 1, kind, target, hold, gap }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(faults: usize, network: bool) -> ScheduleConfig {
        ScheduleConfig { faults, sequencers: 3, gateways: 2, network }
    }

    fn counts(faults: &[Fault]) -> BTreeMap<FaultKind, usize> {
        let mut counts = BTreeMap::new();
        for fault in faults {
            *counts.entry(fault.kind).or_default() += 1;
        }
        counts
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        for seed in [0, 1, 42, u64::MAX] {
            assert_eq!(schedule(seed, &config(500, true)), schedule(seed, &config(500, true)));
        }
    }

    #[test]
    fn other_seeds_give_other_schedules() {
        assert_ne!(schedule(1, &config(100, true)), schedule(2, &config(100, true)));
    }

    #[test]
    fn a_schedule_has_the_faults_asked_for_numbered_in_order() {
        let faults = schedule(7, &config(1000, true));
        assert_eq!(faults.len(), 1000);
        assert!(faults.iter().enumerate().all(|(i, f)| f.number == i + 1));
        assert!(schedule(7, &config(0, true)).is_empty());
    }

    #[test]
    fn a_short_schedule_still_has_every_kind() {
        for seed in 0..50 {
            let faults = schedule(seed, &config(10, true));
            assert_eq!(counts(&faults).len(), FaultKind::ALL.len(), "seed {seed}: {faults:?}");
            let without_network = schedule(seed, &config(10, false));
            assert_eq!(counts(&without_network).len(), FaultKind::ALL.len() - 2, "seed {seed}");
        }
    }

    #[test]
    fn without_the_proxy_there_is_no_network_fault() {
        let faults = schedule(3, &config(2000, false));
        assert!(faults.iter().all(|f| !f.kind.is_network() && f.target != Target::PostgresLink));
    }

    #[test]
    fn sequencers_are_hit_most_often_and_mostly_the_busy_owner() {
        let faults = schedule(11, &config(2000, true));
        let counts = counts(&faults);
        let most = counts.iter().max_by_key(|(_, n)| **n).map(|(k, _)| *k);
        assert_eq!(most, Some(FaultKind::SequencerKill), "{counts:?}");
        let sequencer_faults: Vec<&Fault> = faults
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::SequencerKill | FaultKind::SequencerFreeze))
            .collect();
        let busy = sequencer_faults.iter().filter(|f| f.target == Target::BusyOwner).count();
        assert!(busy * 2 > sequencer_faults.len(), "{busy} of {}", sequencer_faults.len());
        assert!(sequencer_faults.iter().all(|f| match f.target {
            Target::BusyOwner => true,
            Target::Sequencer(i) => i < 3,
            _ => false,
        }));
    }

    #[test]
    fn holds_and_gaps_stay_in_their_bounds() {
        for fault in schedule(5, &config(2000, true)) {
            let (low, high) = fault.kind.hold_ms();
            let hold = fault.hold.as_millis() as u64;
            assert!((low..=high).contains(&hold), "{fault}");
            assert!((200..=1_500).contains(&(fault.gap.as_millis() as u64)), "{fault}");
            if let Target::Gateway(i) = fault.target {
                assert!(i < 2, "{fault}");
            }
        }
    }
}
