//! Replays the editing traces (convert each patch with `from_patch`, apply it to a rope) and
//! reports patches per second; also times `transform` and `compose` on typical small edits.
//!
//! Run with `cargo bench -p tandem-ot --bench traces`.

#[path = "../tests/common/traces.rs"]
mod traces;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use tandem_ot::Operation;

fn replay_traces(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay");
    // A replay of the longest trace takes a good part of a second; flat sampling with few samples
    // keeps the whole run to a few seconds per trace.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (name, trace) in traces::load_all() {
        group.throughput(Throughput::Elements(trace.patch_count() as u64));
        group.bench_function(&name, |b| {
            b.iter(|| traces::replay(black_box(&trace)).expect("trace replays"));
        });
    }
    group.finish();
}

/// A 10,000-character document with two users typing and deleting a few characters apart: the
/// shape of almost every op the server transforms.
fn small_edits(c: &mut Criterion) {
    let len = 10_000;
    let typed = Operation::from_patch(len, 4_000, 0, "hello").expect("in range");
    let deleted = Operation::from_patch(len, 4_010, 3, "").expect("in range");
    let replaced = Operation::from_patch(len, 3_990, 20, "new words").expect("in range");
    let then_typed = Operation::from_patch(typed.target_len(), 4_005, 0, " world").expect("in range");

    let mut group = c.benchmark_group("ops");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("transform insert/delete", |b| {
        b.iter(|| Operation::transform(black_box(&typed), black_box(&deleted)).expect("same base"));
    });
    group.bench_function("transform insert/overlapping replace", |b| {
        b.iter(|| Operation::transform(black_box(&typed), black_box(&replaced)).expect("same base"));
    });
    group.bench_function("compose insert+insert", |b| {
        b.iter(|| black_box(&typed).compose(black_box(&then_typed)).expect("consecutive"));
    });
    group.finish();
}

criterion_group!(benches, replay_traces, small_edits);
criterion_main!(benches);
