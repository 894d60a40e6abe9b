//! insta snapshots of what users see and what downstream tools read: the CLI help, the Parquet
//! schema of processed partitions, and query results on fixed data (table, CSV, JSON).

mod common;

use clap::CommandFactory;
use common::{csv, tickerlake, write_raw};
use tickerlake::cli::Cli;

fn help(args: &[&str]) -> String {
    let mut cmd = Cli::command();
    let mut sub = &mut cmd;
    for a in args {
        sub = sub.find_subcommand_mut(a).expect("subcommand");
    }
    sub.render_long_help().to_string()
}

#[test]
fn cli_help() {
    insta::assert_snapshot!("help", help(&[]));
    for sub in ["collect", "process", "query", "run"] {
        insta::assert_snapshot!(format!("help_{sub}"), help(&[sub]));
    }
}

/// Three hours of two symbols across a date boundary.
fn fixed_lake() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let rows = [
        ("2025-05-07 22:00:16.100000+00:00", "96000.00000000", "1800.00000000"),
        ("2025-05-07 23:00:16.200000+00:00", "96500.50000000", "1790.25000000"),
        ("2025-05-08 00:00:16.300000+00:00", "97100.00000000", "1805.75000000"),
        ("2025-05-08 01:00:16.400000+00:00", "96900.00000000", "1810.00000000"),
        ("2025-05-08 02:00:16.500000+00:00", "97300.25000000", "1799.50000000"),
        ("2025-05-08 03:00:16.600000+00:00", "97800.00000000", "1820.00000000"),
    ];
    for (ts, btc, eth) in rows {
        let name = format!("raw_crypto_prices_{}{}{}T{}00.csv", &ts[0..4], &ts[5..7], &ts[8..10], &ts[11..13]);
        write_raw(&lake, &name, &csv(&[("BTCUSDT", btc, ts), ("ETHUSDT", eth, ts), ("ETHBTC", "0.01875000", ts)]));
    }
    let s = lake.to_string_lossy().into_owned();
    (dir, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_schema_and_query_result() {
    let (_tmp, lake) = fixed_lake();
    tickerlake(&lake, &["process"], &[]).await.ok();
    let files = common::glob_parquet(&std::path::Path::new(&lake).join("processed"));
    let rel: Vec<String> = files.iter().map(|f| f.strip_prefix(&lake).unwrap().to_owned()).collect();
    insta::assert_debug_snapshot!("partitions", rel);

    let conn = duckdb::Connection::open_in_memory().unwrap();
    let mut stmt = conn.prepare(&format!("SELECT name, type, repetition_type, logical_type FROM parquet_schema('{}')", files[0])).unwrap();
    let schema: Vec<String> = stmt
        .query_map([], |r| {
            Ok(format!(
                "{} {:?} {:?} {:?}",
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    insta::assert_snapshot!("parquet_schema", schema.join("\n"));

    let out = tickerlake(&lake, &["query", "SELECT date, symbol, timestamp, price, round(moving_avg, 4) AS moving_avg, previous_price, round(price_change_pct, 6) AS price_change_pct FROM processed ORDER BY symbol, timestamp"], &[]).await;
    out.ok();
    insta::assert_snapshot!("query_table", out.stdout);

    // Every format prints timestamps as the raw files and Athena do: space-separated, UTC.
    let sql = "SELECT symbol, timestamp, CAST(timestamp AS TIMESTAMPTZ) AS timestamp_tz FROM processed WHERE symbol = 'BTCUSDT' ORDER BY timestamp LIMIT 2";
    for format in ["csv", "json"] {
        let out = tickerlake(&lake, &["query", "--format", format, sql], &[]).await;
        out.ok();
        insta::assert_snapshot!(format!("query_{format}"), out.stdout);
    }
}
