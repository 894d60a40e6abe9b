//! `./dev bench-serve-s3`: `tickerlake serve` over an S3 lake (ministack) through a day of
//! hourly commits: start time, S3 requests per refresh (changed and unchanged), files fetched and
//! the cache's size after each hour of dashboard use (the Crypto Summary panels over the last 24 h).
//!
//! Usage: bench_serve_s3 TICKERLAKE_BIN S3_LAKE FIRST_NEW_HOUR [HOURS] [SYMBOLS]
//! (the lake must be processed up to the hour before FIRST_NEW_HOUR; the S3 settings come from the
//! environment, as for any tickerlake command).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tickerlake::serve::grafana::{self, Flavor};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The last `serve stats` line's field `name`.
fn stat(log: &Mutex<Vec<String>>, name: &str) -> u64 {
    let lines = log.lock().unwrap();
    let Some(line) = lines.iter().rev().find(|l| l.contains("serve stats")) else { return 0 };
    let field = format!("{name}=");
    line.find(&field).map_or(0, |at| line[at + field.len()..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap_or(0))
}

async fn tl(bin: &str, lake: &str, args: &[&str]) {
    let out = tokio::process::Command::new(bin).arg("--lake").arg(lake).args(args).output().await.unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (bin, lake) = (&args[1], &args[2]);
    let first: DateTime<Utc> = args[3].parse().expect("FIRST_NEW_HOUR as RFC 3339");
    let hours: i64 = args.get(4).map_or(24, |s| s.parse().unwrap());
    let symbols = args.get(5).cloned().unwrap_or_else(|| "3000".to_owned());
    let started = Instant::now();
    let mut child = tokio::process::Command::new(bin)
        .args(["--lake", lake, "serve", "--listen", "127.0.0.1:0", "--query-timeout", "300", "--refresh-secs", "1"])
        .env("RUST_LOG", "tickerlake::serve=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    let line = BufReader::new(child.stdout.take().unwrap()).lines().next_line().await.unwrap().unwrap();
    let start_secs = started.elapsed().as_secs_f64();
    let port: u16 = line.split(';').next().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let (client, conn) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=bench dbname=bench"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "start: {start_secs:.2} s to listening, {} S3 request(s), {} file(s) downloaded",
        stat(&log, "requests"),
        stat(&log, "downloads")
    );
    let files: Vec<_> = grafana::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("queries"))
        .unwrap()
        .into_iter()
        .filter(|f| f.get("dashboard") == Some("Crypto Summary") && f.is_for(Flavor::Postgres))
        .collect();
    let vars = BTreeMap::from([("symbol".to_owned(), "BTCUSDT".to_owned())]);
    println!(
        "{:<22} {:>12} {:>12} {:>10} {:>12} {:>12} {:>10}",
        "hour committed", "refresh req", "fetch req", "fetched", "cache files", "cache MB", "panels ms"
    );
    for h in 0..hours {
        let hour = first + TimeDelta::hours(h);
        let until = hour.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        tl(bin, lake, &["simulate-history", "--hours", "1", "--symbols", &symbols, "--until", &until]).await;
        tl(bin, lake, &["process"]).await;
        // Past the refresh interval: the next query looks at the lake (the manifest changed).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let before = stat(&log, "requests");
        let downloads_before = stat(&log, "downloads");
        client.simple_query("SELECT 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refresh = stat(&log, "requests") - before;
        let (to, from) = (hour + TimeDelta::minutes(1), hour - TimeDelta::hours(24));
        let t = Instant::now();
        let before = stat(&log, "requests");
        for f in &files {
            let sql = grafana::expand(&f.sql, Flavor::Postgres, from, to, &vars).unwrap();
            client.simple_query(&sql).await.unwrap();
        }
        let panels = t.elapsed().as_secs_f64() * 1000.0;
        tokio::time::sleep(Duration::from_millis(100)).await;
        println!(
            "{:<22} {:>12} {:>12} {:>10} {:>12} {:>12.1} {:>10.0}",
            until,
            refresh,
            stat(&log, "requests") - before,
            stat(&log, "downloads") - downloads_before,
            stat(&log, "files"),
            stat(&log, "bytes") as f64 / 1048576.0,
            panels
        );
    }
    // A refresh with nothing new.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = stat(&log, "requests");
    client.simple_query("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("unchanged lake: {} S3 request(s) per refresh", stat(&log, "requests") - before);
    child.kill().await.ok();
}
