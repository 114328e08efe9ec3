//! One simulated ShareDB client's replica of its document, as ShareDB's browser client
//! (`client/doc.js`) keeps it: one op in flight, the keystrokes made meanwhile composed into one
//! pending op, incoming ops transformed against both with the client's own ops on the left of a tie
//! (`transformX`). Pure, no I/O: [`crate::sharedb_editor`] drives it over the socket.
//!
//! Known limit: ops are kept as Tandem's [`Operation`], which puts an insert before a delete at the
//! same position, while `ot-text-unicode` keeps either order and transforms the two differently
//! against an insert just after the deleted text. An op the ShareDB server transformed into
//! delete-then-insert is taken in the other order, so on rare ties a replica ends with the
//! server's length but not its text (about one `max` run in eight; BENCHMARKS.md): the likely cause
//! of those runs, inferred from the symptom and a check with node, not yet caught in the act.

use std::collections::BTreeMap;
use std::time::Instant;

use ropey::Rope;
use tandem_ot::Operation;

use crate::sharedb::{self, Incoming};
use crate::typing::Key;

/// One client's replica of its document, as ShareDB's client keeps it; pure, no I/O.
#[derive(Debug)]
pub struct Replica {
    pub text: Rope,
    /// The server's version this replica has taken every op of.
    pub version: u64,
    /// The `seq` of this connection's last op (the create counts).
    pub seq: u64,
    inflight: Option<Flight>,
    /// Keystrokes made while an op is in flight, composed; with the instants they were made.
    pending: Option<(Operation, Vec<Instant>)>,
    /// Ops (and acks) of versions past `version`, taken in order once it gets there.
    early: BTreeMap<u64, Incoming>,
}

#[derive(Debug)]
struct Flight {
    op: Operation,
    seq: u64,
    keys: Vec<Instant>,
}

/// What an incoming message did to a replica.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The op in flight was committed as `version`; `keys` are the instants of its keystrokes.
    Acked { version: u64, keys: Vec<Instant> },
    /// Another client's op, committed as `version`, was applied.
    Remote { version: u64, author: String },
    /// The server refused something, or said something this replica cannot follow; `lost` are
    /// keystrokes that will never be acknowledged.
    Error { code: String, message: String, lost: Vec<Instant> },
}

impl Replica {
    pub fn new(version: u64, text: &str, seq: u64) -> Self {
        Self {
            text: Rope::from_str(text),
            version,
            seq,
            inflight: None,
            pending: None,
            early: BTreeMap::new(),
        }
    }

    /// Nothing in flight or pending: every keystroke was acknowledged.
    pub fn is_synced(&self) -> bool {
        self.inflight.is_none() && self.pending.is_none()
    }

    /// Keystrokes not acknowledged yet.
    pub fn waiting_keys(&self) -> impl Iterator<Item = &Instant> {
        let flight = self.inflight.iter().flat_map(|f| f.keys.iter());
        flight.chain(self.pending.iter().flat_map(|(_, keys)| keys.iter()))
    }

    /// Applies a keystroke made at `at` locally and composes it into the pending op.
    pub fn type_key(&mut self, key: &Key, at: Instant) -> anyhow::Result<()> {
        let op = Operation::from_patch(self.text.len_chars(), key.pos, key.delete, key.insert)?;
        op.apply_to_rope(&mut self.text)?;
        self.pending = Some(match self.pending.take() {
            Some((pending, mut keys)) => {
                keys.push(at);
                (pending.compose(&op)?, keys)
            }
            None => (op, vec![at]),
        });
        Ok(())
    }

    /// The pending op as the next op in flight, when none is: (seq, version, op) to submit.
    pub fn next_submit(&mut self) -> Option<(u64, u64, &Operation)> {
        if self.inflight.is_some() {
            return None;
        }
        let (op, keys) = self.pending.take()?;
        self.seq += 1;
        let flight = self.inflight.insert(Flight { op, seq: self.seq, keys });
        Some((flight.seq, self.version, &flight.op))
    }

