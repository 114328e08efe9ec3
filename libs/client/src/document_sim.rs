//! Seeded randomized run: three [`DocumentClient`]s against a model of the sequencer, with random
//! interleaving of deliveries, lost connections (reconnect with `since`, resubmission, duplicate
//! suppression), restarts from the saved state ([`DocumentClient::to_saved`]) while disconnected, and
//! rejected ops (`invalid_op`, reset). Everyone must converge to the server text.
//!
//! Every run prints its seed; `TANDEM_SEED=<n> cargo test -p tandem-client sim` replays one run.

use std::collections::{HashMap, HashSet, VecDeque};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tandem_ot::Operation;

use super::*;

const CLIENTS: usize = 3;

/// Server → client.
#[derive(Debug, Clone)]
enum Down {
    Op { version: u64, op: Operation },
    Ack { seq: u64, version: u64 },
    Opened { version: u64 },
    Snapshot { version: u64, text: String },
    InvalidOp { seq: u64 },
}

/// Client → server.
#[derive(Debug, Clone)]
enum Up {
    Op(OutgoingOp),
    /// `close` followed by `open` without `since`.
    Reopen,
}

/// The sequencer as PROTOCOL.md describes it.
struct Server {
    text: String,
    /// `history[i]` is version `i + 1`: who sent it, with which seq, and the committed op.
    history: Vec<(usize, u64, Operation)>,
    /// Per client: last seq used (committed or rejected), seqs rejected, seq → committed version.
    last_seq: [u64; CLIENTS],
    rejected: [HashSet<u64>; CLIENTS],
    committed: [HashMap<u64, u64>; CLIENTS],
}

impl Server {
    fn version(&self) -> u64 {
        self.history.len() as u64
    }
}

/// One client with its connection: queues in both directions and what the server sent on it.
struct Peer {
    doc: DocumentClient,
    up: VecDeque<Up>,
    down: VecDeque<Down>,
    connected: bool,
    /// Between reconnect and `opened`: received ops are applied, nothing is sent.
    catching_up: bool,
    /// After `invalid_op`, until the snapshot: everything for the document is ignored.
    resyncing: bool,
    /// The last version the server put on this connection.
    delivered: u64,
}

impl Peer {
    fn send(&mut self, out: Option<OutgoingOp>) {
        if let Some(out) = out {
            if self.connected && !self.catching_up && !self.resyncing {
                self.up.push_back(Up::Op(out));
            }
            // Otherwise it waits in the state machine and goes out as the resubmission.
        }
    }
}

/// How often the interesting paths were taken, to check that the runs exercise them.
#[derive(Debug, Default)]
struct Coverage {
    rejected: u64,
    duplicate_resubmissions: u64,
    resubmissions: u64,
    catch_up_acks: u64,
    concurrent_transforms: u64,
    /// Restarts from a saved state with something pending.
    restarts_pending: u64,
}

