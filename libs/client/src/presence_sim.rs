//! Randomized check of [`RemoteSelections`]: two clients editing and moving their carets at once,
//! a server that sequences their ops, and a gateway that relays each presence in the text of a
//! version of its own choosing (at or after the one the client named, never going back), with ops
//! and presence frames arriving in any interleaving. After every step, the selection each client
//! shows of the other must be the one the canonical history gives: the last frame it received
//! whose version it has applied, moved through the server's ops after that version up to the
//! client's version, then through the client's own pending edits.
//!
//! Seeded: the seed is printed; replay with `TANDEM_SEED=<seed>`.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_ot::Operation;

use super::{Participant, RemoteSelections, SelectionAt};

#[derive(Debug, Clone)]
enum ToClient {
    Op(u64, Operation),
    Ack(u64),
}

struct Client {
    name: &'static str,
    version: u64,
    text: Vec<char>,
    in_flight: Option<Operation>,
    buffer: Option<Operation>,
    /// Ops and acks from the server, in order.
    inbox: VecDeque<ToClient>,
    /// Presence frames of the other client, in order.
    presence_inbox: VecDeque<SelectionAt>,
    /// Frames processed so far (for the expectation).
    received: Vec<SelectionAt>,
    others: RemoteSelections,
    caret: usize,
    /// The character after the caret when it was last announced with nothing pending.
    announced_before: Option<char>,
}

impl Client {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            version: 0,
            text: Vec::new(),
            in_flight: None,
            buffer: None,
            inbox: VecDeque::new(),
            presence_inbox: VecDeque::new(),
            received: Vec::new(),
            others: RemoteSelections::new(0),
            caret: 0,
            announced_before: None,
        }
    }

    fn pending(&self) -> Vec<&Operation> {
        self.in_flight.iter().chain(self.buffer.iter()).collect()
    }

    /// A local edit; returns the op to submit (on `version`) when nothing was in flight.
    fn edit(&mut self, rng: &mut StdRng, fresh: &mut u32) -> Option<(u64, Operation)> {
        let len = self.text.len();
        let at = rng.gen_range(0..=len);
        let op = if len > at && rng.gen_bool(0.35) {
            Operation::from_patch(len, at, rng.gen_range(1..=(len - at).min(3)), "").expect("in range")
        } else {
            let text: String = (0..rng.gen_range(1..=3))
                .map(|_| {
                    *fresh += 1;
                    char::from_u32(0x4E00 + *fresh).expect("a CJK character")
                })
                .collect();
            Operation::from_patch(len, at, 0, &text).expect("in range")
        };
        self.text = op.apply(&self.text.iter().collect::<String>()).expect("applies").chars().collect();
        self.caret = op.transform_index(self.caret);
        if self.in_flight.is_none() {
            self.in_flight = Some(op.clone());
            return Some((self.version, op));
        }
        self.buffer = Some(match self.buffer.take() {
            Some(buffer) => buffer.compose(&op).expect("composes"),
            None => op,
        });
        None
    }

    /// Moves the caret; returns the presence to announce (version, index in that version's text).
    fn move_caret(&mut self, rng: &mut StdRng) -> SelectionAt {
        self.caret = rng.gen_range(0..=self.text.len());
        let nothing_pending = self.in_flight.is_none() && self.buffer.is_none();
        self.announced_before = if nothing_pending { self.text.get(self.caret).copied() } else { None };
        let index = RemoteSelections::to_server(self.caret, &self.pending());
        SelectionAt { version: self.version, anchor: index, head: index }
    }

    /// Takes the next op or ack; returns the buffer to submit when an ack frees the slot.
    fn take_one(&mut self) -> Option<(u64, Operation)> {
        match self.inbox.pop_front()? {
            ToClient::Op(version, op) => {
                let mut received = op.clone();
                if let Some(in_flight) = self.in_flight.take() {
                    let (mine, theirs) = Operation::transform(&in_flight, &received).expect("transforms");
                    self.in_flight = Some(mine);
                    received = theirs;
                }
                if let Some(buffer) = self.buffer.take() {
                    let (mine, theirs) = Operation::transform(&buffer, &received).expect("transforms");
                    self.buffer = Some(mine);
                    received = theirs;
                }
                let text: String = self.text.iter().collect();
                self.text = received.apply(&text).expect("applies").chars().collect();
                self.caret = received.transform_index(self.caret);
                self.others.apply(version, &op);
                self.version = version;
                None
            }
            ToClient::Ack(version) => {
                let committed = self.in_flight.take().expect("an ack answers the op in flight");
                self.others.apply(version, &committed);
                self.version = version;
                self.in_flight = self.buffer.take();
                self.in_flight.clone().map(|op| (version, op))
            }
        }
    }

    fn take_presence(&mut self, other: &str) {
        if let Some(frame) = self.presence_inbox.pop_front() {
            let participant =
                Participant { client: other.into(), user: other.into(), name: None, colour: None };
            self.others.update(participant, Some(frame));
            self.received.push(frame);
        }
    }

    /// What the canonical history says this client should show of the other.
    fn expected(&self, history: &[Operation]) -> Option<(usize, usize)> {
        let frame = self.received.iter().rev().find(|f| f.version <= self.version)?;
        let ops = &history[frame.version as usize..self.version as usize];
        let pending = self.pending();
        let position = |index: usize| {
            let canonical = ops.iter().fold(index, |i, op| op.transform_index(i));
            pending.iter().fold(canonical, |i, op| op.transform_index(i))
        };
        Some((position(frame.anchor), position(frame.head)))
    }

    fn shown(&self) -> Option<(usize, usize)> {
        self.others.shown(&self.pending()).first().and_then(|s| s.selection)
    }
}

