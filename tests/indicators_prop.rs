//! Property tests of the indicator core: the DuckDB SQL against a plain-Rust reference of the
//! original job's semantics, and incremental processing (random batches, late ones included)
//! against a full recompute, bit for bit.

mod common;

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, TimeDelta, Utc};
use common::{Row, processed_rows};
use proptest::prelude::*;
use tickerlake::lake::{Lake, local::LocalStore};
use tickerlake::process::{ProcessOptions, process};

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap());

const SYMBOLS: &[&str] = &["AUSDT", "BUSDT", "CUSDT", "DUSDT", "XBTC", "YETH"];

#[derive(Debug, Clone)]
struct Input {
    symbol: &'static str,
    ts: DateTime<Utc>,
    price_text: String,
}

fn origin() -> DateTime<Utc> {
    "2025-05-08T00:00:00Z".parse().unwrap()
}

fn price_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("0.00000000".to_owned()),
        1 => (1u32..100_000).prop_map(|p| format!("-{}.{:08}", p / 1000, p % 1000)),
        2 => (1u64..10_000).prop_map(|p| format!("0.{p:08}")),
        6 => (1u64..10_000_000_000_000).prop_map(|p| format!("{}.{:08}", p / 100_000_000, p % 100_000_000)),
    ]
}

fn input_row() -> impl Strategy<Value = Input> {
    // Hours over 4 days with gaps, and only two minute values, so timestamps tie often.
    (0..SYMBOLS.len(), 0i64..96, prop_oneof![Just(0i64), Just(30)], price_text()).prop_map(|(s, h, m, price_text)| Input {
        symbol: SYMBOLS[s],
        ts: origin() + TimeDelta::hours(h) + TimeDelta::minutes(m),
        price_text,
    })
}

/// Rows split into 1..10 raw files ("snapshots"), in a random arrival order. A symbol may appear
/// twice in one file: only its first row counts (the others are quarantined).
fn batches() -> impl Strategy<Value = Vec<Vec<Input>>> {
    prop::collection::vec(prop::collection::vec(input_row(), 0..16), 1..10)
}

fn to_csv(rows: &[Input]) -> String {
    let mut s = String::from("symbol,price,timestamp\n");
    for r in rows {
        s.push_str(&format!("{},{},{}\n", r.symbol, r.price_text, r.ts.format("%Y-%m-%d %H:%M:%S%.6f+00:00")));
    }
    s
}

/// The original job's semantics, written plainly, on one row per symbol and snapshot (its first).
fn reference(batches: &[Vec<Input>]) -> Vec<Row> {
    let firsts = batches.iter().flat_map(|b| b.iter().enumerate().filter(|(i, r)| !b[..*i].iter().any(|e| e.symbol == r.symbol)).map(|(_, r)| r));
    let mut kept: Vec<(&str, i64, f64)> = firsts
        .map(|r| (r.symbol, r.ts.timestamp_micros(), r.price_text.parse::<f64>().unwrap()))
        .filter(|(s, _, p)| s.ends_with("USDT") && *p > 0.0)
        .collect();
    kept.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)).then(a.2.total_cmp(&b.2)));
    let mut out = Vec::new();
    for (i, &(symbol, ts_us, price)) in kept.iter().enumerate() {
        let history: Vec<f64> = kept[..=i].iter().rev().take_while(|r| r.0 == symbol).take(5).map(|r| r.2).collect();
        let previous = history.get(1).copied();
        out.push(Row {
            date: DateTime::<Utc>::from_timestamp_micros(ts_us).unwrap().format("%Y-%m-%d").to_string(),
            symbol: symbol.to_owned(),
            ts_us,
            price,
            moving_avg: history.iter().sum::<f64>() / history.len() as f64,
            previous_price: previous,
            price_change_pct: previous.map(|p| (price - p) / p * 100.0),
        });
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
}

fn new_lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake: Lake = Arc::new(LocalStore::open(dir.path()).unwrap());
    (dir, lake)
}

fn add_file(dir: &std::path::Path, n: usize, rows: &[Input]) {
    common::write_raw(dir, &format!("raw_crypto_prices_batch{n:03}.csv"), &to_csv(rows));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn sql_matches_reference(batches in batches()) {
        let (dir, lake) = new_lake();
        for (n, b) in batches.iter().enumerate() {
            add_file(dir.path(), n, b);
        }
        RT.block_on(process(&lake, &ProcessOptions { full: true, ..ProcessOptions::default() })).unwrap();
        let got = processed_rows(dir.path());
        let want = reference(&batches);
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!((&g.date, &g.symbol, g.ts_us, g.price), (&w.date, &w.symbol, w.ts_us, w.price));
            prop_assert_eq!(g.previous_price, w.previous_price);
            prop_assert!(close(g.moving_avg, w.moving_avg), "moving_avg {} vs {}", g.moving_avg, w.moving_avg);
            match (g.price_change_pct, w.price_change_pct) {
                (Some(a), Some(b)) => prop_assert!(close(a, b), "pct {} vs {}", a, b),
                (a, b) => prop_assert_eq!(a, b),
            }
        }
    }

    #[test]
    fn incremental_batches_equal_full_recompute(batches in batches(), order in any::<u64>()) {
        // Arrival order is random, so later batches often carry older timestamps (late data).
        let mut arrival: Vec<usize> = (0..batches.len()).collect();
        let mut seed = order;
        for i in (1..arrival.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            arrival.swap(i, (seed >> 33) as usize % (i + 1));
        }
        let (inc_dir, inc_lake) = new_lake();
        for &n in &arrival {
            add_file(inc_dir.path(), n, &batches[n]);
            RT.block_on(process(&inc_lake, &ProcessOptions::default())).unwrap();
        }
        let (full_dir, full_lake) = new_lake();
        for (n, b) in batches.iter().enumerate() {
            add_file(full_dir.path(), n, b);
        }
        RT.block_on(process(&full_lake, &ProcessOptions { full: true, ..ProcessOptions::default() })).unwrap();
        // The same full rebuild worked through one raw file per chunk (how memory stays bounded).
        let (chunked_dir, chunked_lake) = new_lake();
        for (n, b) in batches.iter().enumerate() {
            add_file(chunked_dir.path(), n, b);
        }
        let one_file_per_chunk = ProcessOptions { full: true, chunk_bytes: Some(1), ..ProcessOptions::default() };
        RT.block_on(process(&chunked_lake, &one_file_per_chunk)).unwrap();
        let inc = processed_rows(inc_dir.path());
        let full = processed_rows(full_dir.path());
        // Bit-identical values (f64 PartialEq, no NaNs are produced), same rows, same partitions.
        prop_assert_eq!(&inc, &full);
        prop_assert_eq!(&processed_rows(chunked_dir.path()), &full);
        prop_assert_eq!(common::glob_parquet(&inc_dir.path().join("processed")).len(), common::glob_parquet(&full_dir.path().join("processed")).len());
        // And a re-run with nothing new changes nothing.
        let before = common::tree(inc_dir.path());
        RT.block_on(process(&inc_lake, &ProcessOptions::default())).unwrap();
        let after = common::tree(inc_dir.path());
        prop_assert!(before == after, "a no-op run changed the lake");
    }
}