struct Sim {
    rng: SmallRng,
    coverage: Coverage,
    server: Server,
    peers: Vec<Peer>,
    /// Ops of broken connections that the server has not processed yet: they commit later, maybe
    /// after the client reconnected and resubmitted them, as a real sequencer pipeline can.
    limbo: Vec<(usize, OutgoingOp)>,
    reject_chance: f64,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let initial: String = random_text(&mut rng, 0..6);
        let doc = DocId::parse("sim").expect("valid id");
        let peers = (0..CLIENTS)
            .map(|_| Peer {
                doc: DocumentClient::new(doc.clone(), 0, &initial),
                up: VecDeque::new(),
                down: VecDeque::new(),
                connected: true,
                catching_up: false,
                resyncing: false,
                delivered: 0,
            })
            .collect();
        let reject_chance = if rng.gen_bool(0.5) { 0.0 } else { 0.05 };
        Sim {
            rng,
            coverage: Coverage::default(),
            server: Server {
                text: initial,
                history: Vec::new(),
                last_seq: [0; CLIENTS],
                rejected: Default::default(),
                committed: Default::default(),
            },
            peers,
            limbo: Vec::new(),
            reject_chance,
        }
    }

    fn step(&mut self) {
        let c = self.rng.gen_range(0..CLIENTS);
        match self.rng.gen_range(0..100) {
            0..=29 => self.local_edit(c),
            30..=59 => self.deliver_up(c),
            60..=93 => self.deliver_down(c),
            94..=95 => self.disconnect(c),
            96..=97 => self.reconnect(c),
            _ => self.deliver_limbo(),
        }
    }

    fn local_edit(&mut self, c: usize) {
        let peer = &mut self.peers[c];
        if peer.resyncing {
            return; // the connection layer refuses edits then
        }
        let len = peer.doc.len_chars();
        let pos = self.rng.gen_range(0..=len);
        let delete = if self.rng.gen_bool(0.4) { self.rng.gen_range(0..=(len - pos).min(3)) } else { 0 };
        let insert = random_text(&mut self.rng, 0..4);
        let op = Operation::from_patch(len, pos, delete, &insert).expect("patch fits");
        let expected = apply_str(&op, &peer.doc.text());
        let out = peer.doc.local_edit(op).expect("local edit fits");
        assert_eq!(peer.doc.text(), expected);
        peer.send(out);
    }

    /// The server takes the oldest message of client `c`.
    fn deliver_up(&mut self, c: usize) {
        let Some(msg) = self.peers[c].up.pop_front() else { return };
        match msg {
            Up::Reopen => {
                let peer = &mut self.peers[c];
                peer.down.push_back(Down::Snapshot {
                    version: self.server.version(),
                    text: self.server.text.clone(),
                });
                peer.delivered = self.server.version();
            }
            Up::Op(out) => self.receive_op(c, out, true),
        }
    }

    /// The server processes an op of client `c`. `live` tells whether the connection it came on still
    /// exists: answers meant for that connection alone (errors, repeated acks) are lost otherwise,
    /// while a commit reaches every current subscription.
    fn receive_op(&mut self, c: usize, out: OutgoingOp, live: bool) {
        let server = &mut self.server;
        if out.seq <= server.last_seq[c] {
            // A resubmission: the same answer again, at most once per version on a connection.
            self.coverage.duplicate_resubmissions += 1;
            if !live {
                return;
            }
            if server.rejected[c].contains(&out.seq) {
                self.peers[c].down.push_back(Down::InvalidOp { seq: out.seq });
            } else {
                let version = server.committed[c][&out.seq];
                let peer = &mut self.peers[c];
                if peer.delivered < version {
                    peer.down.push_back(Down::Ack { seq: out.seq, version });
                }
            }
            return;
        }
        assert_eq!(out.seq, server.last_seq[c] + 1, "seq gap from client {c}");
        server.last_seq[c] = out.seq;
        assert!(out.base <= server.version(), "base in the future");
        if self.rng.gen_bool(self.reject_chance) {
            self.coverage.rejected += 1;
            server.rejected[c].insert(out.seq);
            if live {
                self.peers[c].down.push_back(Down::InvalidOp { seq: out.seq });
            }
            return;
        }
        let mut op = out.op;
        self.coverage.concurrent_transforms += server.version() - out.base;
        for (_, _, committed) in &server.history[out.base as usize..] {
            op = Operation::transform(&op, committed).expect("server transform").0;
        }
        server.text = op.apply(&server.text).expect("committed op fits the server text");
        server.history.push((c, out.seq, op.clone()));
        let version = server.version();
        server.committed[c].insert(out.seq, version);
        for (i, peer) in self.peers.iter_mut().enumerate() {
            if peer.connected {
                peer.delivered = version;
                peer.down.push_back(if i == c {
                    Down::Ack { seq: out.seq, version }
                } else {
                    Down::Op { version, op: op.clone() }
                });
            }
        }
    }

    /// Client `c` takes the oldest message from the server.
    fn deliver_down(&mut self, c: usize) {
        let peer = &mut self.peers[c];
        let Some(msg) = peer.down.pop_front() else { return };
        match msg {
            Down::Op { .. } | Down::Ack { .. } | Down::InvalidOp { .. } | Down::Opened { .. }
                if peer.resyncing => {}
            Down::Op { version, op } => {
                let before = peer.doc.text();
                let applied = peer.doc.on_remote_op(version, &op).expect("in-order delivery");
                assert_eq!(peer.doc.text(), apply_str(&applied, &before));
            }
            Down::Ack { seq, version } => {
                self.coverage.catch_up_acks += u64::from(peer.catching_up);
                let out = peer.doc.on_ack(seq, version).expect("ack of the op in flight");
                peer.send(out);
            }
            Down::Opened { version } => {
                assert_eq!(version, peer.doc.version());
                peer.catching_up = false;
                let resend = peer.doc.resubmission();
                self.coverage.resubmissions += u64::from(resend.is_some());
                peer.send(resend);
            }
            Down::Snapshot { version, text } => {
                peer.doc.reset(version, &text);
                peer.resyncing = false;
                peer.catching_up = false;
            }
            Down::InvalidOp { seq } => {
                assert_eq!(peer.doc.in_flight_seq(), Some(seq), "invalid_op for an op not in flight");
                peer.resyncing = true;
                peer.up.push_back(Up::Reopen);
            }
        }
    }

    /// The connection of `c` breaks: some of what was under way arrives, the rest is lost.
    fn disconnect(&mut self, c: usize) {
        if !self.peers[c].connected {
            return;
        }
        let arrive_up = self.rng.gen_range(0..=self.peers[c].up.len());
        for _ in 0..arrive_up {
            self.deliver_up(c);
        }
        let arrive_down = self.rng.gen_range(0..=self.peers[c].down.len());
        for _ in 0..arrive_down {
            self.deliver_down(c);
        }
        let peer = &mut self.peers[c];
        for msg in peer.up.drain(..) {
            if let Up::Op(out) = msg {
                if self.rng.gen_bool(0.5) {
                    self.limbo.push((c, out));
                }
            }
        }
        peer.down.clear();
        peer.connected = false;
        if !peer.resyncing && self.rng.gen_bool(0.5) {
            // The process restarts from what the state folder keeps (through JSON, as a file).
            let json = serde_json::to_string(&peer.doc.to_saved()).expect("serialisable");
            let saved = serde_json::from_str(&json).expect("reads back");
            let restored = DocumentClient::from_saved(saved).expect("a saved state fits together");
            assert_eq!(
                (restored.text(), restored.version(), restored.next_seq(), restored.resubmission()),
                (peer.doc.text(), peer.doc.version(), peer.doc.next_seq(), peer.doc.resubmission())
            );
            self.coverage.restarts_pending += u64::from(!restored.is_synced());
            peer.doc = restored;
        }
    }

    fn deliver_limbo(&mut self) {
        if self.limbo.is_empty() {
            return;
        }
        let (c, out) = self.limbo.swap_remove(self.rng.gen_range(0..self.limbo.len()));
        self.receive_op(c, out, false);
    }

    /// `hello` again and `open` with `since` (or without, when a reload was under way).
    fn reconnect(&mut self, c: usize) {
        let server = &self.server;
        let peer = &mut self.peers[c];
        if peer.connected {
            return;
        }
        peer.connected = true;
        if peer.resyncing {
            peer.up.push_back(Up::Reopen);
            return;
        }
        peer.catching_up = true;
        for (i, (client, seq, op)) in server.history.iter().enumerate().skip(peer.doc.version() as usize) {
            let version = i as u64 + 1;
            peer.down.push_back(if *client == c {
                Down::Ack { seq: *seq, version }
            } else {
                Down::Op { version, op: op.clone() }
            });
        }
        peer.down.push_back(Down::Opened { version: server.version() });
        peer.delivered = server.version();
    }

    /// Reconnects everyone and delivers everything until nothing moves.
    fn settle(&mut self) {
        self.reject_chance = 0.0;
        while !self.limbo.is_empty() {
            self.deliver_limbo();
        }
        for c in 0..CLIENTS {
            self.reconnect(c);
        }
        loop {
            let busy = self.peers.iter().any(|p| !p.up.is_empty() || !p.down.is_empty());
            if !busy {
                break;
            }
            for c in 0..CLIENTS {
                self.deliver_up(c);
                self.deliver_down(c);
            }
        }
    }
}

