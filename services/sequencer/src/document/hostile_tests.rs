//! Hostile input to the document state machine: long runs of arbitrary, mostly invalid submissions
//! (lengths that do not fit, bases in the future or far behind, huge and skipping `seq`s,
//! resubmissions, inserts over the limit, any Unicode), with a caller that sometimes hands back
//! wrong or corrupt history and outcomes. The state machine must never panic, and:
//!
//! - a refusal that is not new (`Reject { new: false }`), a `Duplicate`, `NeedHistory` and
//!   `NeedOutcome` change nothing at all;
//! - a new refusal changes only the client's record: its `seq` is used up (PROTOCOL.md), the text,
//!   the version, the window and every other client stay as they were;
//! - a commit advances the version by one and applies exactly the committed op;
//! - the early checks (seq 0, seq gap, base ahead, base too far behind, insert too large) give the
//!   refusal PROTOCOL.md names, and an honest op on an honest history commits;
//! - loading the document back from what was committed and refused gives the same text, version and
//!   client records.
//!
//! proptest shrinks any failure to a minimal case, prints it, and records its seed under
//! `proptest-regressions/` so that the next run replays it first (as the other proptests do).

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use tandem_ot::{Operation, MAX_COUNT};
use tandem_protocol::records::{CommittedEvent, Outcome, Rejection, Submission};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tandem_store::{ClientRecord, Snapshot, StoredDocument};

use super::{Decision, DocumentState, Fetched, Limits};

const LIMITS: Limits = Limits {
    max_document_chars: 16,
    max_op_insert_chars: 8,
    history_window: 3,
    max_base_lag: 6,
    max_clients: 1_000,
};

/// Characters that make counting go wrong when a layer counts bytes, UTF-16 units or graphemes.
const PIECES: &[&str] =
    &["a", "é", "e\u{301}", "\u{301}", "😀", "👍🏽", "中", "\u{0}", "\u{FEFF}", "\r\n", "\u{10FFFF}"];

fn doc() -> DocId {
    DocId::parse("hostile/doc").unwrap()
}

/// Every field of a [`DocumentState`], in a form that compares (its client map is a `HashMap`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    doc: DocId,
    version: u64,
    text: String,
    window: Vec<(ClientId, u64, Operation)>,
    window_start: u64,
    durable_version: u64,
    clients: BTreeMap<ClientId, ClientRecord>,
    snapshot_version: u64,
}

fn view(state: &DocumentState) -> View {
    View {
        doc: state.doc.clone(),
        version: state.version,
        text: state.text.to_string(),
        window: state.window.iter().map(|e| (e.client.clone(), e.seq, e.op.clone())).collect(),
        window_start: state.window_start,
        durable_version: state.durable_version,
        clients: state.clients.iter().map(|(c, r)| (c.clone(), r.record.clone())).collect(),
        snapshot_version: state.snapshot_version,
    }
}

#[derive(Debug, Clone)]
enum SeqChoice {
    /// The next `seq` of the client: the only one that can commit.
    Next,
    /// Its last `seq` again: a resubmission.
    Last,
    /// An older one.
    Older(u64),
    Zero,
    /// Skips ahead by this much.
    Gap(u64),
    /// `u64::MAX` minus this.
    Huge(u64),
    Any(u64),
}

impl SeqChoice {
    fn resolve(&self, last: u64) -> u64 {
        match self {
            SeqChoice::Next => last.saturating_add(1),
            SeqChoice::Last => last,
            SeqChoice::Older(k) => last.saturating_sub(*k),
            SeqChoice::Zero => 0,
            SeqChoice::Gap(k) => last.saturating_add(*k),
            SeqChoice::Huge(k) => u64::MAX - k,
            SeqChoice::Any(seq) => *seq,
        }
    }
}

#[derive(Debug, Clone)]
enum BaseChoice {
    Head,
    Behind(u64),
    Ahead(u64),
    Huge,
    Zero,
}

