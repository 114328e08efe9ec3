//! The document state machine on its hot path: deciding one submitted op (transform past the
//! concurrent history, apply to the rope, produce the event), as the partition loop calls it.
//!
//! `cargo bench -p tandem-sequencer --bench document`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tandem_ot::Operation;
use tandem_protocol::records::Submission;
use tandem_protocol::{ClientId, DocId};
use tandem_sequencer::{Decision, DocumentState, Fetched, Limits};

/// An op inserting one character at `pos` of a text of `len` characters.
fn typed(pos: u64, len: u64) -> Operation {
    serde_json::from_value(match (pos, len - pos) {
        (0, 0) => serde_json::json!(["x"]),
        (0, rest) => serde_json::json!(["x", rest]),
        (pos, 0) => serde_json::json!([pos, "x"]),
        (pos, rest) => serde_json::json!([pos, "x", rest]),
    })
    .expect("a valid op")
}

/// A document of `chars` characters, built by one client typing at the end.
fn document(chars: u64, limits: &Limits) -> (DocumentState, ClientId) {
    let doc = DocId::parse("bench/doc").expect("id");
    let writer = ClientId::parse("writer").expect("id");
    let mut state = DocumentState::new(doc.clone());
    let mut seed = Operation::new();
    seed.insert(&"a".repeat(chars as usize));
    let sub = Submission {
        author: String::new(),
        delete_document: false,
        doc,
        client: writer.clone(),
        seq: 1,
        base: 0,
        op: seed,
    };
    let Decision::Commit(event) = state.decide(&sub, limits, Fetched::Nothing) else {
        panic!("seed op refused")
    };
    state.mark_durable(event.version, limits);
    (state, writer)
}

fn decide(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    for chars in [1_000u64, 100_000] {
        // One op on the current version: no transform, apply to the rope, record the client's seq.
        group.bench_function(format!("at head, {chars} chars"), |b| {
            let (state, writer) = document(chars, &limits);
            b.iter_batched(
                || state.clone(),
                |mut state| {
                    let sub = Submission {
                        author: String::new(),
                        delete_document: false,
                        doc: state.doc().clone(),
                        client: writer.clone(),
                        seq: 2,
                        base: state.version(),
                        op: typed(chars / 2, chars),
                    };
                    state.decide(&sub, &limits, Fetched::Nothing)
                },
                BatchSize::LargeInput,
            );
        });
        // An op 10 versions behind (a busy document): transformed past 10 committed ops first.
        group.bench_function(format!("10 behind, {chars} chars"), |b| {
            let (mut state, writer) = document(chars, &limits);
            let base = state.version();
            for seq in 2..12u64 {
                let len = chars + seq - 2;
                let sub = Submission {
                    author: String::new(),
                    delete_document: false,
                    doc: state.doc().clone(),
                    client: writer.clone(),
                    seq,
                    base: state.version(),
                    op: typed(len, len),
                };
                let Decision::Commit(event) = state.decide(&sub, &limits, Fetched::Nothing) else { panic!() };
                state.mark_durable(event.version, &limits);
            }
            let other = ClientId::parse("other").expect("id");
            let probe = Submission {
                author: String::new(),
                delete_document: false,
                doc: state.doc().clone(),
                client: other.clone(),
                seq: 1,
                base,
                op: typed(0, chars),
            };
            let decision = state.clone().decide(&probe, &limits, Fetched::Nothing);
            assert!(matches!(decision, Decision::Commit(_)), "the benchmarked op must commit: {decision:?}");
            b.iter_batched(
                || state.clone(),
                |mut state| {
                    let sub = Submission {
                        author: String::new(),
                        delete_document: false,
                        doc: state.doc().clone(),
                        client: other.clone(),
                        seq: 1,
                        base,
                        op: typed(0, chars),
                    };
                    state.decide(&sub, &limits, Fetched::Nothing)
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
