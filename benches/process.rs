//! `process` on generated lakes (the simulator's walks, written as the collector writes them).
//! `cargo bench --bench process`; sizes via TICKERLAKE_BENCH_SYMBOLS (3000),
//! TICKERLAKE_BENCH_MONTH_HOURS (720) and TICKERLAKE_BENCH_YEAR_HOURS (8760).
//!
//! - full/month: `process --full` of a month of hourly snapshots;
//! - incremental/<history>: one new snapshot added to a processed history of a month and of a
//!   year: the time should not grow with the history.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use tickerlake::lake::{Lake, local::LocalStore};
use tickerlake::process::{ProcessOptions, process};
use tickerlake::simulator::{SimConfig, snapshot_for_hour};
use tickerlake::source::snapshot::snapshot_key;

/// Size from the environment; under `cargo test` (no `--bench` flag) a tiny smoke-test size.
fn env(name: &str, default: usize, smoke: usize) -> usize {
    if !std::env::args().any(|a| a == "--bench") {
        return smoke;
    }
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn start() -> DateTime<Utc> {
    "2025-01-01T00:00:00Z".parse().unwrap()
}

/// Write `hours` hourly snapshots starting at `from` straight into a local lake directory.
fn generate(dir: &Path, config: &SimConfig, from: DateTime<Utc>, hours: usize) {
    for h in 0..hours {
        let hour = from + TimeDelta::hours(h as i64);
        let path = dir.join(snapshot_key(hour));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, snapshot_for_hour(config, hour)).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = SimConfig { symbols: env("TICKERLAKE_BENCH_SYMBOLS", 3000, 20), seed: 42 };
    let month = env("TICKERLAKE_BENCH_MONTH_HOURS", 720, 30);
    let year = env("TICKERLAKE_BENCH_YEAR_HOURS", 8760, 60);

    let mut group = c.benchmark_group("process");
    group.sample_size(10).measurement_time(Duration::from_secs(20));

    let month_dir = tempfile::tempdir().unwrap();
    generate(month_dir.path(), &config, start(), month);
    let lake: Lake = Arc::new(LocalStore::open(month_dir.path()).unwrap());
    group.bench_function(format!("full/{}x{month}h", config.symbols), |b| {
        b.iter(|| rt.block_on(process(&lake, &ProcessOptions { full: true, ..ProcessOptions::default() })).unwrap())
    });

    for history in [month, year] {
        let dir = tempfile::tempdir().unwrap();
        // Build the history in monthly steps so setup memory stays bounded.
        let lake: Lake = Arc::new(LocalStore::open(dir.path()).unwrap());
        let mut done = 0;
        while done < history {
            let n = month.min(history - done);
            generate(dir.path(), &config, start() + TimeDelta::hours(done as i64), n);
            rt.block_on(process(&lake, &ProcessOptions::default())).unwrap();
            done += n;
        }
        let mut next = start() + TimeDelta::hours(history as i64);
        group.bench_function(format!("incremental/1 snapshot onto {history}h"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    generate(dir.path(), &config, next, 1);
                    next += TimeDelta::hours(1);
                    let t = Instant::now();
                    rt.block_on(process(&lake, &ProcessOptions::default())).unwrap();
                    total += t.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