fn random_text(rng: &mut SmallRng, len: std::ops::Range<usize>) -> String {
    const ALPHABET: &[char] = &['a', 'b', 'c', ' ', 'é', '😀', '\n'];
    let n = rng.gen_range(len);
    (0..n).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())]).collect()
}

fn apply_str(op: &Operation, text: &str) -> String {
    op.apply(text).expect("op fits")
}

fn run(seed: u64, steps: usize) -> Coverage {
    eprintln!("simulation seed {seed} (replay with TANDEM_SEED={seed})");
    let mut sim = Sim::new(seed);
    for _ in 0..steps {
        sim.step();
    }
    sim.settle();
    for (c, peer) in sim.peers.iter().enumerate() {
        assert!(peer.doc.is_synced(), "seed {seed}: client {c} not synced");
        assert_eq!(peer.doc.version(), sim.server.version(), "seed {seed}: client {c} version");
        assert_eq!(peer.doc.text(), sim.server.text, "seed {seed}: client {c} text");
    }
    sim.coverage
}

#[test]
fn clients_converge_with_the_server_under_random_interleavings() {
    if let Some(seed) = std::env::var("TANDEM_SEED").ok().and_then(|s| s.parse().ok()) {
        run(seed, 400);
        return;
    }
    let base: u64 = rand::random::<u32>().into();
    let mut total = Coverage::default();
    for i in 0..200 {
        let c = run(base + i, 400);
        total.rejected += c.rejected;
        total.duplicate_resubmissions += c.duplicate_resubmissions;
        total.resubmissions += c.resubmissions;
        total.catch_up_acks += c.catch_up_acks;
        total.concurrent_transforms += c.concurrent_transforms;
        total.restarts_pending += c.restarts_pending;
    }
    eprintln!("{total:?}");
    assert!(total.rejected > 0 && total.duplicate_resubmissions > 0, "{total:?}");
    assert!(total.resubmissions > 0 && total.catch_up_acks > 0, "{total:?}");
    assert!(total.concurrent_transforms > 0 && total.restarts_pending > 0, "{total:?}");
}
