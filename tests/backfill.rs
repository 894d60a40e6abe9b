//! `backfill` end to end: the real binary against the simulator's REST API and archive, over a
//! history with every irregularity of `Scenario::standard` (late listing, delisting, maintenance,
//! zero-trade hours, missing monthly and daily files, headers, the microsecond switch of
//! 2025-01-01, an archive behind) plus injected faults (truncated and corrupt downloads, 429s),
//! on the local lake and on S3 (ministack). The oracle is the simulator's model of its klines
//! (`Simulator::expected_snapshot`); the files' contents are also checked directly.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use common::emulator::{Emulator, Kind, s3_client};
use common::{Out, tickerlake, tree};
use tickerlake::simulator::{Fault, FaultTarget, Scenario, SimConfig, Simulator};
use tickerlake::source::snapshot::snapshot_key;

const SYMBOLS: usize = 24; // 12 USDT pairs
const FROM: &str = "2024-11-25";
const TO: &str = "2025-02-04";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn day(s: &str) -> DateTime<Utc> {
    t(&format!("{s}T00:00:00Z"))
}

/// The standard scenario around 2025-01-01, with REST pages of 200 klines so that a month from
/// REST takes several.
async fn sim() -> Simulator {
    let scenario = Scenario { klines_page_limit: 200, ..Scenario::standard(SYMBOLS, t("2025-01-01T00:00:00Z")) };
    Simulator::start_with(SimConfig { symbols: SYMBOLS, seed: 7 }, scenario, 0).await.unwrap()
}

/// The transient faults every archive backfill here meets: a download cut off halfway, one with
/// a byte changed, an archive 429, and a REST 429.
fn inject_faults(sim: &Simulator) {
    sim.inject_at(FaultTarget::Archive, Fault::Truncated, 1);
    sim.inject_at(FaultTarget::Archive, Fault::Corrupt, 1);
    sim.inject_at(FaultTarget::Archive, Fault::Status { code: 429, retry_after: Some(1) }, 1);
    sim.inject_at(FaultTarget::Api, Fault::Status { code: 429, retry_after: Some(1) }, 1);
}

fn lake_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake").to_string_lossy().into_owned();
    (dir, lake)
}

async fn backfill(lake: &str, sim: &Simulator, archive: bool, range: &[&str], env: &[(&str, &str)]) -> Out {
    let url = sim.url();
    let archive_url = if archive { url.clone() } else { "none".to_owned() };
    let mut args = vec!["backfill", "--binance-url", &url, "--archive-url", &archive_url, "--retry-ms", "50"];
    args.extend_from_slice(range);
    tickerlake(lake, &args, env).await
}

/// Every slot of `[from, to)` and its expected snapshot (`None`: no pair has a kline for it).
fn expected(sim: &Simulator, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(DateTime<Utc>, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut slot = from;
    while slot < to {
        out.push((slot, sim.expected_snapshot(slot, "USDT").map(|b| b.to_vec())));
        slot += TimeDelta::hours(1);
    }
    out
}

/// The files under raw/ of a local lake, by key.
fn raw(lake: &str) -> BTreeMap<String, Vec<u8>> {
    if !Path::new(lake).join("raw").exists() {
        return BTreeMap::new();
    }
    tree(Path::new(lake)).into_iter().filter(|(k, _)| k.starts_with("raw/")).collect()
}

/// Every file of a local lake but the late-raw note (its text says when it was written).
fn lake_tree(lake: &str) -> BTreeMap<String, Vec<u8>> {
    tree(Path::new(lake)).into_iter().filter(|(k, _)| k != tickerlake::lake::LATE_RAW_NOTE).collect()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

/// The price of `symbol` in a snapshot, if it is there.
fn price_in<'a>(snapshot: &'a [u8], symbol: &str) -> Option<&'a str> {
    text(snapshot).lines().find_map(|l| l.strip_prefix(&format!("{symbol},"))?.split(',').next())
}

/// The number in the summary line before `what` (e.g. "snapshot(s) written").
fn summary_count(out: &Out, what: &str) -> u64 {
    let line = out.stdout.lines().find(|l| l.starts_with("backfilled ")).unwrap_or_else(|| panic!("no summary line: {}", out.stdout));
    let before = line.split(what).next().unwrap();
    before.rsplit([' ', ':', ',', '(']).find(|w| !w.is_empty()).unwrap().parse().unwrap_or_else(|_| panic!("{what} in {line}"))
}

