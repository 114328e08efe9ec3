//! Seeded randomized simulation: many clients (the real client state machine of `tandem-client`)
//! editing one document through the real document state machine, with random delivery order across
//! clients, delayed durability, dropped connections, reconnects with catch-up and resubmission.
//!
//! Checks convergence (every client's text equals the log's text), linear history (versions 1..N) and
//! exactly-once effect (each (client, seq) committed once; in insert-only runs, every typed character
//! appears exactly once).
//!
//! Prints its seed; replay a failure with `TANDEM_SEED=<seed> cargo test -p tandem-sequencer --test simulation`.

use std::collections::{HashSet, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ropey::Rope;
use tandem_client::{DocumentClient, OutgoingOp};
use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, Outcome, Rejection, SequencedRecord, Submission};
use tandem_protocol::{ClientId, DocId};
use tandem_sequencer::{Decision, DocumentState, Fetched, Limits};

/// The server side: the state machine plus a model of the store (the log of everything committed).
struct Server {
    state: DocumentState,
    limits: Limits,
    log: Vec<CommittedEvent>,
    rejections: Vec<Rejection>,
}

impl Server {
    fn submit(&mut self, sub: &Submission) -> SequencedRecord {
        let mut decision = self.state.decide(sub, &self.limits, Fetched::Nothing);
        // Older history comes a page at a time.
        while let Decision::NeedHistory { after, up_to } = decision {
            let history: Vec<_> =
                self.log.iter().filter(|e| e.version > after && e.version <= up_to).cloned().collect();
            decision = self.state.decide(sub, &self.limits, Fetched::History(&history));
        }
        let decision = match decision {
            Decision::NeedOutcome => {
                let outcome = self.outcome_of(sub);
                self.state.decide(sub, &self.limits, Fetched::Outcome(outcome.as_ref()))
            }
            d => d,
        };
        match decision {
            Decision::Commit(event) => {
                self.log.push(event.clone());
                SequencedRecord::Committed(event)
            }
            Decision::Duplicate { version } => SequencedRecord::Reacknowledged {
                doc: sub.doc.clone(),
                client: sub.client.clone(),
                seq: sub.seq,
                version,
            },
            Decision::Reject { rejection, new } => {
                if new {
                    self.rejections.push(rejection.clone());
                }
                SequencedRecord::Rejected(rejection)
            }
            d => panic!("unresolved decision {d:?}"),
        }
    }

    fn outcome_of(&self, sub: &Submission) -> Option<Outcome> {
        let committed = self.log.iter().find(|e| e.client == sub.client && e.seq == sub.seq);
        committed.map(|e| Outcome::Committed { version: e.version })
    }
}

/// What the gateway would deliver to one connection, in order.
#[derive(Debug)]
enum Delivery {
    Op { version: u64, op: Operation },
    Ack { seq: u64, version: u64 },
    Rejected(Rejection),
}

struct SimClient {
    id: ClientId,
    doc: DocumentClient,
    connected: bool,
    to_server: VecDeque<OutgoingOp>,
    from_server: VecDeque<Delivery>,
    /// The character this client types in insert-only runs, and how many it typed.
    letter: char,
    typed: usize,
}

struct Simulation {
    rng: StdRng,
    doc: DocId,
    server: Server,
    clients: Vec<SimClient>,
    insert_only: bool,
}

impl Simulation {
    fn new(seed: u64, clients: usize, insert_only: bool) -> Self {
        let doc = DocId::parse("sim").unwrap();
        let server = Server {
            state: DocumentState::new(doc.clone()),
            limits: Limits { history_window: 3, ..Limits::default() },
            log: Vec::new(),
            rejections: Vec::new(),
        };
        let clients = (0..clients)
            .map(|i| SimClient {
                id: ClientId::parse(&format!("client-{i}")).unwrap(),
                doc: DocumentClient::new(doc.clone(), 0, ""),
                connected: true,
                to_server: VecDeque::new(),
                from_server: VecDeque::new(),
                letter: char::from(b'A' + i as u8),
                typed: 0,
            })
            .collect();
        Self { rng: StdRng::seed_from_u64(seed), doc, server, clients, insert_only }
    }

    fn step(&mut self) {
        let i = self.rng.gen_range(0..self.clients.len());
        match self.rng.gen_range(0..100) {
            0..=29 => self.local_edit(i),
            30..=54 => self.deliver_to_server(i),
            55..=89 => self.deliver_to_client(i),
            90..=94 => {
                let v = self.server.state.version();
                self.server.state.mark_durable(v, &self.server.limits);
            }
            95..=97 => self.disconnect(i),
            _ => self.reconnect(i),
        }
    }

    fn local_edit(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let len = c.doc.len_chars();
        let pos = self.rng.gen_range(0..=len);
        let op = if self.insert_only || len == 0 || self.rng.gen_bool(0.6) {
            let text: String = if self.insert_only {
                c.typed += 1;
                c.letter.to_string()
            } else {
                ["x", "😀", "e\u{301}", "ab"][self.rng.gen_range(0..4)].to_owned()
            };
            Operation::from_patch(len, pos, 0, &text).unwrap()
        } else {
            let pos = pos.min(len - 1);
            let n = self.rng.gen_range(1..=(len - pos).min(3));
            Operation::from_patch(len, pos, n, "").unwrap()
        };
        if let Some(out) = c.doc.local_edit(op).unwrap() {
            if c.connected {
                c.to_server.push_back(out);
            }
        }
    }

