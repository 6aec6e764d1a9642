//! Loading and validating the shipped specs: what `weft` pays at start-up for each command that
//! needs the catalogue. Run with `cargo bench -p weft-core --bench load`.

use criterion::{Criterion, criterion_group, criterion_main};
use weft_core::builtin;

fn load(c: &mut Criterion) {
    c.bench_function("load and validate both specs", |b| {
        b.iter(|| {
            let reports = builtin::load_all();
            assert!(reports.iter().all(|r| r.spec.is_some()));
            std::hint::black_box(reports)
        })
    });
    for (name, text) in builtin::SPECS {
        c.bench_function(&format!("load {name}"), |b| {
            b.iter(|| std::hint::black_box(weft_core::load_str(name, text).spec.is_some()))
        });
    }
}

criterion_group!(benches, load);
criterion_main!(benches);