impl BaseChoice {
    fn resolve(&self, version: u64) -> u64 {
        match self {
            BaseChoice::Head => version,
            BaseChoice::Behind(k) => version.saturating_sub(*k),
            BaseChoice::Ahead(k) => version.saturating_add(*k),
            BaseChoice::Huge => u64::MAX,
            BaseChoice::Zero => 0,
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Retain(usize),
    Delete(usize),
    Insert(String),
}

/// What the op's counts are made to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// The text of the submission's base version: what an honest client sends.
    Base,
    /// The current text, whatever the base.
    Head,
    /// Nothing: counts as generated.
    Raw,
}

/// What the caller hands back after `NeedHistory` or `NeedOutcome`.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// What the store would really answer.
    Honest,
    /// Nothing at all.
    Nothing,
    /// History without its first or last event.
    Truncated(bool),
    /// History with the right versions but ops that do not fit.
    WrongOps,
    /// History numbered one off.
    Shifted,
    /// An outcome that was never stored.
    NoOutcome,
    /// A made-up outcome.
    FakeOutcome(u64),
}

#[derive(Debug, Clone)]
enum Action {
    Submit {
        client: usize,
        seq: SeqChoice,
        base: BaseChoice,
        steps: Vec<Step>,
        fit: Fit,
        /// A caller that passes this on the first call instead of `Fetched::Nothing`.
        premature: Option<Answer>,
        answer: Answer,
    },
    /// The store confirms everything up to this many versions behind the head.
    Durable(u64),
    Snapshot(u64),
}

fn insert_text() -> impl Strategy<Value = String> {
    let chunk = prop_oneof![
        4 => prop::sample::select(PIECES).prop_map(str::to_owned),
        2 => "[a-z ]{1,4}",
        1 => any::<char>().prop_map(String::from),
        1 => (9usize..40).prop_map(|n| "x".repeat(n)),
    ];
    prop::collection::vec(chunk, 1..3).prop_map(|c| c.concat())
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let count = prop_oneof![8 => 0usize..6, 1 => 6usize..100, 1 => Just(MAX_COUNT as usize)];
    let step = prop_oneof![
        count.clone().prop_map(Step::Retain),
        count.prop_map(Step::Delete),
        insert_text().prop_map(Step::Insert),
    ];
    prop::collection::vec(step, 0..6)
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        12 => Just(Answer::Honest),
        1 => Just(Answer::Nothing),
        1 => any::<bool>().prop_map(Answer::Truncated),
        1 => Just(Answer::WrongOps),
        1 => Just(Answer::Shifted),
        1 => Just(Answer::NoOutcome),
        1 => (0u64..20).prop_map(Answer::FakeOutcome),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    let seq = prop_oneof![
        10 => Just(SeqChoice::Next),
        2 => Just(SeqChoice::Last),
        2 => (1u64..5).prop_map(SeqChoice::Older),
        1 => Just(SeqChoice::Zero),
        2 => (2u64..5).prop_map(SeqChoice::Gap),
        1 => (0u64..3).prop_map(SeqChoice::Huge),
        1 => any::<u64>().prop_map(SeqChoice::Any),
    ];
    let base = prop_oneof![
        8 => Just(BaseChoice::Head),
        5 => (1u64..10).prop_map(BaseChoice::Behind),
        1 => (1u64..3).prop_map(BaseChoice::Ahead),
        1 => Just(BaseChoice::Huge),
        1 => Just(BaseChoice::Zero),
    ];
    let fit = prop_oneof![6 => Just(Fit::Base), 3 => Just(Fit::Head), 2 => Just(Fit::Raw)];
    let premature = prop_oneof![8 => Just(None), 1 => answer().prop_map(Some)];
    let submit = (0usize..4, seq, base, steps(), fit, premature, answer()).prop_map(
        |(client, seq, base, steps, fit, premature, answer)| Action::Submit {
            client,
            seq,
            base,
            steps,
            fit,
            premature,
            answer,
        },
    );
    prop_oneof![
        12 => submit,
        3 => (0u64..4).prop_map(Action::Durable),
        1 => (1u64..4).prop_map(Action::Snapshot),
    ]
}

/// The op for a text of `len` characters: counts cut to what is left and the rest retained, or,
/// with `len` `None`, the counts as they are.
fn build(steps: &[Step], len: Option<usize>) -> Operation {
    let mut op = Operation::new();
    let mut left = len.unwrap_or(usize::MAX);
    for step in steps {
        match step {
            Step::Retain(n) => {
                let n = (*n).min(left);
                op.retain(n);
                left -= n;
            }
            Step::Delete(n) => {
                let n = (*n).min(left);
                op.delete(n);
                left -= n;
            }
            Step::Insert(s) => {
                op.insert(s);
            }
        }
    }
    if len.is_some() {
        op.retain(left);
    }
    op
}