/// A snapshot as the collector (or the original pipeline, minute suffix) wrote it.
const COLLECTED: &str = "symbol,price,timestamp\nBTCUSDT,97000.50000000,2024-12-10 03:16:32.801588+00:00\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_backfill_through_every_fault_writes_exactly_the_expected_snapshots() {
    let sim = sim().await;
    inject_faults(&sim);
    let (_tmp, lake) = lake_dir();
    common::write_raw(Path::new(&lake), "raw_crypto_prices_20241210T0316.csv", COLLECTED);
    let out = backfill(&lake, &sim, true, &["--from", FROM, "--to", TO], &[]).await;
    out.ok();
    assert_eq!((sim.pending_faults(FaultTarget::Archive), sim.pending_faults(FaultTarget::Api)), (0, 0), "every fault was met");
    assert!(out.stderr.contains("broke off") && out.stderr.contains("does not match its .CHECKSUM"), "{}", out.stderr);

    let files = raw(&lake);
    let collected_key = "raw/raw_crypto_prices_20241210T0316.csv";
    assert_eq!(text(&files[collected_key]), COLLECTED, "a collected snapshot is left as it was");
    let mut want = BTreeMap::new();
    let mut without_data = Vec::new();
    for (slot, snapshot) in expected(&sim, day(FROM), day(TO)) {
        match snapshot {
            _ if slot == t("2024-12-10T03:00:00Z") => {}
            Some(s) => drop(want.insert(snapshot_key(slot), s)),
            None => without_data.push(slot),
        }
    }
    assert_eq!(
        without_data,
        [t("2025-01-04T03:00:00Z"), t("2025-01-04T04:00:00Z"), t("2025-01-04T05:00:00Z")],
        "the three maintenance hours have no kline"
    );
    let mut got = files.clone();
    got.remove(collected_key);
    assert_eq!(got.len(), want.len(), "one file per hour with data, none for the maintenance hours");
    for (key, bytes) in &want {
        assert!(got.get(key) == Some(bytes), "{key}:\n got {:?}\nwant {:?}", got.get(key).map(|b| text(b)), text(bytes));
    }
    assert_eq!(summary_count(&out, "snapshot(s) written"), want.len() as u64);
    assert_eq!(summary_count(&out, "hour(s) already present"), 1);
    assert_eq!(summary_count(&out, "hour(s) without data"), 3);

    // What the scenario did, read from the files themselves.
    let at = |s: &str| &files[&snapshot_key(t(s))];
    assert_eq!(price_in(at("2024-12-15T05:00:00Z"), "ETHUSDT"), None, "not listed yet");
    assert!(price_in(at("2024-12-15T06:00:00Z"), "ETHUSDT").is_some(), "its first kline opens at 05:00");
    assert!(price_in(at("2025-01-10T14:00:00Z"), "BNBUSDT").is_some(), "a delisted (BREAK) pair keeps its history");
    assert_eq!(price_in(at("2025-01-10T15:00:00Z"), "BNBUSDT"), None, "and has none after its last kline");
    // Its klines opening 00:00 to 05:00 had no trades: slots 00:00 (the close before them) to
    // 06:00 show one price, 07:00 a new one.
    let sol: Vec<_> = (0..=7).map(|h| price_in(at(&format!("2024-12-27T{h:02}:00:00Z")), "SOLUSDT").unwrap()).collect();
    assert!(sol[..7].windows(2).all(|w| w[0] == w[1]) && sol[6] != sol[7], "zero-trade klines repeat the last close: {sol:?}");
    assert!(price_in(at("2024-12-24T12:00:00Z"), "XRPUSDT").is_some(), "days missing from the archive come from REST");
    for s in ["2024-12-31T23:00:00Z", "2025-01-01T00:00:00Z", "2025-01-01T01:00:00Z"] {
        assert!(
            text(at(s)).lines().skip(1).all(|l| l.ends_with(&format!("{} {}.000000+00:00", &s[..10], &s[11..19]))),
            "{s} stamped on the hour"
        );
        assert_eq!(text(at(s)).lines().count(), 1 + 12, "{s}: all 12 pairs, through the switch to microseconds");
    }
    let markers: Vec<_> = tree(Path::new(&lake)).into_keys().filter(|k| k.starts_with("_tickerlake/backfill/")).collect();
    assert_eq!(markers, ["_tickerlake/backfill/no-klines/USDT/20250104T03-20250104T06"]);
    let note = std::fs::read_to_string(Path::new(&lake).join(tickerlake::lake::LATE_RAW_NOTE)).unwrap();
    assert!(note.starts_with("backfill wrote snapshots of 2025-02"), "the hourly service is told: {note}");

    // The same run again: no request to Binance, nothing written.
    let (api, archive) = (sim.requests(), sim.archive_requests());
    let before = tree(Path::new(&lake));
    let again = backfill(&lake, &sim, true, &["--from", FROM, "--to", TO], &[]).await;
    again.ok();
    assert_eq!((sim.requests(), sim.archive_requests()), (api, archive), "{}", again.stdout);
    assert_eq!(summary_count(&again, "snapshot(s) written"), 0);
    assert!(tree(Path::new(&lake)) == before, "the second run changed the lake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_path_and_the_rest_api_give_the_same_lake() {
    let sim = sim().await;
    inject_faults(&sim);
    let (_a, from_archive) = lake_dir();
    let (_b, from_rest) = lake_dir();
    backfill(&from_archive, &sim, true, &["--from", FROM, "--to", TO], &[]).await.ok();
    let archive_requests = sim.archive_requests();
    assert!(archive_requests > 0);
    let rest = backfill(&from_rest, &sim, false, &["--from", FROM, "--to", TO], &[]).await;
    rest.ok();
    assert_eq!(sim.archive_requests(), archive_requests, "--archive-url none never asks the archive");
    assert_eq!(summary_count(&rest, "archive file(s)"), 0);
    let (a, b) = (lake_tree(&from_archive), lake_tree(&from_rest));
    assert!(a.len() > 1600, "{}", a.len());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a == b, "same bytes from either source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_mid_run_then_run_again_equals_an_uninterrupted_one() {
    common::require_fault_injection();
    let sim = sim().await;
    let (_a, whole) = lake_dir();
    let (_b, killed) = lake_dir();
    backfill(&whole, &sim, true, &["--from", FROM, "--to", TO], &[]).await.ok();
    let whole_requests = sim.archive_requests();
    // Killed (abort: no clean-up) right after its 900th snapshot, inside January's klines.
    let crashed = backfill(&killed, &sim, true, &["--from", FROM, "--to", TO], &[("TICKERLAKE_FAILPOINT", "backfill-written-900")]).await;
    assert!(crashed.code != Some(0) && crashed.stderr.contains("failpoint backfill-written-900"), "{crashed:?}");
    let left = raw(&killed);
    assert!(left.len() >= 900 && left.len() < raw(&whole).len(), "{}", left.len());
    let whole_raw = raw(&whole);
    assert!(left.iter().all(|(k, v)| whole_raw.get(k) == Some(v)), "every file the killed run left is whole");
    let archive_before = sim.archive_requests();
    let rerun = backfill(&killed, &sim, true, &["--from", FROM, "--to", TO], &[]).await;
    rerun.ok();
    assert_eq!(summary_count(&rerun, "hour(s) already present"), left.len() as u64);
    assert!(lake_tree(&killed) == lake_tree(&whole), "the resumed lake equals the uninterrupted one");
    // The 900th snapshot is in January's klines (November's and December's make 889): those two
    // months, more than half the uninterrupted run's archive requests (December's are daily files
    // for a pair whose monthly one is missing), are not downloaded again.
    let rerun_requests = sim.archive_requests() - archive_before;
    assert!(rerun_requests * 2 < whole_requests, "re-downloaded too much: {rerun_requests} of {whole_requests}");

    // Killed between January's snapshots and its no-data marker (the maintenance gap of the 4th):
    // the re-run fetches only the gap's hours, finds them empty, and marks them as the
    // uninterrupted run does.
    let january = ["--from", "2025-01-02", "--to", "2025-01-06"];
    let (_c, whole_january) = lake_dir();
    let (_d, killed_january) = lake_dir();
    backfill(&whole_january, &sim, true, &january, &[]).await.ok();
    let crashed = backfill(&killed_january, &sim, true, &january, &[("TICKERLAKE_FAILPOINT", "backfill-before-markers")]).await;
    assert!(crashed.code != Some(0) && crashed.stderr.contains("failpoint backfill-before-markers"), "{crashed:?}");
    assert!(!lake_tree(&killed_january).keys().any(|k| k.starts_with("_tickerlake/backfill/")), "killed before the marker");
    let rerun = backfill(&killed_january, &sim, true, &january, &[]).await;
    assert_eq!(summary_count(rerun.ok(), "hour(s) without data"), 3, "{}", rerun.stdout);
    assert!(lake_tree(&killed_january) == lake_tree(&whole_january), "the resumed lake has the marker too");
    assert!(lake_tree(&whole_january).keys().any(|k| k.ends_with("/USDT/20250104T03-20250104T06")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hours_the_archive_has_not_published_yet_come_from_rest() {
    let sim = sim().await; // its archive is two days behind
    let (_a, lake) = lake_dir();
    let (_b, rest_only) = lake_dir();
    let out = backfill(&lake, &sim, true, &["--hours", "100"], &[]).await;
    out.ok();
    let now = tickerlake::source::snapshot::hour_slot(Utc::now());
    let files = raw(&lake);
    // The hour may have turned during the run: the range is the 100 hours before either.
    let matches = |end: DateTime<Utc>| {
        let want: BTreeMap<_, _> =
            expected(&sim, end - TimeDelta::hours(100), end).into_iter().filter_map(|(s, b)| Some((snapshot_key(s), b?))).collect();
        want == files
    };
    assert!(matches(now) || matches(now - TimeDelta::hours(1)), "{:?}", files.keys().collect::<Vec<_>>());
    assert!(summary_count(&out, "archive file(s)") > 0, "the older days come from the archive: {}", out.stdout);
    backfill(&rest_only, &sim, false, &["--hours", "100"], &[]).await.ok();
    let rest_files = raw(&rest_only);
    // The same snapshots from REST only (one hour more or less if the hour turned in between).
    let common = rest_files.iter().filter(|(k, v)| files.get(*k) == Some(*v)).count();
    assert!(common + 1 >= files.len().max(rest_files.len()) && common > 90, "{common} of {} / {}", files.len(), rest_files.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_file_that_never_checks_out_fails_the_run_naming_it() {
    let sim = sim().await;
    let (_tmp, lake) = lake_dir();
    sim.inject_at(FaultTarget::Archive, Fault::Corrupt, 100);
    // From 01:00: the first slot's kline opens at midnight, so June's monthly file is the only one.
    let out = backfill(&lake, &sim, true, &["--from", "2024-06-01T01:00:00Z", "--to", "2024-06-03"], &[]).await;
    out.failed();
    let last = out.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: data/spot/monthly/klines/") && last.contains("-1h-2024-06.zip failed its SHA-256 check 4 times"),
        "{last}"
    );
    assert!(raw(&lake).is_empty(), "nothing half-written");

    let sim = self::sim().await;
    sim.inject_at(FaultTarget::Archive, Fault::Truncated, 100);
    let out = backfill(&lake, &sim, true, &["--from", "2024-06-01T01:00:00Z", "--to", "2024-06-03", "--max-attempts", "2"], &[]).await;
    out.failed();
    let last = out.stderr.lines().last().unwrap();
    assert!(last.starts_with("error: the download of data/spot/monthly/klines/") && last.contains("broke off 2 times"), "{last}");
    assert!(raw(&lake).is_empty(), "nothing half-written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_backfill_paces_itself_within_the_request_weight_limit() {
    // 40 weight per 2-second window: the backfill's 8 pairs x 4 months of klines (weight 2 each)
    // and exchangeInfo (20) need several windows.
    let scenario = Scenario { weight_limit: 40, weight_window_secs: 2, ..Scenario::default() };
    let sim = Simulator::start_with(SimConfig { symbols: 16, seed: 3 }, scenario, 0).await.unwrap();
    let (_tmp, lake) = lake_dir();
    let out = backfill(&lake, &sim, false, &["--from", "2024-01-01", "--to", "2024-04-01"], &[]).await;
    out.ok();
    assert_eq!(sim.requests(), 1 + 8 * 4, "exchangeInfo, then 8 pairs x 4 months of klines (the first slot's is December's)");
    assert_eq!(sim.throttled(), 0, "never over the limit: {}", out.stderr);
    assert_eq!(raw(&lake).len(), (31 + 29 + 31) * 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_one_line_naming_it_and_creates_nothing() {
    let sim = sim().await;
    let (_tmp, lake) = lake_dir();
    let future = (Utc::now() + TimeDelta::days(2)).format("%Y-%m-%d").to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["--from", "2025-01-01T12:30:00Z"], "2025-01-01T12:30:00Z is not on the hour"),
        (&["--from", "last week"], "is neither a date (2024-01-01) nor an RFC 3339 time"),
        (&["--from", "2025-01-02", "--to", "2025-01-01"], "--from 2025-01-02T00:00:00Z is not before --to 2025-01-01T00:00:00Z"),
        (&["--to", future.as_str()], "is after the current hour"),
        (&["--from", "2025-01-01", "--hours", "5"], "cannot be used with"),
        (&["--hours", "5", "--quote", "US DT"], "is not an asset name"),
        (&["--hours", "5", "--quote", "XYZ"], "lists no pair quoted in XYZ"),
    ];
    for (args, message) in cases {
        let out = backfill(&lake, &sim, true, args, &[]).await;
        out.failed();
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty() && raw(&lake).is_empty(), "{args:?}");
    }
    let out = tickerlake(&lake, &["backfill", "--hours", "5", "--archive-url", "ftp://example.com"], &[]).await;
    out.failed();
    assert_eq!(
        out.stderr.trim(),
        "error: --archive-url \"ftp://example.com\" must start with http:// or https:// (or be `none` for the REST API only)"
    );
}

// --- S3 (ministack) ---------------------------------------------------------------------------

fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    common::emulator::aws_env(endpoint, "s3-compatible", 5)
}

/// Every object under `prefix`, by key without the prefix.
async fn s3_objects(endpoint: &str, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let client = s3_client(endpoint);
    let mut out = BTreeMap::new();
    let mut pages = client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        for o in page.unwrap().contents() {
            let key = o.key().unwrap().to_owned();
            let body = client.get_object().bucket(bucket).key(&key).send().await.unwrap().body.collect().await.unwrap();
            out.insert(key.strip_prefix(prefix).unwrap().to_owned(), body.to_vec());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_killed_backfill_resumes_to_the_local_lakes_bytes_and_keeps_collected_snapshots() {
    common::require_fault_injection();
    let Some(emu) = Emulator::start(Kind::Ministack) else { return };
    let env = aws_env(&emu.endpoint());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sim = sim().await;
    inject_faults(&sim);
    let range = ["--from", "2024-12-10", "--to", "2025-01-12"];
    let lake = "s3://tickerlake-backfill/prices";
    tickerlake(lake, &["init"], &env).await.ok();
    // A collected snapshot already in the bucket, in the original pipeline's naming.
    let (_tmp, local) = lake_dir();
    common::write_raw(Path::new(&local), "raw_crypto_prices_20241210T0316.csv", COLLECTED);
    s3_client(&emu.endpoint())
        .put_object()
        .bucket("tickerlake-backfill")
        .key("prices/raw/raw_crypto_prices_20241210T0316.csv")
        .body(COLLECTED.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();

    let mut crash_env = env.clone();
    crash_env.push(("TICKERLAKE_FAILPOINT", "backfill-written-400"));
    let crashed = backfill(lake, &sim, true, &range, &crash_env).await;
    assert!(crashed.code != Some(0) && crashed.stderr.contains("failpoint backfill-written-400"), "{crashed:?}");
    let rerun = backfill(lake, &sim, true, &range, &env).await;
    rerun.ok();
    assert!(summary_count(&rerun, "hour(s) already present") >= 401, "{}", rerun.stdout);
    assert_eq!((sim.pending_faults(FaultTarget::Archive), sim.pending_faults(FaultTarget::Api)), (0, 0));

    backfill(&local, &sim, true, &range, &[]).await.ok();
    let s3 = s3_objects(&emu.endpoint(), "tickerlake-backfill", "prices/").await;
    let local_tree: BTreeMap<String, Vec<u8>> = lake_tree(&local).into_iter().filter(|(k, _)| !k.starts_with("_tickerlake/tmp")).collect();
    let s3_tree: BTreeMap<String, Vec<u8>> =
        s3.into_iter().filter(|(k, _)| k.starts_with("raw/") || k.starts_with("_tickerlake/backfill/")).collect();
    assert!(s3_tree.len() > 700, "{}", s3_tree.len());
    assert_eq!(text(&s3_tree["raw/raw_crypto_prices_20241210T0316.csv"]), COLLECTED, "the collected snapshot is untouched");
    assert_eq!(s3_tree.keys().collect::<Vec<_>>(), local_tree.keys().collect::<Vec<_>>());
    assert!(s3_tree == local_tree, "S3 holds the same bytes as the local lake");
    for (slot, want) in expected(&sim, day("2024-12-10"), day("2025-01-12")) {
        if slot != t("2024-12-10T03:00:00Z") {
            assert_eq!(s3_tree.get(&snapshot_key(slot)), want.as_ref(), "{slot}");
        }
    }

    let (api, archive) = (sim.requests(), sim.archive_requests());
    let again = backfill(lake, &sim, true, &range, &env).await;
    again.ok();
    assert_eq!(summary_count(&again, "snapshot(s) written"), 0);
    assert_eq!((sim.requests(), sim.archive_requests()), (api, archive), "a second run downloads nothing");
}
