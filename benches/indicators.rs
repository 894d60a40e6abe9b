//! Indicator core: `indicators.sql` over generated per-symbol series already in DuckDB.
//! `cargo bench --bench indicators`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duckdb::Connection;

fn load(conn: &Connection, symbols: usize, hours: usize) {
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TEMP TABLE ind_input AS
         SELECT 'S' || s || 'USDT' AS symbol,
                100 + s + sin(h / 7.0) * 3 + (hash(s * 100003 + h) % 1000) / 1000.0 AS price,
                TIMESTAMP '2025-05-01' + INTERVAL (h) HOUR AS \"timestamp\",
                false AS is_carry
         FROM range({symbols}) t(s), range({hours}) u(h)"
    ))
    .unwrap();
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("indicators");
    group.sample_size(10);
    // Under `cargo test` (no `--bench` flag) a tiny smoke-test size.
    let sizes: &[(usize, usize)] = if std::env::args().any(|a| a == "--bench") { &[(3000, 24), (3000, 720)] } else { &[(10, 24)] };
    for &(symbols, hours) in sizes {
        let conn = Connection::open_in_memory().unwrap();
        load(&conn, symbols, hours);
        group.throughput(Throughput::Elements((symbols * hours) as u64));
        group.bench_with_input(BenchmarkId::new("compute", format!("{symbols}x{hours}h")), &conn, |b, conn| {
            b.iter(|| tickerlake::indicators::compute(conn).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