/// What the test knows independently of the state machine: every committed event and stored
/// rejection, the length of every version's text, and the outcome of every `(client, seq)`.
struct Log {
    events: Vec<CommittedEvent>,
    rejections: Vec<Rejection>,
    lengths: Vec<usize>,
    outcomes: HashMap<(ClientId, u64), Outcome>,
    snapshot: Option<Snapshot>,
}

/// The history `after < v <= up_to` as the caller hands it back.
fn history(log: &Log, after: u64, up_to: u64, answer: Answer) -> Vec<CommittedEvent> {
    let mut events: Vec<CommittedEvent> =
        log.events.iter().filter(|e| e.version > after && e.version <= up_to).cloned().collect();
    match answer {
        Answer::Truncated(true) => {
            events.pop();
        }
        Answer::Truncated(false) if !events.is_empty() => {
            events.remove(0);
        }
        Answer::WrongOps => {
            for e in &mut events {
                e.op = build(&[Step::Insert("?".into())], Some(e.op.base_len() + 1));
            }
        }
        Answer::Shifted => {
            for e in &mut events {
                e.version += 1;
            }
        }
        _ => {}
    }
    events
}

/// Calls `decide` with what `answer` makes of the request.
fn decide_with(
    state: &mut DocumentState,
    sub: &Submission,
    log: &Log,
    request: Option<&Decision>,
    answer: Answer,
) -> Decision {
    let fake;
    let events;
    let fetched = match (request, answer) {
        (_, Answer::Nothing) => Fetched::Nothing,
        (_, Answer::NoOutcome) => Fetched::Outcome(None),
        (_, Answer::FakeOutcome(version)) => {
            fake = if version % 2 == 0 {
                Outcome::Committed { version }
            } else {
                Outcome::Rejected { code: ErrorCode::Internal, message: "made up".into() }
            };
            Fetched::Outcome(Some(&fake))
        }
        (Some(Decision::NeedHistory { after, up_to }), answer) => {
            events = history(log, *after, *up_to, answer);
            Fetched::History(&events)
        }
        (Some(Decision::NeedOutcome), _) => {
            Fetched::Outcome(log.outcomes.get(&(sub.client.clone(), sub.seq)))
        }
        // A premature answer: history the caller made up for a request it has not seen.
        (_, answer) => {
            let version = state.version();
            events = history(log, sub.base.min(version), version, answer);
            Fetched::History(&events)
        }
    };
    state.decide(sub, &LIMITS, fetched)
}

