//! `./dev bench-serve`: p50/p99 of every dashboard query (PostgreSQL variant, panels and the
//! variable) through `tickerlake serve`, for a 24-hour, a 7-day and a whole-year range ending at
//! the lake's last hour, with one client and with 20 concurrent clients; then 20 viewers loading
//! every dashboard twice with the whole year in range (per query p50/p99); and the server's peak
//! RSS at the end (VmHWM).
//!
//! Usage: bench_serve TICKERLAKE_BIN LAKE [ITERATIONS_SINGLE] [ITERATIONS_PER_CONCURRENT_CLIENT] [NAME_FILTER]
//! (the lake must be processed; `./dev bench-serve` builds a year of 3,000 symbols first).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tickerlake::serve::grafana::{self, Flavor};
use tokio::io::{AsyncBufReadExt, BufReader};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn connect(port: u16) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=bench dbname=bench"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (bin, lake) = (&args[1], &args[2]);
    let single: usize = args.get(3).map_or(10, |s| s.parse().unwrap());
    let per_client: usize = args.get(4).map_or(2, |s| s.parse().unwrap());
    let only = args.get(5).cloned().unwrap_or_default();
    let mut child = tokio::process::Command::new(bin)
        .args(["--lake", lake, "serve", "--listen", "127.0.0.1:0", "--query-timeout", "120"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stdout.take().unwrap()).lines().next_line().await.unwrap().unwrap();
    let port: u16 = line.split(';').next().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let client = connect(port).await;
    let last: chrono::NaiveDateTime = client.query_one("SELECT max(\"timestamp\") FROM processed", &[]).await.unwrap().get(0);
    let first: chrono::NaiveDateTime = client.query_one("SELECT min(\"timestamp\") FROM processed", &[]).await.unwrap().get(0);
    let rows: i64 = client.query_one("SELECT count(*) FROM processed", &[]).await.unwrap().get(0);
    let to: DateTime<Utc> = last.and_utc() + TimeDelta::minutes(1);
    println!("lake {lake}: {rows} rows from {first} to {last}; {single} runs single-client, 20 clients x {per_client} runs");
    let files: Vec<_> = grafana::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("queries"))
        .unwrap()
        .into_iter()
        .filter(|f| f.get("dashboard").is_some() && f.is_for(Flavor::Postgres) && f.name.contains(only.as_str()))
        .collect();
    let vars = BTreeMap::from([("symbol".to_owned(), "BTCUSDT".to_owned())]);
    let ranges = [("24h", to - TimeDelta::hours(24)), ("7d", to - TimeDelta::days(7)), ("year", first.and_utc() - TimeDelta::minutes(1))];
    println!("{:<34} {:>5} | {:>9} {:>9} | {:>9} {:>9}", "query", "range", "1:p50 ms", "1:p99 ms", "20:p50 ms", "20:p99 ms");
    for f in &files {
        for (label, from) in ranges {
            let sql = grafana::expand(&f.sql, Flavor::Postgres, from, to, &vars).unwrap();
            client.simple_query(&sql).await.unwrap(); // warm-up
            let mut one = Vec::new();
            for _ in 0..single {
                let t = Instant::now();
                client.simple_query(&sql).await.unwrap();
                one.push(t.elapsed());
            }
            one.sort();
            let mut tasks = Vec::new();
            for _ in 0..20 {
                let sql = sql.clone();
                tasks.push(tokio::spawn(async move {
                    let c = connect(port).await;
                    let mut times = Vec::new();
                    for _ in 0..per_client {
                        let t = Instant::now();
                        c.simple_query(&sql).await.unwrap();
                        times.push(t.elapsed());
                    }
                    times
                }));
            }
            let mut many = Vec::new();
            for t in tasks {
                many.extend(t.await.unwrap());
            }
            many.sort();
            println!(
                "{:<34} {:>5} | {:>9} {:>9} | {:>9} {:>9}",
                f.name.trim_end_matches(".sql"),
                label,
                ms(percentile(&one, 0.5)),
                ms(percentile(&one, 0.99)),
                ms(percentile(&many, 0.5)),
                ms(percentile(&many, 0.99))
            );
        }
    }
    // 20 viewers with the whole year in range, as Grafana runs a dashboard: every panel and
    // variable query of every dashboard, twice each, over the simple protocol; per query p50/p99.
    let (from, viewers, rounds) = (first.and_utc() - TimeDelta::minutes(1), 20, 2);
    println!("\n{viewers} viewers, whole year, every dashboard query {rounds} times each (simple protocol)");
    println!("{:<34} | {:>9} {:>9}", "query", "p50 ms", "p99 ms");
    let queries: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.name.trim_end_matches(".sql").to_owned(), grafana::expand(&f.sql, Flavor::Postgres, from, to, &vars).unwrap()))
        .collect();
    let mut tasks = Vec::new();
    for v in 0..viewers {
        let queries = queries.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect(port).await;
            let mut times: Vec<(String, Duration)> = Vec::new();
            for round in 0..rounds {
                // Each viewer starts at another panel, as page loads interleave.
                for i in 0..queries.len() {
                    let (name, sql) = &queries[(i + v + round) % queries.len()];
                    let t = Instant::now();
                    c.simple_query(sql).await.unwrap();
                    times.push((name.clone(), t.elapsed()));
                }
            }
            times
        }));
    }
    let mut by_query: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for t in tasks {
        for (name, d) in t.await.unwrap() {
            by_query.entry(name).or_default().push(d);
        }
    }
    for (name, mut times) in by_query {
        times.sort();
        println!("{:<34} | {:>9} {:>9}", name, ms(percentile(&times, 0.5)), ms(percentile(&times, 0.99)));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id().unwrap())).unwrap_or_default();
    let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap_or("?").trim().to_owned();
    println!("server peak RSS (VmHWM): {peak}");
    child.kill().await.ok();
}