    /// Takes a message of the server; `me` is this connection's `src`.
    pub fn on_message(&mut self, message: Incoming, me: &str) -> Vec<Outcome> {
        let mut out = Vec::new();
        if message.a != "op" {
            if let Some(error) = message.error {
                out.push(Outcome::Error { code: error.code(), message: error.message, lost: Vec::new() });
            }
            return out;
        }
        let own = self.is_inflight(&message, me);
        if let Some(error) = message.error {
            // Our op was refused: ShareDB's client would roll back; here its keystrokes are lost,
            // and the replica will likely diverge, which the convergence check reports.
            let lost =
                if own { self.inflight.take().map(|f| f.keys).unwrap_or_default() } else { Vec::new() };
            out.push(Outcome::Error { code: error.code(), message: error.message, lost });
            return out;
        }
        let Some(v) = message.v else {
            out.push(violation("an op without a version".into()));
            return out;
        };
        // An older version is a duplicate: a submit's answer repeats the ops it was transformed
        // against, which the subscription delivers too.
        if v > self.version {
            self.early.insert(v, message);
        } else if v == self.version {
            self.take_op(message, me, &mut out);
            while let Some(next) = self.early.remove(&self.version) {
                self.take_op(next, me, &mut out);
            }
            self.early.retain(|&v, _| v > self.version);
        }
        out
    }

    fn is_inflight(&self, message: &Incoming, me: &str) -> bool {
        message.src.as_deref() == Some(me)
            && self.inflight.as_ref().is_some_and(|f| message.seq == Some(f.seq))
    }

    /// The op or ack of `self.version`.
    fn take_op(&mut self, message: Incoming, me: &str, out: &mut Vec<Outcome>) {
        let version = self.version;
        if self.is_inflight(&message, me) {
            let flight = self.inflight.take().expect("checked by is_inflight");
            self.version += 1;
            out.push(Outcome::Acked { version, keys: flight.keys });
            return;
        }
        if let Some(op) = &message.op {
            if let Err(e) = self.apply_remote(op) {
                out.push(violation(format!("cannot take the op of version {version}: {e:#}")));
            }
        }
        // An op without `op` (a no-op) only moves the version.
        self.version += 1;
        out.push(Outcome::Remote { version, author: message.src.unwrap_or_default() });
    }

    /// Transforms a remote op against the op in flight and the pending one, and applies it.
    fn apply_remote(&mut self, op: &serde_json::Value) -> anyhow::Result<()> {
        // The remote op applies to the server's text, which is where the op in flight (or else the
        // pending one) starts.
        let base = match (&self.inflight, &self.pending) {
            (Some(flight), _) => flight.op.base_len(),
            (None, Some((pending, _))) => pending.base_len(),
            (None, None) => self.text.len_chars(),
        };
        let mut remote = sharedb::from_wire(op, base)?;
        if let Some(flight) = &mut self.inflight {
            let (own, theirs) = Operation::transform(&flight.op, &remote)?;
            (flight.op, remote) = (own, theirs);
        }
        if let Some((pending, _)) = &mut self.pending {
            let (own, theirs) = Operation::transform(pending, &remote)?;
            (*pending, remote) = (own, theirs);
        }
        remote.apply_to_rope(&mut self.text)?;
        Ok(())
    }
}