/// Checks one decision against the state before and after it.
fn check(
    before: &View,
    after: &View,
    sub: &Submission,
    decision: &Decision,
    log: &Log,
    honest: bool,
    fit: Fit,
) -> Result<(), TestCaseError> {
    let last = before.clients.get(&sub.client).map_or(0, |r| r.seq);
    let inserted = sub.op.inserted_chars();
    let lag_ok = sub.base <= before.version && before.version - sub.base <= LIMITS.max_base_lag;
    // The refusals PROTOCOL.md fixes, checked in the order it gives them.
    if sub.seq == 0 {
        let refused = matches!(decision, Decision::Reject { new: false, rejection } if rejection.code == ErrorCode::InvalidOp);
        prop_assert!(refused, "seq 0: {:?}", decision);
    } else if sub.seq <= last {
        let resubmission = matches!(
            decision,
            Decision::Duplicate { .. } | Decision::Reject { new: false, .. } | Decision::NeedOutcome
        );
        prop_assert!(resubmission, "resubmission of seq {} (last {}): {:?}", sub.seq, last, decision);
    } else {
        let expected = if sub.seq != last + 1 {
            Some((ErrorCode::InvalidOp, "skips ahead"))
        } else if sub.base > before.version {
            Some((ErrorCode::InvalidOp, "is ahead of the document"))
        } else if !lag_ok {
            Some((ErrorCode::InvalidOp, "versions behind the document"))
        } else if inserted > LIMITS.max_op_insert_chars {
            Some((ErrorCode::TooLarge, "characters; the limit is"))
        } else {
            None
        };
        if let Some((code, words)) = expected {
            let Decision::Reject { rejection, new: true } = decision else {
                return Err(TestCaseError::fail(format!("expected a new {code} refusal, got {decision:?}")));
            };
            prop_assert_eq!(rejection.code, code);
            prop_assert!(rejection.message.contains(words), "{}", rejection.message);
        } else if honest && fit == Fit::Base {
            // An honest op on an honest history: it commits unless the document would grow too long.
            let fine = match decision {
                Decision::Commit(_) | Decision::NeedHistory { .. } => true,
                Decision::Reject { rejection, new: true } => rejection.code == ErrorCode::TooLarge,
                _ => false,
            };
            prop_assert!(fine, "an honest op was not committed: {:?}", decision);
        }
    }

    match decision {
        Decision::Commit(event) => {
            prop_assert_eq!(last.checked_add(1), Some(sub.seq));
            prop_assert_eq!((&event.doc, &event.client, event.seq), (&sub.doc, &sub.client, sub.seq));
            prop_assert_eq!(event.version, before.version + 1);
            prop_assert!(inserted <= LIMITS.max_op_insert_chars);
            let applied =
                event.op.apply(&before.text).expect("a committed op fits the text it was applied to");
            prop_assert_eq!(&after.text, &applied);
            prop_assert!(after.text.chars().count() <= LIMITS.max_document_chars);
            let mut expected = before.clone();
            expected.version = event.version;
            expected.text = applied;
            expected.clients.insert(
                sub.client.clone(),
                ClientRecord { seq: sub.seq, outcome: Outcome::Committed { version: event.version } },
            );
            expected.window.push((sub.client.clone(), sub.seq, event.op.clone()));
            // The window may have dropped durable entries from its front, nothing else.
            let dropped = (after.window_start - before.window_start) as usize;
            expected.window.drain(..dropped);
            expected.window_start = after.window_start;
            prop_assert_eq!(after, &expected);
            prop_assert!(
                after.window.len() <= LIMITS.history_window || after.window_start == after.durable_version
            );
        }
        Decision::Reject { rejection, new: true } => {
            prop_assert!(sub.seq > last, "a resubmission was stored again");
            prop_assert_eq!(
                (&rejection.doc, &rejection.client, rejection.seq),
                (&sub.doc, &sub.client, sub.seq)
            );
            prop_assert_eq!(rejection.at_version, before.version);
            prop_assert!(
                matches!(rejection.code, ErrorCode::InvalidOp | ErrorCode::TooLarge),
                "{:?}",
                rejection
            );
            // Only the seq is used up.
            let mut expected = before.clone();
            let outcome = Outcome::Rejected { code: rejection.code, message: rejection.message.clone() };
            expected.clients.insert(sub.client.clone(), ClientRecord { seq: sub.seq, outcome });
            prop_assert_eq!(after, &expected, "a refusal changed more than the client's seq");
        }
        Decision::Reject { rejection, new: false } => {
            prop_assert_eq!(after, before, "a repeated refusal changed the state");
            prop_assert_eq!(rejection.at_version, before.version);
            if honest && sub.seq != 0 && sub.seq <= last {
                match log.outcomes.get(&(sub.client.clone(), sub.seq)) {
                    Some(Outcome::Rejected { code, message }) => {
                        prop_assert_eq!((&rejection.code, &rejection.message), (code, message));
                    }
                    Some(Outcome::Committed { .. }) => {
                        return Err(TestCaseError::fail(format!(
                            "committed seq {} refused: {rejection:?}",
                            sub.seq
                        )));
                    }
                    None => prop_assert!(rejection.message.contains("already used"), "{}", rejection.message),
                }
            }
        }
        Decision::Duplicate { version } => {
            prop_assert_eq!(after, before, "a duplicate changed the state");
            if honest {
                let stored = log.outcomes.get(&(sub.client.clone(), sub.seq));
                prop_assert_eq!(stored, Some(&Outcome::Committed { version: *version }));
            }
        }
        Decision::NeedHistory { after: from, up_to } => {
            prop_assert_eq!(after, before, "asking for history changed the state");
            // One page at a time, from the base or from where the pages before it ended.
            prop_assert!(*from >= sub.base && from < up_to && *up_to <= before.window_start);
            prop_assert!(up_to - from <= LIMITS.history_window as u64);
        }
        Decision::NeedOutcome => {
            prop_assert_eq!(after, before, "asking for an outcome changed the state");
            prop_assert!(sub.seq < last);
        }
        Decision::NeedClient => {
            return Err(TestCaseError::fail("a document that forgot no client asked for one"));
        }
        Decision::Delete(_) => {
            return Err(TestCaseError::fail("an op deleted the document"));
        }
    }
    Ok(())
}

