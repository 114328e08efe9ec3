//! One simulated ShareDB client's replica of its document, as ShareDB's browser client
//! (`client/doc.js`) keeps it: one op in flight, the keystrokes made meanwhile composed into one
//! pending op, incoming ops transformed against both with the client's own ops on the left of a tie
//! (`transformX`). Ops are `ot-text-unicode` ops ([`crate::text_unicode`]), transformed, composed
//! and applied as the server does, so a tie between a delete-then-insert and an insert right after
//! the deleted text resolves as at the server. Pure, no I/O: [`crate::sharedb_editor`] drives it
//! over the socket.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::bail;
use ropey::Rope;

use crate::sharedb::Incoming;
use crate::text_unicode::{Component, Deleted, Op, Side};
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
    pending: Option<(Op, Vec<Instant>)>,
    /// Ops (and acks) of versions past `version`, taken in order once it gets there.
    early: BTreeMap<u64, Incoming>,
}

#[derive(Debug)]
struct Flight {
    op: Op,
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
        let op = key_op(key, self.text.len_chars())?;
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
    pub fn next_submit(&mut self) -> Option<(u64, u64, &Op)> {
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

    /// Transforms a remote op against the op in flight and the pending one, and applies it: the
    /// client's op on the left of a tie, the remote one on the right (`transformX`).
    /// Nothing changes unless all of it succeeds: a remote op that does not fit leaves the replica
    /// as it was.
    fn apply_remote(&mut self, op: &serde_json::Value) -> anyhow::Result<()> {
        let mut remote = Op::from_wire(op)?;
        let flight = self.inflight.as_ref().map(|f| &f.op);
        let mut own_after = Vec::with_capacity(2);
        for own in flight.into_iter().chain(self.pending.as_ref().map(|(op, _)| op)) {
            own_after.push(own.transform(&remote, Side::Left)?);
            remote = remote.transform(own, Side::Right)?;
        }
        remote.apply_to_rope(&mut self.text)?;
        let mut own_after = own_after.into_iter();
        for own in self
            .inflight
            .as_mut()
            .map(|f| &mut f.op)
            .into_iter()
            .chain(self.pending.as_mut().map(|(op, _)| op))
        {
            *own = own_after.next().expect("one transformed op for each of the client's");
        }
        Ok(())
    }
}

/// A keystroke as ShareDB's text API submits it on a text of `len` code points: `remove(pos, n)`
/// (`[pos, {d: n}]`) then `insert(pos, text)` (`[pos, text]`), normalized and composed as the
/// client does with consecutive submits.
fn key_op(key: &Key, len: usize) -> anyhow::Result<Op> {
    if key.pos + key.delete > len {
        bail!("the keystroke {key:?} does not fit a text of {len} characters");
    }
    let remove = Op(vec![Component::Skip(key.pos), Component::Delete(Deleted::Len(key.delete))]);
    let insert = Op(vec![Component::Skip(key.pos), Component::Insert(key.insert.to_owned())]);
    remove.normalize().compose(&insert.normalize())
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
        log: &mut Vec<(Op, &'a str, u64)>,
        inbox: &mut [Vec<Value>; 2],
    ) -> bool {
        let Some((seq, v, op)) = replica.next_submit() else { return false };
        let mut op = op.clone();
        for (committed, _, _) in &log[(v - 1) as usize..] {
            op = op.transform(committed, Side::Left).unwrap();
        }
        *server = op.apply(server).unwrap();
        let version = log.len() as u64 + 1;
        log.push((op.clone(), name, seq));
        inbox[i].push(json!({"a": "op", "v": version, "src": name, "seq": seq}));
        let wire = op.to_wire();
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
        let mut log: Vec<(Op, &str, u64)> = Vec::new();
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

    /// The tie that used to diverge: the server commits an op that deletes "f" then inserts "x"
    /// while this replica's op inserting "y" right after the "f" is in flight. The server puts "y"
    /// first (`[6, "y"]` transformed on the left); so must the replica, which Tandem's `Operation`
    /// (insert before delete) did not.
    #[test]
    fn a_delete_then_insert_meets_an_insert_after_the_deleted_text_as_at_the_server() {
        let mut r = Replica::new(1, "abcdefgh", 0);
        r.type_key(&Key { pos: 6, delete: 0, insert: "y" }, Instant::now()).unwrap();
        assert_eq!(r.next_submit().map(|(_, _, op)| op.to_wire()), Some(json!([6, "y"])));
        let remote = json!({"a": "op", "v": 1, "src": "x", "seq": 1, "op": [5, {"d": 1}, "x"]});
        r.on_message(incoming(remote), "me");
        assert_eq!(r.text.to_string(), "abcdeyxgh");
        r.on_message(incoming(json!({"a": "op", "v": 2, "src": "me", "seq": 1})), "me");
        assert!(r.is_synced());
    }

    /// A remote op that does not fit the text is reported, and the replica stays as it was: its
    /// op in flight and its pending op are not transformed against an op it never applied.
    #[test]
    fn a_remote_op_that_does_not_fit_changes_nothing() {
        let mut r = Replica::new(1, "abcdefgh", 0);
        r.type_key(&Key { pos: 6, delete: 0, insert: "y" }, Instant::now()).unwrap();
        r.next_submit();
        r.type_key(&Key { pos: 0, delete: 0, insert: "z" }, Instant::now()).unwrap();
        let remote = json!({"a": "op", "v": 1, "src": "x", "seq": 1, "op": ["q", 20, "r"]});
        let outcomes = r.on_message(incoming(remote), "me");
        // Reported; the version still moves on (the convergence check then reports the replica).
        assert!(matches!(&outcomes[..], [Outcome::Error { .. }, Outcome::Remote { .. }]), "{outcomes:?}");
        assert_eq!(r.text.to_string(), "zabcdefygh");
        assert_eq!(r.inflight.as_ref().map(|f| f.op.to_wire()), Some(json!([6, "y"])));
        assert_eq!(r.pending.as_ref().map(|(op, _)| op.to_wire()), Some(json!(["z"])));
    }

    #[test]
    fn keystrokes_are_the_ops_of_sharedbs_text_api() {
        let wire = |pos, delete, insert| key_op(&Key { pos, delete, insert }, 3).map(|op| op.to_wire()).ok();
        assert_eq!(wire(0, 0, "é"), Some(json!(["é"])));
        assert_eq!(wire(3, 0, "a"), Some(json!([3, "a"])));
        assert_eq!(wire(1, 1, ""), Some(json!([1, {"d": 1}])));
        // Remove then insert at one position, composed as the client composes two submits.
        assert_eq!(wire(1, 1, "z"), Some(json!([1, "z", {"d": 1}])));
        assert_eq!(wire(3, 1, ""), None, "past the end");
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