    fn deliver_to_server(&mut self, i: usize) {
        let Some(out) = self.clients[i].to_server.pop_front() else { return };
        let sub = Submission {
            author: String::new(),
            delete_document: false,
            doc: self.doc.clone(),
            client: self.clients[i].id.clone(),
            seq: out.seq,
            base: out.base,
            op: out.op,
        };
        let record = self.server.submit(&sub);
        self.fan_out(record);
    }

    /// What the gateway does with a record: `ack` to the author, `op` to the others, errors to the
    /// author; a re-acknowledgement sends nothing to a connection that already has the version.
    fn fan_out(&mut self, record: SequencedRecord) {
        for c in self.clients.iter_mut().filter(|c| c.connected) {
            match &record {
                SequencedRecord::Committed(e) if e.client == c.id => {
                    c.from_server.push_back(Delivery::Ack { seq: e.seq, version: e.version })
                }
                SequencedRecord::Committed(e) => {
                    c.from_server.push_back(Delivery::Op { version: e.version, op: e.op.clone() })
                }
                SequencedRecord::Rejected(r) if r.client == c.id => {
                    c.from_server.push_back(Delivery::Rejected(r.clone()))
                }
                _ => {}
            }
        }
    }

    fn deliver_to_client(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let Some(delivery) = c.from_server.pop_front() else { return };
        match delivery {
            Delivery::Op { version, op } => {
                c.doc.on_remote_op(version, &op).unwrap();
            }
            Delivery::Ack { seq, version } => {
                if let Some(next) = c.doc.on_ack(seq, version).unwrap() {
                    c.to_server.push_back(next);
                }
            }
            Delivery::Rejected(r) => panic!("a correct client's op was rejected: {r:?}"),
        }
    }

    fn disconnect(&mut self, i: usize) {
        let c = &mut self.clients[i];
        c.connected = false;
        c.to_server.clear();
        c.from_server.clear();
    }

    /// Reconnect: open with `since`, catch up from the log (own ops as `ack`), then resubmit the
    /// in-flight op if it is still unacknowledged.
    fn reconnect(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.connected {
            return;
        }
        let have = c.doc.version();
        for event in self.server.log.iter().filter(|e| e.version > have) {
            if event.client == c.id {
                if let Some(next) = c.doc.on_ack(event.seq, event.version).unwrap() {
                    c.to_server.push_back(next);
                }
            } else {
                c.doc.on_remote_op(event.version, &event.op).unwrap();
            }
        }
        c.connected = true;
        if c.to_server.is_empty() {
            if let Some(out) = c.doc.resubmission() {
                c.to_server.push_back(out);
            }
        }
    }

    /// Reconnects everyone and delivers everything until nothing moves.
    fn settle(&mut self) {
        for i in 0..self.clients.len() {
            self.reconnect(i);
        }
        loop {
            let mut moved = false;
            for i in 0..self.clients.len() {
                if !self.clients[i].to_server.is_empty() {
                    self.deliver_to_server(i);
                    moved = true;
                }
                if !self.clients[i].from_server.is_empty() {
                    self.deliver_to_client(i);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn check(&self, seed: u64) {
        let mut text = Rope::new();
        let mut seen = HashSet::new();
        for (i, event) in self.server.log.iter().enumerate() {
            assert_eq!(event.version, i as u64 + 1, "seed {seed}: versions must be 1..N");
            assert!(seen.insert((event.client.clone(), event.seq)), "seed {seed}: {event:?} committed twice");
            event.op.apply_to_rope(&mut text).unwrap();
        }
        let text = text.to_string();
        assert_eq!(self.server.state.text().to_string(), text, "seed {seed}: state machine vs log");
        assert!(self.server.rejections.is_empty(), "seed {seed}: {:?}", self.server.rejections);
        for c in &self.clients {
            assert!(c.doc.is_synced(), "seed {seed}: {} still has unacknowledged edits", c.id);
            assert_eq!(c.doc.text(), text, "seed {seed}: {} diverged", c.id);
            if self.insert_only {
                let count = text.chars().filter(|&ch| ch == c.letter).count();
                assert_eq!(
                    count, c.typed,
                    "seed {seed}: {} typed {} but the text has {count}",
                    c.id, c.typed
                );
            }
        }
    }
}

fn base_seed() -> u64 {
    let seed = std::env::var("TANDEM_SEED")
        .ok()
        .map(|s| s.parse().expect("TANDEM_SEED is a number"))
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("simulation seed {seed} (replay with TANDEM_SEED={seed})");
    seed
}

fn run(insert_only: bool) {
    let base = base_seed();
    for round in 0..60u64 {
        let seed = base.wrapping_add(round);
        let mut sim = Simulation::new(seed, 2 + (round % 4) as usize, insert_only);
        for _ in 0..400 {
            sim.step();
        }
        sim.settle();
        sim.check(seed);
    }
}

#[test]
fn clients_converge_with_random_delivery_drops_and_reconnects() {
    run(false);
}

#[test]
fn every_typed_character_is_applied_exactly_once() {
    run(true);
}