fn run(actions: Vec<Action>) -> Result<(), TestCaseError> {
    let clients: Vec<ClientId> = (0..4).map(|i| ClientId::parse(&format!("c{i}")).unwrap()).collect();
    let mut state = DocumentState::new(doc());
    let mut log = Log {
        events: vec![],
        rejections: vec![],
        lengths: vec![0],
        outcomes: HashMap::new(),
        snapshot: None,
    };
    for action in actions {
        let (client, seq, base, steps, fit, premature, answer) = match action {
            Action::Durable(behind) => {
                state.mark_durable(state.version().saturating_sub(behind), &LIMITS);
                continue;
            }
            Action::Snapshot(every) => {
                if let Some(snapshot) = state.snapshot_due(every) {
                    prop_assert_eq!(snapshot.version, state.version());
                    prop_assert_eq!(&snapshot.text, &state.text().to_string());
                    log.snapshot = Some(snapshot);
                }
                continue;
            }
            Action::Submit { client, seq, base, steps, fit, premature, answer } => {
                (client, seq, base, steps, fit, premature, answer)
            }
        };
        let client = clients[client].clone();
        let last = state.clients.get(&client).map_or(0, |r| r.record.seq);
        let base = base.resolve(state.version());
        let len = match fit {
            Fit::Base => Some(log.lengths.get(base as usize).copied().unwrap_or(state.text().len_chars())),
            Fit::Head => Some(state.text().len_chars()),
            Fit::Raw => None,
        };
        let sub = Submission {
            author: String::new(),
            delete_document: false,
            doc: doc(),
            client,
            seq: seq.resolve(last),
            base,
            op: build(&steps, len),
        };

        let before = view(&state);
        let first = match premature {
            None => state.decide(&sub, &LIMITS, Fetched::Nothing),
            Some(junk) => decide_with(&mut state, &sub, &log, None, junk),
        };
        let mut honest = premature.is_none();
        check(&before, &view(&state), &sub, &first, &log, honest, fit)?;
        let decision = match first {
            Decision::NeedHistory { .. } | Decision::NeedOutcome => {
                honest &= matches!(answer, Answer::Honest);
                // History comes a page at a time: answer until decided (a few pages at most).
                let mut request = first;
                let mut pages = 0;
                loop {
                    let next = decide_with(&mut state, &sub, &log, Some(&request), answer);
                    check(&before, &view(&state), &sub, &next, &log, honest, fit)?;
                    pages += 1;
                    match next {
                        Decision::NeedHistory { .. } if pages < 8 => request = next,
                        next => break next,
                    }
                }
            }
            decided => decided,
        };
        match decision {
            Decision::Commit(event) => {
                log.outcomes
                    .insert((event.client.clone(), event.seq), Outcome::Committed { version: event.version });
                log.lengths.push(event.op.target_len());
                log.events.push(event);
            }
            Decision::Reject { rejection, new: true } => {
                let outcome = Outcome::Rejected { code: rejection.code, message: rejection.message.clone() };
                log.outcomes.insert((rejection.client.clone(), rejection.seq), outcome);
                log.rejections.push(rejection);
            }
            _ => {}
        }
    }

    // What was stored loads back to the same document, with and without the latest snapshot.
    let now = view(&state);
    for snapshot in [None, log.snapshot.clone()] {
        let from = snapshot.as_ref().map_or(0, |s| s.version);
        let stored = StoredDocument {
            snapshot,
            events: log.events.iter().filter(|e| e.version > from).cloned().collect(),
            rejections: log.rejections.iter().filter(|r| r.at_version >= from).cloned().collect(),
        };
        let loaded = view(&DocumentState::load(doc(), stored, &LIMITS).expect("the stored history loads"));
        prop_assert_eq!(
            (&loaded.text, loaded.version, &loaded.clients),
            (&now.text, now.version, &now.clients)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_submissions_never_panic_and_refusals_only_use_up_the_seq(
        actions in prop::collection::vec(action(), 1..80)
    ) {
        run(actions)?;
    }
}