/// The server: the canonical history, and the presences it relays.
struct Server {
    text: String,
    history: Vec<Operation>,
    /// Submissions from each client, in order: (base, op).
    submitted: [VecDeque<(u64, Operation)>; 2],
    /// Presences each client announced, not yet relayed.
    announced: [VecDeque<SelectionAt>; 2],
    /// The version the gateway last relayed each client's presence at (it never goes back).
    relayed_at: [u64; 2],
}

impl Server {
    fn sequence(&mut self, from: usize, clients: &mut [Client; 2]) {
        let Some((base, mut op)) = self.submitted[from].pop_front() else { return };
        for committed in &self.history[base as usize..] {
            op = Operation::transform(&op, committed).expect("transforms").0;
        }
        self.text = op.apply(&self.text).expect("applies");
        self.history.push(op.clone());
        let version = self.history.len() as u64;
        clients[from].inbox.push_back(ToClient::Ack(version));
        clients[1 - from].inbox.push_back(ToClient::Op(version, op));
    }

    /// Relays the oldest announced presence of `from` at a version of the gateway's choosing.
    fn relay(&mut self, from: usize, rng: &mut StdRng, clients: &mut [Client; 2]) {
        let Some(s) = self.announced[from].pop_front() else { return };
        let now = self.history.len() as u64;
        let lowest = s.version.max(self.relayed_at[from]);
        let at = rng.gen_range(lowest..=now);
        self.relayed_at[from] = at;
        let ops = &self.history[s.version as usize..at as usize];
        let moved = |i: usize| ops.iter().fold(i, |i, op| op.transform_index(i));
        let frame = SelectionAt { version: at, anchor: moved(s.anchor), head: moved(s.head) };
        clients[1 - from].presence_inbox.push_back(frame);
    }
}

fn run(seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clients = [Client::new("ann"), Client::new("bob")];
    let mut server = Server {
        text: String::new(),
        history: Vec::new(),
        submitted: Default::default(),
        announced: Default::default(),
        relayed_at: [0, 0],
    };
    let mut fresh = 0;
    for step in 0..steps {
        let who = rng.gen_range(0..2);
        match rng.gen_range(0..7) {
            0 | 1 => {
                if let Some(submit) = clients[who].edit(&mut rng, &mut fresh) {
                    server.submitted[who].push_back(submit);
                }
            }
            2 => {
                let announced = clients[who].move_caret(&mut rng);
                server.announced[who].push_back(announced);
            }
            3 => server.sequence(who, &mut clients),
            4 => {
                if let Some(submit) = clients[who].take_one() {
                    server.submitted[who].push_back(submit);
                }
            }
            5 => server.relay(1 - who, &mut rng, &mut clients),
            _ => clients[who].take_presence(clients[1 - who].name),
        }
        for client in &clients {
            assert_eq!(
                client.shown(),
                client.expected(&server.history),
                "seed {seed}, step {step}: {} shows the other's selection wrongly",
                client.name
            );
        }
    }
    // Quiescence: everything sequenced, delivered and relayed.
    loop {
        let mut busy = false;
        for who in 0..2 {
            busy |= !server.submitted[who].is_empty() || !clients[who].inbox.is_empty();
            busy |= !server.announced[who].is_empty() || !clients[who].presence_inbox.is_empty();
            server.sequence(who, &mut clients);
            if let Some(submit) = clients[who].take_one() {
                server.submitted[who].push_back(submit);
            }
            server.relay(who, &mut rng, &mut clients);
            clients[who].take_presence(if who == 0 { "bob" } else { "ann" });
        }
        if !busy {
            break;
        }
    }
    for who in 0..2 {
        let client = &clients[who];
        assert_eq!(
            client.text.iter().collect::<String>(),
            server.text,
            "seed {seed}: {} diverged",
            client.name
        );
        assert_eq!(
            client.shown(),
            client.expected(&server.history),
            "seed {seed}: {} at the end",
            client.name
        );
        // The caret stays on its character: the one after the other's caret when it was announced
        // (with nothing pending) is still right after it, unless someone deleted it.
        let other = &clients[1 - who];
        if let (Some(c), Some((_, head))) = (other.announced_before, client.shown()) {
            if let Some(at) = client.text.iter().position(|x| *x == c) {
                assert_eq!(head, at, "seed {seed}: {}'s caret left its character {c:?}", other.name);
            }
        }
    }
}

#[test]
fn remote_carets_follow_the_canonical_history_in_random_interleavings() {
    let seed = std::env::var("TANDEM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (replay with TANDEM_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..300 {
        run(rng.gen(), 200);
    }
}