fn violation(message: String) -> Outcome {
    Outcome::Error { code: "protocol_violation".into(), message, lost: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typing::Keystrokes;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use serde_json::{json, Value};

    fn incoming(value: Value) -> Incoming {
        serde_json::from_value(value).unwrap()
    }

    /// The minimal server's side of replica `i`'s next op, if it has one to send: transformed
    /// against what was committed after its version, committed, acknowledged to `i` and sent to the
    /// other replica.
    fn submit<'a>(
        replica: &mut Replica,
        i: usize,
        name: &'a str,
        server: &mut String,
        log: &mut Vec<(Operation, &'a str, u64)>,
        inbox: &mut [Vec<Value>; 2],
    ) -> bool {
        let Some((seq, v, op)) = replica.next_submit() else { return false };
        let mut op = op.clone();
        for (committed, _, _) in &log[(v - 1) as usize..] {
            op = Operation::transform(&op, committed).unwrap().0;
        }
        *server = op.apply(server).unwrap();
        let version = log.len() as u64 + 1;
        log.push((op.clone(), name, seq));
        inbox[i].push(json!({"a": "op", "v": version, "src": name, "seq": seq}));
        let wire = sharedb::to_wire(&op);
        inbox[1 - i].push(json!({"a": "op", "v": version, "src": name, "seq": seq, "op": wire}));
        true
    }

    /// Two replicas typing concurrently, their ops sequenced by a minimal server that transforms a
    /// late op against what was committed after its version (the later op on the left of a tie, as
    /// ShareDB's `ot.transform` does) and delivers in commit order; both end at the server's text.
    #[test]
    fn replicas_converge_through_a_sequencing_server() {
        let seed = tandem_integration_tests::seed();
        let mut rng = SmallRng::seed_from_u64(seed);
        let names = ["a", "b"];
        let mut replicas = [Replica::new(1, "", 1), Replica::new(1, "", 0)];
        let mut keys = [Keystrokes::new(seed), Keystrokes::new(seed ^ 1)];
        // The server's log: ops from version 1 on, with their author and seq.
        let mut log: Vec<(Operation, &str, u64)> = Vec::new();
        let mut server = String::new();
        // What each client has yet to receive, in order.
        let mut inbox: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
        let now = Instant::now();
        for _ in 0..3000 {
            let i = rng.gen_range(0..2);
            match rng.gen_range(0..3) {
                0 => {
                    let key = keys[i].next_key(replicas[i].text.len_chars());
                    replicas[i].type_key(&key, now).unwrap();
                    keys[i].typed(&key);
                }
                1 => {
                    submit(&mut replicas[i], i, names[i], &mut server, &mut log, &mut inbox);
                }
                _ => {
                    if !inbox[i].is_empty() {
                        let message = inbox[i].remove(0);
                        for outcome in replicas[i].on_message(incoming(message), names[i]) {
                            assert!(!matches!(outcome, Outcome::Error { .. }), "seed {seed}: {outcome:?}");
                        }
                    }
                }
            }
        }
        // Settle: deliver and submit until nothing moves.
        loop {
            let mut moved = false;
            for i in 0..2 {
                for message in std::mem::take(&mut inbox[i]) {
                    replicas[i].on_message(incoming(message), names[i]);
                    moved = true;
                }
                if submit(&mut replicas[i], i, names[i], &mut server, &mut log, &mut inbox) {
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        for (i, replica) in replicas.iter().enumerate() {
            assert!(replica.is_synced(), "seed {seed}: replica {i}");
            assert_eq!(replica.version, log.len() as u64 + 1, "seed {seed}: replica {i}");
            assert_eq!(replica.text.to_string(), server, "seed {seed}: replica {i}");
        }
    }

    #[test]
    fn early_ops_wait_for_their_turn_and_duplicates_are_ignored() {
        let mut r = Replica::new(1, "ab", 0);
        let now = Instant::now();
        r.type_key(&Key { pos: 2, delete: 0, insert: "c" }, now).unwrap();
        assert_eq!(r.next_submit().map(|(seq, v, _)| (seq, v)), Some((1, 1)));
        // The ack of version 2 comes before the remote op of version 1 it was transformed against.
        assert!(r.on_message(incoming(json!({"a": "op", "v": 2, "src": "me", "seq": 1})), "me").is_empty());
        let out = r.on_message(incoming(json!({"a": "op", "v": 1, "src": "x", "seq": 5, "op": ["z"]})), "me");
        assert_eq!(
            out,
            vec![
                Outcome::Remote { version: 1, author: "x".into() },
                Outcome::Acked { version: 2, keys: vec![now] },
            ]
        );
        assert_eq!((r.text.to_string(), r.version, r.is_synced()), ("zabc".to_owned(), 3, true));
        // The same remote op again (a submit's answer and the subscription both carry it).
        let again =
            r.on_message(incoming(json!({"a": "op", "v": 1, "src": "x", "seq": 5, "op": ["z"]})), "me");
        assert!(again.is_empty());
        assert_eq!(r.text.to_string(), "zabc");
    }
}
