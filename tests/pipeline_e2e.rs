//! End to end on the embedded lake: the real `tickerlake` binary against the Binance simulator.

mod common;

use common::{csv, processed_rows, tickerlake, tree, write_raw};
use tickerlake::simulator::{SimConfig, Simulator};

async fn sim() -> Simulator {
    Simulator::start(SimConfig { symbols: 24, seed: 7 }, 0).await.unwrap()
}

fn lake_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake").to_string_lossy().into_owned();
    (dir, lake)
}

fn raw_files(lake: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("{lake}/raw"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_collect_process_query() {
    let sim = sim().await;
    let (_tmp, lake) = lake_dir();
    let url = sim.url();
    tickerlake(&lake, &["backfill", "--hours", "12", "--binance-url", &url, "--archive-url", &url], &[]).await.ok();
    let out = tickerlake(&lake, &["collect", "--binance-url", &url], &[]).await;
    out.ok();
    assert!(out.stdout.contains("collected 24 prices") || out.stdout.contains("already collected"), "{}", out.stdout);
    assert!(raw_files(&lake).len() >= 12, "{:?}", raw_files(&lake));

    let out = tickerlake(&lake, &["process"], &[]).await;
    out.ok();
    assert!(out.stdout.contains("kept"), "{}", out.stdout);

    let rows = processed_rows(std::path::Path::new(&lake));
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.symbol.ends_with("USDT") && r.price > 0.0), "only positive USDT rows are kept");
    // Every symbol with ≥5 rows has a 5-row average on its 5th row.
    let first = &rows[0];
    let same: Vec<_> = rows.iter().filter(|r| r.symbol == first.symbol).collect();
    assert!(same.len() >= 5);
    let want = same[..5].iter().map(|r| r.price).sum::<f64>() / 5.0;
    assert!((same[4].moving_avg - want).abs() <= 1e-9 * want);

    // The original project's Athena queries run as written.
    let out = tickerlake(&lake, &["query", "SELECT * FROM processed LIMIT 10"], &[]).await;
    out.ok();
    assert!(out.stdout.contains("moving_avg") && out.stdout.contains("price_change_pct"), "{}", out.stdout);
    let out = tickerlake(
        &lake,
        &[
            "query",
            "--format",
            "json",
            "SELECT symbol, STDDEV(price_change_pct) AS volatility FROM processed GROUP BY symbol ORDER BY volatility DESC LIMIT 10",
        ],
        &[],
    )
    .await;
    out.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert!(!arr.is_empty() && arr.len() <= 10);
    assert!(arr[0]["volatility"].is_number(), "{}", out.stdout);
    let out =
        tickerlake(&lake, &["query", "--format", "csv", "SELECT count(*) AS n, count(DISTINCT date) AS days FROM processed"], &[]).await;
    out.ok();
    assert_eq!(out.stdout.lines().next(), Some("n,days"));
    assert_eq!(out.stdout.lines().nth(1).unwrap().split(',').next().unwrap().parse::<usize>().unwrap(), rows.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_twice_in_an_hour_keeps_one_snapshot_and_spends_no_weight() {
    let sim = sim().await;
    let (_tmp, lake) = lake_dir();
    tickerlake(&lake, &["collect", "--binance-url", &sim.url()], &[]).await.ok();
    let requests = sim.requests();
    let second = tickerlake(&lake, &["collect", "--binance-url", &sim.url()], &[]).await;
    second.ok();
    // Unless the hour turned between the two calls, the second is a no-op.
    if raw_files(&lake).len() == 1 {
        assert!(second.stdout.contains("already collected"), "{}", second.stdout);
        assert_eq!(sim.requests(), requests, "the second collect must not call Binance");
    }
    let content = std::fs::read_to_string(format!("{lake}/raw/{}", raw_files(&lake)[0])).unwrap();
    assert!(content.starts_with("symbol,price,timestamp\n"));
    let line = content.lines().nth(1).unwrap();
    let fields: Vec<&str> = line.split(',').collect();
    assert_eq!(fields.len(), 3);
    assert_eq!(fields[1].split('.').nth(1).map(str::len), Some(8), "prices kept as Binance sends them: {line}");
    assert!(fields[2].ends_with("+00:00"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_the_original_pipelines_raw_files_unchanged() {
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    write_raw(
        dir,
        "raw_crypto_prices_20250508T0316.csv",
        &csv(&[
            ("BTCUSDT", "97000.50000000", "2025-05-08 03:16:32.801588+00:00"),
            ("ETHBTC", "0.01900000", "2025-05-08 03:16:32.801588+00:00"),
            ("DEADUSDT", "0.00000000", "2025-05-08 03:16:32.801588+00:00"),
        ]),
    );
    // An older file without a UTC offset, and one with a non-UTC offset.
    write_raw(dir, "raw_crypto_prices_20250507T2316.csv", &csv(&[("BTCUSDT", "96000.00000000", "2025-05-07 23:16:31.100000")]));
    write_raw(dir, "raw_crypto_prices_20250508T0416.csv", &csv(&[("BTCUSDT", "98000.00000000", "2025-05-08 06:16:30+02:00")]));
    let out = tickerlake(&lake, &["process"], &[]).await;
    out.ok();
    let rows = processed_rows(dir);
    let got: Vec<(&str, &str, f64, Option<f64>)> =
        rows.iter().map(|r| (r.date.as_str(), r.symbol.as_str(), r.price, r.previous_price)).collect();
    assert_eq!(
        got,
        vec![
            ("2025-05-07", "BTCUSDT", 96000.0, None),
            ("2025-05-08", "BTCUSDT", 97000.5, Some(96000.0)),
            ("2025-05-08", "BTCUSDT", 98000.0, Some(97000.5)),
        ]
    );
    assert!((rows[2].price_change_pct.unwrap() - (98000.0 - 97000.5) / 97000.5 * 100.0).abs() < 1e-12);
    assert!(out.stdout.contains("1 other quote") && out.stdout.contains("1 non-positive price"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_are_quarantined_with_reasons_and_counted() {
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    write_raw(
        dir,
        "raw_crypto_prices_20250508T0300.csv",
        concat!(
            "symbol,price,timestamp\n",
            "BTCUSDT,97000.00000000,2025-05-08 03:00:16.000000+00:00\n",
            "ETHUSDT,abc,2025-05-08 03:00:16.000000+00:00\n",
            "SOLUSDT,150.00000000,\n",
            "XRPUSDT,2.00000000,not a time\n",
            "ADAUSDT,0.7,2025-05-08 03:00:16+00:00,extra\n",
            "DOGEUSDT,0.2\n",
            "LTCUSDT,,2025-05-08 03:00:16+00:00\n",
        ),
    );
    let out = tickerlake(&lake, &["process"], &[]).await;
    out.ok();
    for expected in [
        "1 kept",
        "5 quarantined",
        "1 non-numeric price",
        "1 missing timestamp",
        "1 unparsable timestamp",
        "2 wrong field count",
        "1 missing price",
    ] {
        assert!(out.stdout.contains(expected), "summary lacks {expected:?}: {}", out.stdout);
    }
    let q = std::fs::read_to_string(dir.join("quarantine/raw_crypto_prices_20250508T0300.csv")).unwrap();
    assert!(q.starts_with("source_file,line,reason,record\n"), "{q}");
    assert!(
        q.contains("raw/raw_crypto_prices_20250508T0300.csv,6,wrong field count,\"ADAUSDT,0.7,2025-05-08 03:00:16+00:00,extra\""),
        "{q}"
    );
    assert!(q.contains("non-numeric price,\"ETHUSDT,abc,"), "{q}");
    assert_eq!(q.lines().count(), 6, "{q}");
    let rows = processed_rows(dir);
    assert_eq!(rows.iter().map(|r| r.symbol.as_str()).collect::<Vec<_>>(), vec!["BTCUSDT"]);
}

/// The quarantine file of a raw file, as records.
fn quarantine_records(lake: &std::path::Path, raw_name: &str) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(lake.join("quarantine").join(raw_name)).unwrap();
    assert_eq!(r.headers().unwrap().iter().collect::<Vec<_>>(), ["source_file", "line", "reason", "record"]);
    r.records().map(|rec| rec.unwrap().iter().map(str::to_owned).collect()).collect()
}

/// `DESCRIBE quarantine` as (column, type) pairs.
async fn quarantine_columns(lake: &str) -> Vec<(String, String)> {
    let out = tickerlake(lake, &["query", "--format", "csv", "SELECT column_name, column_type FROM (DESCRIBE quarantine)"], &[]).await;
    out.ok();
    out.stdout
        .lines()
        .skip(1)
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.to_owned(), b.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_quarantined_row_has_its_raw_line_and_a_duplicate_symbol_keeps_its_first_row() {
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    // CRLF line ends, blank lines, a record spanning two lines, structurally rejected lines
    // before good and bad rows, and no newline at the end.
    let name = "raw_crypto_prices_20250508T0300.csv";
    write_raw(
        dir,
        name,
        concat!(
            "symbol,price,timestamp\r\n",                           // 1
            "BTCUSDT,97000.00000000,2025-05-08 03:00:16+00:00\r\n", // 2  kept
            "\r\n",                                                 // 3
            "DOGEUSDT,0.2\r\n",                                     // 4  wrong field count
            "ETHUSDT,abc,2025-05-08 03:00:16+00:00\r\n",            // 5  non-numeric price
            "XRPUSDT,2.0,\"2025-05-08\r\n",                         // 6  unparsable timestamp…
            "03:00:16+00:00\"\r\n",                                 // 7  …spanning two lines
            "BTCUSDT,97100.00000000,2025-05-08 03:00:16+00:00\r\n", // 8  duplicate of 2
            "ADAUSDT,0.7,2025-05-08 03:00:16+00:00,extra\r\n",      // 9  wrong field count
            "ETHUSDT,1800.50000000,2025-05-08 03:00:16+00:00\r\n",  // 10 kept (5 was malformed)
            "DEADUSDT,0.00000000,2025-05-08 03:00:16+00:00\r\n",    // 11 dropped (price 0)
            "DEADUSDT,5.00000000,2025-05-08 03:00:16+00:00\r\n",    // 12 duplicate of 11
            "LTCUSDT,90.00000000,2025-05-08 03:00:\r\n",            // 13 unparsable timestamp
            "\r\n",                                                 // 14
            "ETHUSDT,1801.00000000,2025-05-08 03:00:16+00:00",      // 15 duplicate of 10
        ),
    );
    let out = tickerlake(&lake, &["process"], &[]).await;
    out.ok();
    assert!(
        out.stdout.contains("11 rows: 2 kept, 1 dropped (1 non-positive price), 8 quarantined (3 duplicate symbol in snapshot, 1 non-numeric price, 2 unparsable timestamp, 2 wrong field count)"),
        "{}", out.stdout
    );
    let source = format!("raw/{name}");
    let want: Vec<Vec<String>> = [
        ("4", "wrong field count", "DOGEUSDT,0.2"),
        ("5", "non-numeric price", "ETHUSDT,abc,2025-05-08 03:00:16+00:00"),
        ("6", "unparsable timestamp", "XRPUSDT,2.0,2025-05-08\r\n03:00:16+00:00"),
        ("8", "duplicate symbol in snapshot", "BTCUSDT,97100.00000000,2025-05-08 03:00:16+00:00"),
        ("9", "wrong field count", "ADAUSDT,0.7,2025-05-08 03:00:16+00:00,extra"),
        ("12", "duplicate symbol in snapshot", "DEADUSDT,5.00000000,2025-05-08 03:00:16+00:00"),
        ("13", "unparsable timestamp", "LTCUSDT,90.00000000,2025-05-08 03:00:"),
        ("15", "duplicate symbol in snapshot", "ETHUSDT,1801.00000000,2025-05-08 03:00:16+00:00"),
    ]
    .iter()
    .map(|(line, reason, record)| vec![source.clone(), (*line).to_owned(), (*reason).to_owned(), (*record).to_owned()])
    .collect();
    assert_eq!(quarantine_records(dir, name), want);
    let rows = processed_rows(dir);
    assert_eq!(rows.iter().map(|r| (r.symbol.as_str(), r.price)).collect::<Vec<_>>(), vec![("BTCUSDT", 97000.0), ("ETHUSDT", 1800.5)]);

    // The same through `query`, beside `processed` and `raw`.
    let out = tickerlake(
        &lake,
        &["query", "--format", "csv", "SELECT source_file, line, reason FROM quarantine WHERE line < 9 ORDER BY line"],
        &[],
    )
    .await;
    out.ok();
    assert_eq!(
        out.stdout,
        format!(
            "source_file,line,reason\n{source},4,wrong field count\n{source},5,non-numeric price\n{source},6,unparsable timestamp\n{source},8,duplicate symbol in snapshot\n"
        )
    );
    let typed = vec![
        ("source_file".to_owned(), "VARCHAR".to_owned()),
        ("line".to_owned(), "BIGINT".to_owned()),
        ("reason".to_owned(), "VARCHAR".to_owned()),
        ("record".to_owned(), "VARCHAR".to_owned()),
    ];
    assert_eq!(quarantine_columns(&lake).await, typed);
    // An empty lake has the view too, empty and typed alike.
    let (_empty_tmp, empty) = lake_dir();
    tickerlake(&empty, &["init"], &[]).await.ok();
    assert_eq!(quarantine_columns(&empty).await, typed);
    let out = tickerlake(&empty, &["query", "--format", "csv", "SELECT count(*) AS n FROM quarantine"], &[]).await;
    out.ok();
    assert_eq!(out.stdout, "n\n0\n");
}

/// `raw` shows timestamps as written (as the Glue `raw` table does): a truncated one stays
/// visibly truncated, never an invented time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_view_shows_timestamps_as_written() {
    let (_tmp, lake) = lake_dir();
    write_raw(
        std::path::Path::new(&lake),
        "raw_crypto_prices_20250508T0300.csv",
        &csv(&[
            ("BTCUSDT", "97000.00000000", "2025-05-08 03:00:16.500000+02:00"),
            ("ETHUSDT", "1800.00000000", "2025-05-08 03:00:"),
            ("SOLUSDT", "150.00000000", "2025-05-08 03:00"),
        ]),
    );
    let out = tickerlake(&lake, &["query", "--format", "csv", "SELECT symbol, timestamp FROM raw ORDER BY symbol"], &[]).await;
    out.ok();
    assert_eq!(
        out.stdout,
        "symbol,timestamp\nBTCUSDT,2025-05-08 03:00:16.500000+02:00\nETHUSDT,2025-05-08 03:00:\nSOLUSDT,2025-05-08 03:00\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_with_nothing_new_changes_nothing_and_late_data_matches_full() {
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    tickerlake(&lake, &["simulate-history", "--hours", "60", "--symbols", "12", "--until", "2025-05-10T12:00:00Z"], &[]).await.ok();
    // Hold back one old hour to deliver it late.
    let late = dir.join("raw/raw_crypto_prices_20250508T1500.csv");
    let held = std::fs::read(&late).unwrap();
    std::fs::remove_file(&late).unwrap();
    tickerlake(&lake, &["process"], &[]).await.ok();
    let before = tree(dir);
    let again = tickerlake(&lake, &["process"], &[]).await;
    again.ok();
    assert!(again.stdout.contains("nothing new"), "{}", again.stdout);
    assert!(before == tree(dir), "a no-op run changed the lake");

    std::fs::write(&late, held).unwrap();
    let out = tickerlake(&lake, &["process"], &[]).await;
    out.ok();
    assert!(out.stdout.contains("3 partitions written (2025-05-08 … 2025-05-10)"), "{}", out.stdout);
    let incremental = processed_rows(dir);
    tickerlake(&lake, &["process", "--full"], &[]).await.ok();
    assert_eq!(incremental, processed_rows(dir));
}

/// Kill the run at each point of the commit protocol. Readers see exactly the committed state
/// meanwhile (the old rows before the commit, the new ones after it), and the re-run equals an
/// uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_any_point_then_rerun_equals_uninterrupted_run() {
    common::require_fault_injection();
    for (failpoint, committed) in
        [("mid-stage", false), ("before-commit", false), ("after-commit", true), ("mid-publish", true), ("before-month-publish", true)]
    {
        let (_tmp, lake) = lake_dir();
        let dir = std::path::Path::new(&lake);
        tickerlake(&lake, &["simulate-history", "--hours", "30", "--symbols", "12", "--until", "2025-05-09T05:00:00Z"], &[]).await.ok();
        tickerlake(&lake, &["process"], &[]).await.ok();
        let before = tickerlake(&lake, &["query", "--format", "csv", common::ROWS_SQL], &[]).await.ok().stdout.clone();
        // New data for yesterday (late) and today, then a crash while committing it.
        tickerlake(&lake, &["simulate-history", "--hours", "40", "--symbols", "12", "--until", "2025-05-09T15:00:00Z"], &[]).await.ok();
        let reference = tempfile::tempdir().unwrap();
        common::copy_dir(dir, reference.path());
        let reference = reference.path().to_str().unwrap().to_owned();
        tickerlake(&reference, &["process"], &[]).await.ok();
        let after = tickerlake(&reference, &["query", "--format", "csv", common::ROWS_SQL], &[]).await.ok().stdout.clone();
        assert_ne!(before, after);

        let crashed = tickerlake(&lake, &["process"], &[("TICKERLAKE_FAILPOINT", failpoint)]).await;
        crashed.failed();
        assert!(crashed.stderr.contains(&format!("failpoint {failpoint}")), "{}", crashed.stderr);
        let seen = tickerlake(&lake, &["query", "--format", "csv", common::ROWS_SQL], &[]).await.ok().stdout.clone();
        assert!(&seen == if committed { &after } else { &before }, "a reader after a crash at {failpoint} sees the committed state");

        let rerun = tickerlake(&lake, &["process"], &[]).await;
        rerun.ok();
        assert_eq!(processed_rows(dir), processed_rows(std::path::Path::new(&reference)), "after a crash at {failpoint}");
        let (differ, rows) = common::month_files_mismatch(dir);
        assert!(differ == 0 && rows > 0, "the month files hold the rollups after a crash at {failpoint}: {differ} of {rows} differ");
        // And the re-run's state is final: one more run finds nothing new.
        assert!(tickerlake(&lake, &["process"], &[]).await.stdout.contains("nothing new"));
    }
}

/// Two writers forced past the lock: the conditional commit alone keeps the lake exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_forced_past_the_lock_process_each_raw_file_once() {
    let (_a, lake) = lake_dir();
    let (_b, reference) = lake_dir();
    common::two_writers_past_the_lock(&lake, &reference, &[]).await;
}

/// Configuration or permission failures are not retried: `run --once` exits 3 at once, and the
/// service logs the reason once and waits for the next tick instead of retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_are_not_retried() {
    let sim = sim().await;
    let (_tmp, lake) = lake_dir();
    sim.inject(tickerlake::simulator::Fault::Status { code: 451, retry_after: None }, 100);
    let out = tickerlake(&lake, &["run", "--once", "--binance-url", &sim.url()], &[]).await;
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("restricted location"), "{}", out.stderr);

    let child = tokio::process::Command::new(common::BIN)
        .args(["--lake", &lake, "run", "--retry-secs", "1", "--binance-url", &sim.url()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let pid = child.id().unwrap() as i32;
    assert!(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output()).await.expect("service did not stop").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("tick failed").count(), 1, "one failed tick, no retries within 4 s: {stderr}");
    assert!(stderr.contains("not retrying"), "{stderr}");
}

/// Settings outside clap are validated at start-up, naming the setting.
#[tokio::test]
async fn a_malformed_setting_is_an_error_naming_it() {
    let (_tmp, lake) = lake_dir();
    let out = tickerlake(&lake, &["process"], &[("TICKERLAKE_LOCK_TTL_SECS", "ten minutes")]).await;
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("TICKERLAKE_LOCK_TTL_SECS=\"ten minutes\" is not valid"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_collects_and_processes() {
    let sim = sim().await;
    let (_tmp, lake) = lake_dir();
    let out = tickerlake(&lake, &["run", "--once", "--binance-url", &sim.url()], &[]).await;
    out.ok();
    assert_eq!(raw_files(&lake).len(), 1);
    let rows = processed_rows(std::path::Path::new(&lake));
    assert_eq!(rows.len(), 24 / 2 - 1, "12 USDT pairs of 24, one of them priced zero");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_retries_a_failed_tick_and_stops_cleanly_on_ctrl_c() {
    let sim = sim().await;
    let (_tmp, lake) = lake_dir();
    sim.inject(tickerlake::simulator::Fault::Status { code: 503, retry_after: None }, 2);
    let child = tokio::process::Command::new(common::BIN)
        .args(["--lake", &lake, "run", "--retry-secs", "1", "--binance-url", &sim.url(), "--max-attempts", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while processed_rows(std::path::Path::new(&lake)).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the service never recovered from the failed tick");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Ctrl-C: the service stops between steps with status 0.
    let pid = child.id().unwrap() as i32;
    assert!(std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap().success());
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output()).await.expect("service did not stop").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("tick failed") && stderr.contains("retrying"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_nonzero_exit() {
    let out = tickerlake("ftp://nowhere/x", &["process"], &[]).await;
    out.failed();
    assert!(out.stderr.contains("not a supported location") && out.stderr.contains("s3://BUCKET"), "{}", out.stderr);

    let (_tmp, lake) = lake_dir();
    tickerlake(&lake, &["init"], &[]).await.ok();
    let out = tickerlake(&lake, &["query", "SELECT * FROM nosuchtable"], &[]).await;
    out.failed();
    assert!(out.stderr.contains("nosuchtable"), "{}", out.stderr);

    let out = tickerlake(&lake, &["collect", "--binance-url", "api.binance.com"], &[]).await;
    out.failed();
    assert!(out.stderr.contains("must start with http"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_another_header_is_quarantined_whole_not_misread() {
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    // Columns reordered: read positionally this would put timestamps into prices.
    write_raw(dir, "raw_crypto_prices_20250508T0300.csv", "price,symbol,timestamp\n97000.0,BTCUSDT,2025-05-08 03:00:16+00:00\n");
    write_raw(dir, "raw_crypto_prices_20250508T0400.csv", &csv(&[("BTCUSDT", "97100.00000000", "2025-05-08 04:00:16+00:00")]));
    let out = tickerlake(&lake, &["process"], &[]).await;
    out.ok();
    assert!(out.stdout.contains("1 quarantined (1 unexpected header"), "{}", out.stdout);
    let q = std::fs::read_to_string(dir.join("quarantine/raw_crypto_prices_20250508T0300.csv")).unwrap();
    assert!(
        q.contains(
            "raw_crypto_prices_20250508T0300.csv,1,\"unexpected header (expected symbol,price,timestamp)\",\"price,symbol,timestamp\""
        ),
        "{q}"
    );
    let rows = processed_rows(dir);
    assert_eq!(rows.iter().map(|r| r.price).collect::<Vec<_>>(), vec![97100.0]);

    // Only bad files in a run: still a clean run that records them.
    write_raw(dir, "raw_crypto_prices_20250508T0500.csv", "sym;price;time\n");
    let out = tickerlake(&lake, &["process"], &[]).await;
    out.ok();
    assert!(out.stdout.contains("1 unexpected header"), "{}", out.stdout);
    assert!(tickerlake(&lake, &["process"], &[]).await.stdout.contains("nothing new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_partition_or_carry_file_is_rebuilt_from_raw() {
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    tickerlake(&lake, &["simulate-history", "--hours", "50", "--symbols", "10", "--until", "2025-05-10T01:00:00Z"], &[]).await.ok();
    tickerlake(&lake, &["process"], &[]).await.ok();
    let want = processed_rows(dir);
    // Lose the last partition and the carry state before it, then deliver one more hour.
    std::fs::remove_file(dir.join("processed/date=2025-05-10/part-00000.parquet")).unwrap();
    std::fs::remove_file(dir.join("_tickerlake/carry/date=2025-05-09/part-00000.parquet")).unwrap();
    tickerlake(&lake, &["simulate-history", "--hours", "1", "--symbols", "10", "--until", "2025-05-10T02:00:00Z"], &[]).await.ok();
    let out = tickerlake(&lake, &["process"], &[]).await;
    out.ok();
    assert!(out.stderr.contains("carry state is missing") && out.stderr.contains("rebuilding it from raw"), "{}", out.stderr);
    let got = processed_rows(dir);
    let new_hour_us = 1_746_842_400_000_000; // 2025-05-10T02:00:00Z
    let before: Vec<_> = got.iter().filter(|r| r.ts_us < new_hour_us).cloned().collect();
    assert_eq!(before, want, "the rebuilt partition holds exactly the rows it had");
    assert!(got.len() > want.len());
    tickerlake(&lake, &["process", "--full"], &[]).await.ok();
    assert_eq!(got, processed_rows(dir), "equals a full rebuild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
    let (_tmp, lake) = lake_dir();
    tickerlake(&lake, &["simulate-history", "--hours", "6", "--symbols", "8", "--until", "2025-05-09T05:00:00Z"], &[]).await.ok();
    let first = common::PausedRun::start(&lake, &[]).await;
    let second = tickerlake(&lake, &["process"], &[]).await;
    second.failed();
    assert!(second.stderr.contains("another tickerlake run is writing"), "{}", second.stderr);
    let (status, stderr) = first.finish().await;
    assert!(status.success(), "{stderr}");
    // The lock went with the first run: the next one proceeds (and finds nothing new).
    assert!(tickerlake(&lake, &["process"], &[]).await.stdout.contains("nothing new"));
}

/// A misspelt --lake: read-only commands fail with one line naming the path and create nothing;
/// writing commands create the lake and say so once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_refuse_a_missing_lake_and_create_nothing() {
    let (tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    for args in [&["query", "SELECT count(*) FROM processed"][..], &["doctor"]] {
        let out = tickerlake(&lake, args, &[]).await;
        out.failed();
        assert_eq!(out.stderr, format!("error: no lake at {lake}: check --lake, or create one with `tickerlake init`\n"), "{args:?}");
        assert_eq!(out.stdout, "", "{args:?}");
        assert!(!dir.exists(), "{args:?} created {lake}");
    }
    // A directory holding no lake (--lake one level too high, say) is no lake either.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = tickerlake(empty.to_str().unwrap(), &["query", "SELECT 1"], &[]).await;
    out.failed();
    assert!(out.stderr.starts_with(&format!("error: no lake at {}", empty.display())) && out.stderr.lines().count() == 1, "{}", out.stderr);
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "query created something in {}", empty.display());

    // Writing commands create it, and say so the first time only.
    let first = tickerlake(&lake, &["simulate-history", "--hours", "3", "--symbols", "6", "--until", "2025-05-09T05:00:00Z"], &[]).await;
    first.ok();
    assert_eq!(first.stderr.matches(&format!("created a new lake at {lake}")).count(), 1, "{}", first.stderr);
    let second = tickerlake(&lake, &["process"], &[]).await;
    second.ok();
    assert!(!second.stderr.contains("created"), "{}", second.stderr);
    let rows = processed_rows(dir).len();
    assert!(rows > 0);
    let out = tickerlake(&lake, &["query", "--format", "csv", "SELECT count(*) AS n FROM processed"], &[]).await;
    out.ok();
    assert_eq!(out.stdout, format!("n\n{rows}\n"));
    tickerlake(&lake, &["doctor"], &[]).await.ok();

    let (_tmp2, fresh) = lake_dir();
    let init = tickerlake(&fresh, &["init"], &[]).await;
    init.ok();
    assert!(init.stderr.contains(&format!("created a new lake at {fresh}")), "{}", init.stderr);
    assert!(init.stdout.contains("is ready"), "{}", init.stdout);
    let out = tickerlake(&fresh, &["query", "SELECT count(*) AS n FROM processed"], &[]).await;
    out.ok();
    assert!(out.stdout.contains("| 0 |"), "an initialised lake is a lake: {}", out.stdout);
}

/// DuckDB failures read as DuckDB wrote them, caret line included, without duckdb-rs's
/// "Error code 1: Unknown error code" — from `query` and from processing alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_errors_keep_duckdbs_message_without_library_noise() {
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    write_raw(dir, "raw_crypto_prices_20250508T0300.csv", &csv(&[("BTCUSDT", "97000.00000000", "2025-05-08 03:00:16+00:00")]));
    tickerlake(&lake, &["process"], &[]).await.ok();
    let out = tickerlake(&lake, &["query", "SELEC symbol FROM processed"], &[]).await;
    out.failed();
    assert!(!out.stderr.contains("Error code") && !out.stderr.contains("Unknown error"), "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(lines[0].starts_with("error: ") && lines[0].contains("Parser Error: syntax error at or near \"SELEC\""), "{}", out.stderr);
    // DuckDB's excerpt, its caret under the offending word, right after the message.
    assert_eq!(&lines[1..], ["LINE 1: SELEC symbol FROM processed", "        ^^^^^"], "{}", out.stderr);

    let out = tickerlake(&lake, &["query", "SELECT nosuch FROM processed"], &[]).await;
    out.failed();
    assert!(out.stderr.contains("Binder Error: Referenced column \"nosuch\" not found"), "{}", out.stderr);
    assert!(!out.stderr.contains("Error code"), "{}", out.stderr);

    write_raw(dir, "raw_crypto_prices_20250508T0400.csv", &csv(&[("BTCUSDT", "97100.00000000", "2025-05-08 04:00:16+00:00")]));
    let out = tickerlake(&lake, &["process", "--memory-limit", "lots"], &[]).await;
    out.failed();
    assert!(out.stderr.contains("--memory-limit \"lots\" is not a size DuckDB accepts"), "{}", out.stderr);
    assert!(!out.stderr.contains("Error code"), "{}", out.stderr);
}

/// A lake whose raw/ is a symlink to a directory of existing snapshots, with more linked
/// directories inside: all followed. A link back into a directory it is inside is refused in one
/// line instead of looping (or being skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinked_raw_directories_are_followed_and_loops_refused() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let (snapshots, older, lake) = (tmp.path().join("snapshots"), tmp.path().join("older"), tmp.path().join("lake"));
    for d in [&snapshots, &older, &lake] {
        std::fs::create_dir(d).unwrap();
    }
    let snapshot = |dir: &std::path::Path, hour: &str| {
        let ts = format!("2025-05-{} {}:00:16+00:00", &hour[6..8], &hour[9..11]);
        let body = csv(&[("BTCUSDT", "97000.00000000", &ts), ("ETHUSDT", "1800.00000000", &ts)]);
        std::fs::write(dir.join(format!("raw_crypto_prices_{hour}.csv")), body).unwrap();
    };
    snapshot(&snapshots, "20250508T0300");
    snapshot(&snapshots, "20250508T0400");
    snapshot(&older, "20250507T2300");
    symlink(&snapshots, lake.join("raw")).unwrap();
    let l = lake.to_str().unwrap();

    let out = tickerlake(l, &["process"], &[]).await;
    out.ok();
    assert!(out.stdout.starts_with("2 snapshot(s) read, 4 rows: 4 kept"), "{}", out.stdout);
    assert_eq!(processed_rows(&lake).len(), 4);

    symlink(&older, snapshots.join("2025-05-07")).unwrap();
    let out = tickerlake(l, &["process"], &[]).await;
    out.ok();
    assert!(out.stdout.starts_with("1 snapshot(s) read"), "{}", out.stdout);
    assert_eq!(processed_rows(&lake).len(), 6);
    let out = tickerlake(l, &["query", "--format", "csv", "SELECT count(*) AS n FROM raw"], &[]).await;
    out.ok();
    assert_eq!(out.stdout, "n\n6\n");

    // lake/raw → snapshots, snapshots/2025-05-07 → older, older/again → snapshots: a loop.
    symlink(&snapshots, older.join("again")).unwrap();
    let out = tickerlake(l, &["process"], &[]).await;
    out.failed();
    let link = lake.join("raw/2025-05-07/again");
    assert!(out.stderr.contains(&format!("symlink loop at {}", link.display())) && out.stderr.lines().count() == 1, "{}", out.stderr);
    std::fs::remove_file(older.join("again")).unwrap();

    // A link whose target is gone is named, not skipped.
    symlink(tmp.path().join("gone.csv"), snapshots.join("raw_crypto_prices_20250508T0500.csv")).unwrap();
    let out = tickerlake(l, &["process"], &[]).await;
    out.failed();
    assert!(
        out.stderr.contains("raw_crypto_prices_20250508T0500.csv is a broken symlink") && out.stderr.lines().count() == 1,
        "{}",
        out.stderr
    );
}

/// The README's examples run as typed in the directory that holds the demo's ./lake: `./dev tl …`
/// (the clone's wrapper) and `tickerlake query …` (the binary `cargo install --path .` puts on PATH).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_examples_run_as_typed_after_the_demo() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{repo}/README.md")).unwrap();
    let mut in_sh = false;
    let mut examples = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        let cmd = line.split(" #").next().unwrap().trim();
        if in_sh && (cmd.starts_with("./dev tl ") || cmd.starts_with("tickerlake query ")) {
            examples.push(cmd.to_owned());
        }
    }
    assert!(examples.iter().any(|c| c.starts_with("./dev tl ")) && examples.iter().any(|c| c.starts_with("tickerlake ")), "{examples:?}");

    // What the demo leaves behind: ./lake with processed partitions.
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let l = lake.to_str().unwrap();
    tickerlake(l, &["simulate-history", "--hours", "30", "--symbols", "12", "--until", "2025-05-09T05:00:00Z"], &[]).await.ok();
    tickerlake(l, &["process"], &[]).await.ok();
    // `tickerlake` on PATH, as after `cargo install --path .`.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(common::BIN, bin.join("tickerlake")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    for cmd in &examples {
        // `./dev` is the clone's script; run from elsewhere, it must still resolve ./lake where it was typed.
        let typed = cmd.replacen("./dev ", &format!("{repo}/dev "), 1);
        let out = tokio::process::Command::new("bash")
            .args(["-c", &typed])
            .current_dir(tmp.path())
            .env("PATH", &path)
            .env("TICKERLAKE_BIN", common::BIN)
            .env_remove("TICKERLAKE_LAKE")
            .env_remove("RUST_LOG")
            .output()
            .await
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{cmd}\nstdout: {stdout}\nstderr: {stderr}");
        assert!(stdout.lines().count() > 4 && !stdout.contains("(no rows)"), "{cmd} printed no rows: {stdout}");
    }
}

/// A memory limit too small for even one chunk: one line naming --memory-limit and a value that
/// works, a non-zero exit, and nothing committed; the suggested value then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_too_small_for_a_chunk_says_what_would_work() {
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    tickerlake(&lake, &["simulate-history", "--hours", "6", "--symbols", "3000", "--until", "2025-05-09T05:00:00Z"], &[]).await.ok();
    let out = tickerlake(&lake, &["process", "--memory-limit", "1MB"], &[]).await;
    out.failed();
    let errors: Vec<&str> = out.stderr.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert_eq!(errors.len(), 1, "one line: {}", out.stderr);
    assert!(
        errors[0].starts_with("error: --memory-limit 1MB is too small") && errors[0].contains("re-run with --memory-limit 256MB"),
        "{}",
        out.stderr
    );
    assert!(!dir.join("_tickerlake/manifest.json").exists() && processed_rows(dir).is_empty(), "nothing committed");
    let retry = tickerlake(&lake, &["process", "--memory-limit", "256MB"], &[]).await;
    retry.ok();
    assert!(retry.stdout.starts_with("6 snapshot(s) read"), "{}", retry.stdout);
}

/// A committed staged file that is gone: readers fail naming the date, the next run rebuilds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_staged_file_that_is_gone_is_rebuilt_and_readers_say_so() {
    let (_a, lake) = lake_dir();
    let (_b, reference) = lake_dir();
    let runs = std::path::Path::new(&lake).join("_tickerlake/runs");
    common::lost_staged_files_are_rebuilt(&lake, &reference, &[], async || std::fs::remove_dir_all(&runs).unwrap()).await;
}

/// A commit that landed with its answer lost keeps its staged files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_commit_keeps_its_staged_files() {
    let (_a, lake) = lake_dir();
    let (_b, reference) = lake_dir();
    common::an_ambiguous_commit_keeps_its_staged_files(&lake, &reference, &[]).await;
}

/// A writer that stalled after its commit deletes none of a newer run's files when it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_is_fenced_after_its_commit() {
    let (_a, lake) = lake_dir();
    let (_b, reference) = lake_dir();
    common::a_stalled_writer_is_fenced_after_its_commit(&lake, &reference, &[]).await;
}

/// A commit that only adds raw files (every row dropped: no partition names the run) whose
/// answer is lost is still recognised as landed, by the commit id the manifest carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_of_raw_entries_only_is_recognised_after_a_lost_answer() {
    common::require_fault_injection();
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    write_raw(dir, "raw_crypto_prices_20250508T0300.csv", &csv(&[("ABTC", "1.5", "2025-05-08 03:00:00+00:00")]));
    let out = tickerlake(&lake, &["process"], &[("TICKERLAKE_FAULTS", "lose-commit-answer")]).await;
    out.ok();
    assert!(out.stdout.starts_with("1 snapshot(s) read, 1 rows: 0 kept, 1 dropped (1 other quote)"), "{}", out.stdout);
    assert!(tickerlake(&lake, &["process"], &[]).await.ok().stdout.contains("nothing new"));
}

/// Files under `processed/` that no manifest names (Spark's `part-00000-<uuid>.snappy.parquet`
/// in a migrated bucket) are moved aside when a run first writes their date, never deleted,
/// and the run says so once; Hive-style readers then see only tickerlake's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_buckets_spark_files_are_moved_aside_not_deleted() {
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    write_raw(dir, "raw_crypto_prices_20250508T0300.csv", &csv(&[("AUSDT", "1.5", "2025-05-08 03:00:00+00:00")]));
    let spark = "processed/date=2025-05-08/part-00000-7d1c3b0e-2f4a-4f7e-9a43-5b0f3c1e8d21-c000.snappy.parquet";
    let success = "processed/_SUCCESS";
    for (key, body) in [(spark, &b"PAR1 spark's rows PAR1"[..]), (success, b"")] {
        std::fs::create_dir_all(dir.join(key).parent().unwrap()).unwrap();
        std::fs::write(dir.join(key), body).unwrap();
    }
    let out = tickerlake(&lake, &["process"], &[]).await;
    out.ok();
    assert_eq!(out.stderr.matches("moved files that no manifest names out of processed/").count(), 1, "{}", out.stderr);
    assert!(out.stdout.contains("1 foreign file(s) moved aside"), "{}", out.stdout);
    let moved = dir.join("_tickerlake/foreign").join(spark);
    assert_eq!(std::fs::read(&moved).unwrap(), b"PAR1 spark's rows PAR1", "kept, byte for byte");
    let left: Vec<String> = std::fs::read_dir(dir.join("processed/date=2025-05-08"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["part-00000.parquet"]);
    assert!(dir.join(success).exists(), "files outside the dates written are not touched");
    // Once moved, nothing more to say.
    write_raw(dir, "raw_crypto_prices_20250508T0400.csv", &csv(&[("AUSDT", "1.6", "2025-05-08 04:00:00+00:00")]));
    let again = tickerlake(&lake, &["process"], &[]).await;
    assert!(!again.ok().stderr.contains("moved files"), "{}", again.stderr);
}

/// Raw files under sub-directories keep one quarantine file each, even with the same file name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_raw_files_with_one_name_keep_their_own_quarantine() {
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    for (sub, sym) in [("2025/05", "AUSDT"), ("2025/06", "BUSDT")] {
        let path = dir.join("raw").join(sub).join("prices.csv");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, csv(&[(sym, "abc", "2025-05-08 03:00:00+00:00")])).unwrap();
    }
    tickerlake(&lake, &["process"], &[]).await.ok();
    let q = tickerlake(&lake, &["query", "--format", "csv", "SELECT source_file, reason, record FROM quarantine ORDER BY ALL"], &[]).await;
    assert_eq!(
        q.ok().stdout,
        "source_file,reason,record\nraw/2025/05/prices.csv,non-numeric price,\"AUSDT,abc,2025-05-08 03:00:00+00:00\"\n\
         raw/2025/06/prices.csv,non-numeric price,\"BUSDT,abc,2025-05-08 03:00:00+00:00\"\n"
    );
    assert!(dir.join("quarantine/2025/05/prices.csv").exists() && dir.join("quarantine/2025/06/prices.csv").exists());
}

/// A raw file whose first line is empty has no header: it is quarantined whole, not read as data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_first_line_does_not_pass_for_a_header() {
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    write_raw(dir, "raw_crypto_prices_20250508T0300.csv", "\nAUSDT,1.5,2025-05-08 03:00:00+00:00\n");
    write_raw(dir, "raw_crypto_prices_20250508T0400.csv", "\n\n");
    let out = tickerlake(&lake, &["process"], &[]).await;
    assert!(out.ok().stdout.contains("0 kept") && out.stdout.contains("1 unexpected header"), "{}", out.stdout);
    let q = tickerlake(&lake, &["query", "--format", "csv", "SELECT source_file, line, reason FROM quarantine"], &[]).await;
    assert_eq!(
        q.ok().stdout,
        "source_file,line,reason\nraw/raw_crypto_prices_20250508T0300.csv,1,\"unexpected header (expected symbol,price,timestamp)\"\n"
    );
}

/// The hourly run lists only recent raw files (one request on S3 whatever the history) and
/// rewrites only this month's manifest segment; `process` lists everything, so a snapshot
/// dropped in with an old hour is found by it (and by the hourly run's daily full listing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hourly_run_reads_recent_raw_files_and_this_months_manifest_only() {
    let sim = sim().await;
    let (_tmp, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    let now = chrono::Utc::now();
    let until = tickerlake::source::snapshot::hour_slot(now) - chrono::TimeDelta::hours(1);
    let history = ["simulate-history", "--hours", "2000", "--symbols", "6", "--until", &until.to_rfc3339()];
    tickerlake(&lake, &history, &[]).await.ok();
    // An hour five days back that nobody collected: a backfill fills it later.
    let gap = tickerlake::source::snapshot::hour_slot(now) - chrono::TimeDelta::days(5);
    let gap_prefix = format!("raw_crypto_prices_{}", gap.format("%Y%m%dT%H"));
    let gap_file = raw_files(&lake).into_iter().find(|f| f.starts_with(&gap_prefix)).expect("the history has the hour");
    std::fs::remove_file(dir.join("raw").join(gap_file)).unwrap();
    tickerlake(&lake, &["process"], &[]).await.ok();
    let segments = std::fs::read_dir(dir.join("_tickerlake/manifest")).unwrap().count();
    assert!(segments >= 3, "one segment per month: {segments}");
    let head = std::fs::metadata(dir.join("_tickerlake/manifest.json")).unwrap().len();
    assert!(head < 8_000, "the head names months, not files: {head} bytes");

    // A snapshot of an hour four days back, dropped in after processing.
    let old = tickerlake::source::snapshot::hour_slot(now) - chrono::TimeDelta::days(4) + chrono::TimeDelta::minutes(30);
    write_raw(
        dir,
        &format!("raw_crypto_prices_{}.csv", old.format("%Y%m%dT%H%M")),
        &csv(&[("LATEUSDT", "2", &old.format("%Y-%m-%d %H:%M:%S+00:00").to_string())]),
    );
    let before: std::collections::BTreeMap<String, Vec<u8>> =
        common::tree(dir).into_iter().filter(|(k, _)| k.starts_with("_tickerlake/manifest/")).collect();
    let tick = tickerlake(&lake, &["run", "--once", "--binance-url", &sim.url()], &[]).await;
    tick.ok();
    assert!(tick.stderr.contains("1 snapshot(s) read"), "the hourly run reads this hour's snapshot only: {}", tick.stderr);
    let after: std::collections::BTreeMap<String, Vec<u8>> =
        common::tree(dir).into_iter().filter(|(k, _)| k.starts_with("_tickerlake/manifest/")).collect();
    let written: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert_eq!(written.len(), 1, "one new segment (this month's): {written:?}");
    assert!(written[0].contains(&now.format("%Y-%m").to_string()), "{written:?}");

    // A backfill adds old snapshots and says so in the lake: the next hourly run lists every
    // raw file once (the late file of four days back too), then goes back to the recent ones.
    let (from, to) = (gap.to_rfc3339(), (gap + chrono::TimeDelta::hours(1)).to_rfc3339());
    let backfill = ["backfill", "--from", &from, "--to", &to, "--binance-url", &sim.url(), "--archive-url", "none"];
    assert!(tickerlake(&lake, &backfill, &[]).await.ok().stdout.contains("1 snapshot"), "the gap is backfilled");
    let tick = tickerlake(&lake, &["run", "--once", "--binance-url", &sim.url()], &[]).await;
    assert!(tick.ok().stderr.contains("2 snapshot(s) read"), "the backfilled and the late snapshot: {}", tick.stderr);
    assert!(tick.stderr.contains("a backfill added snapshots older than the recent hours"), "{}", tick.stderr);
    let filled = format!("SELECT count(*) > 0 AS filled FROM processed WHERE timestamp = '{}'", gap.format("%Y-%m-%d %H:%M:%S+00"));
    assert_eq!(tickerlake(&lake, &["query", "--format", "csv", &filled], &[]).await.ok().stdout, "filled\ntrue\n");
    let tick = tickerlake(&lake, &["run", "--once", "--binance-url", &sim.url()], &[]).await;
    assert!(!tick.ok().stderr.contains("listing every raw file"), "once is enough: {}", tick.stderr);

    let full = tickerlake(&lake, &["process"], &[]).await;
    assert!(!full.ok().stdout.contains("snapshot(s) read"), "nothing was left for a full listing: {}", full.stdout);
    let late = tickerlake(&lake, &["query", "--format", "csv", "SELECT count(*) AS n FROM processed WHERE symbol = 'LATEUSDT'"], &[]).await;
    assert_eq!(late.ok().stdout, "n\n1\n");
}

/// What the `daily` rollup must hold, computed from the hourly rows (`processed`), next to
/// what it holds: counts, times, first/last/min/max price and the last moving average exactly;
/// the mean price and the % change's moments to 1e-9 relative (sums in another order).
const DAILY_CHECK: &str = "
    WITH want AS (
        SELECT symbol, date, count(*) AS n, min(timestamp) AS t0, max(timestamp) AS t1,
               first(price ORDER BY timestamp, price) AS p0, last(price ORDER BY timestamp, price) AS p1,
               min(price) AS lo, max(price) AS hi, avg(price) AS mean, last(moving_avg ORDER BY timestamp, price) AS ma,
               count(price_change_pct) AS k, avg(price_change_pct) AS cm, var_pop(price_change_pct) * count(price_change_pct) AS m2
        FROM processed GROUP BY symbol, date)
    SELECT count(*) FILTER (w.symbol IS NULL OR d.symbol IS NULL) AS unmatched,
           count(*) FILTER (w.n <> d.observations OR w.t0 <> d.first_time OR w.t1 <> d.last_time OR w.p0 <> d.first_price
                            OR w.p1 <> d.last_price OR w.lo <> d.min_price OR w.hi <> d.max_price OR w.ma <> d.last_moving_avg
                            OR w.k <> d.change_count) AS inexact,
           count(*) FILTER (abs(w.mean - d.mean_price) > 1e-9 * abs(w.mean)
                            OR coalesce(abs(w.cm - d.change_mean) > 1e-9 * (1 + abs(w.cm)), w.cm IS DISTINCT FROM d.change_mean)
                            OR coalesce(abs(w.m2 - d.change_m2) > 1e-9 * (1 + abs(w.m2)), w.m2 IS DISTINCT FROM d.change_m2)) AS off,
           count(*) AS n
    FROM want w FULL JOIN daily d USING (symbol, date)";

/// What the `snapshots` rollup must hold: one row per timestamp, with its rows.
const SNAPSHOTS_CHECK: &str = "
    SELECT count(*) FILTER (w.time IS NULL OR s.time IS NULL OR w.n <> s.symbols OR w.date <> s.date) AS wrong, count(*) AS n
    FROM (SELECT timestamp AS time, date, count(*) AS n FROM processed GROUP BY ALL) w FULL JOIN snapshots s USING (time)";

/// The rollups summarise the committed hourly rows exactly, through incremental runs with late
/// data, and equal a full rebuild's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_summarise_the_hourly_rows_through_incremental_runs() {
    let (_a, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    tickerlake(
        &lake,
        &["simulate-history", "--hours", "40", "--symbols", "12", "--until", "2025-05-09T15:00:00Z", "--malformed-one-in", "40"],
        &[],
    )
    .await
    .ok();
    tickerlake(&lake, &["process"], &[]).await.ok();
    let (differ, rows) = common::month_files_mismatch(dir);
    assert!(differ == 0 && rows > 0, "the month files hold the per-date rollups: {differ} of {rows} differ");
    tickerlake(&lake, &["simulate-history", "--hours", "20", "--symbols", "12", "--until", "2025-05-10T11:00:00Z"], &[]).await.ok();
    // A late snapshot in the middle of a processed day, and one of a new date in the month before.
    write_raw(dir, "raw_crypto_prices_20250508T1030.csv", &csv(&[("BTCUSDT", "1.5", "2025-05-08 10:30:00+00:00")]));
    write_raw(dir, "raw_crypto_prices_20250430T2300.csv", &csv(&[("BTCUSDT", "1.4", "2025-04-30 23:00:00+00:00")]));
    let out = tickerlake(&lake, &["process"], &[]).await;
    assert!(out.ok().stdout.contains("month files of 2 month(s)"), "{}", out.stdout);
    let (differ, rows) = common::month_files_mismatch(dir);
    assert!(differ == 0 && rows > 0, "after late data in two months: {differ} of {rows} differ");
    let months = common::glob_parquet(&dir.join("rollups/by_month"));
    assert_eq!(months.len(), 4, "April and May, daily and snapshots: {months:?}");
    // The next hour changes one date: May's files are built from the published ones and that date's rollups.
    tickerlake(&lake, &["simulate-history", "--hours", "1", "--symbols", "12", "--until", "2025-05-10T12:00:00Z"], &[]).await.ok();
    let out = tickerlake(&lake, &["process"], &[]).await;
    assert!(out.ok().stdout.contains("1 partition written (2025-05-10), month files of 1 month(s)"), "{}", out.stdout);
    let (differ, rows) = common::month_files_mismatch(dir);
    assert!(differ == 0 && rows > 0, "after an hour: {differ} of {rows} differ");
    let check = |out: &common::Out| out.stdout.lines().nth(1).unwrap().to_owned();
    let daily = tickerlake(&lake, &["query", "--format", "csv", DAILY_CHECK], &[]).await;
    let row = check(daily.ok());
    let n: u64 = row.rsplit(',').next().unwrap().parse().unwrap();
    assert!(n >= 6 * 3 && row.starts_with("0,0,0,"), "unmatched, inexact, off, n: {row}");
    let snaps = tickerlake(&lake, &["query", "--format", "csv", SNAPSHOTS_CHECK], &[]).await;
    let row = check(snaps.ok());
    assert!(row.starts_with("0,") && row != "0,0", "wrong, n: {row}");

    // A full rebuild writes the same rollups.
    let rollups = "SELECT 'd' AS t, symbol, date, observations, first_price, last_price, min_price, max_price, last_moving_avg, change_count,
                          round(mean_price, 6) AS mean, round(change_mean, 9) AS cm, round(change_m2, 6) AS m2, NULL AS time FROM daily
                   UNION ALL SELECT 's', NULL, date, symbols, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, time FROM snapshots ORDER BY ALL";
    let incremental = tickerlake(&lake, &["query", "--format", "csv", rollups], &[]).await.ok().stdout.clone();
    tickerlake(&lake, &["process", "--full"], &[]).await.ok();
    let full = tickerlake(&lake, &["query", "--format", "csv", rollups], &[]).await.ok().stdout.clone();
    assert!(incremental.lines().count() > 50 && incremental == full, "incremental and full rollups differ");
    assert_eq!(common::month_files_mismatch(dir).0, 0, "the full rebuild's month files hold its rollups");
    assert_eq!(common::glob_parquet(&dir.join("rollups/by_month")), months, "the same month files");

    // The April snapshot removed, then a rebuild: April has no dates left, and no month files.
    std::fs::remove_file(dir.join("raw/raw_crypto_prices_20250430T2300.csv")).unwrap();
    tickerlake(&lake, &["process", "--full"], &[]).await.ok();
    assert_eq!(common::glob_parquet(&dir.join("rollups/by_month")).len(), 2, "May's only");
    assert_eq!(common::month_files_mismatch(dir).0, 0);
}

/// `simulate-history --delisted-one-in` delists pairs as real history has them: written range by
/// range with the same bounds, each delisted pair's rows stop at one hour for good (no gap, no
/// return in a later range), and the others trade to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_history_delists_pairs_once_across_ranges() {
    let (_a, lake) = lake_dir();
    let bounds = ["--delisted-one-in", "3", "--delist-from", "2025-05-08T02:00:00Z", "--delist-until", "2025-05-09T20:00:00Z"];
    let mut delisted = Vec::new();
    for until in ["2025-05-08T23:00:00Z", "2025-05-09T23:00:00Z"] {
        let mut args = vec!["simulate-history", "--hours", "24", "--symbols", "40", "--until", until];
        args.extend(bounds);
        let out = tickerlake(&lake, &args, &[]).await;
        let line = out.ok().stdout.lines().find(|l| l.contains("delisted between")).unwrap_or_default().to_owned();
        delisted.push(line.split(' ').next().unwrap_or_default().parse::<usize>().expect(&out.stdout));
    }
    assert!(delisted[0] == delisted[1] && delisted[0] > 0, "both ranges delist the same pairs: {delisted:?}");
    tickerlake(&lake, &["process"], &[]).await.ok();
    // Per pair: its hours, first and last; a pair whose rows stop early stops for good.
    let per_pair = "SELECT count(*) FILTER (n <> hours) AS gapped,
                           count(*) FILTER (last < TIMESTAMP '2025-05-09 23:00:00') AS stopped,
                           count(*) FILTER (last < TIMESTAMP '2025-05-08 02:00:00' OR (last < TIMESTAMP '2025-05-09 23:00:00' AND last > TIMESTAMP '2025-05-09 20:00:17')) AS outside,
                           count(*) AS pairs
                    FROM (SELECT symbol, count(*) AS n, max(timestamp) AS last,
                                 date_diff('hour', min(timestamp), max(timestamp)) + 1 AS hours
                          FROM processed GROUP BY symbol)";
    let out = tickerlake(&lake, &["query", "--format", "csv", per_pair], &[]).await;
    let row: Vec<usize> = out.ok().stdout.lines().nth(1).unwrap().split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(row[0], 0, "no pair has a gap or comes back: {row:?}");
    assert_eq!(row[1], delisted[0], "the pairs whose rows stop early are the delisted ones: {row:?}");
    assert_eq!(row[2], 0, "each stops inside the delisting bounds: {row:?}");
    assert!(row[3] > row[1], "other pairs trade to the end: {row:?}");
}

/// A lake processed before rollups existed (a format-1 manifest, no rollup files) gets them
/// from its committed partitions, on the next run, even with nothing new to process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_from_before_rollups_gets_them_from_its_partitions() {
    let (_a, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    tickerlake(&lake, &["simulate-history", "--hours", "50", "--symbols", "10", "--until", "2025-05-10T01:00:00Z"], &[]).await.ok();
    tickerlake(&lake, &["process"], &[]).await.ok();
    // Back to the old layout: one manifest file without rollups, no rollup files.
    let store: tickerlake::lake::Lake = std::sync::Arc::new(tickerlake::lake::local::LocalStore::open(dir).unwrap());
    let m = tickerlake::lake::manifest::Manifest::load_all(&store).await.unwrap();
    let partitions: serde_json::Map<String, serde_json::Value> = m
        .partitions()
        .iter()
        .map(|(d, e)| (d.clone(), serde_json::json!({"run_id": e.run_id, "rows": e.rows, "published": true})))
        .collect();
    let one = serde_json::json!({"format": 1, "raw": m.raw(), "partitions": partitions});
    std::fs::write(dir.join("_tickerlake/manifest.json"), serde_json::to_vec(&one).unwrap()).unwrap();
    std::fs::remove_dir_all(dir.join("_tickerlake/manifest")).unwrap();
    std::fs::remove_dir_all(dir.join("rollups")).unwrap();
    let before = tickerlake(&lake, &["query", "--format", "csv", "SELECT count(*) AS n FROM daily"], &[]).await;
    assert_eq!(before.ok().stdout, "n\n0\n", "no rollups yet");

    let out = tickerlake(&lake, &["process"], &[]).await;
    assert!(out.ok().stdout.contains("rollups added to 3 earlier date(s), month files of 1 month(s)"), "{}", out.stdout);
    let row = tickerlake(&lake, &["query", "--format", "csv", DAILY_CHECK], &[]).await.ok().stdout.lines().nth(1).unwrap().to_owned();
    assert!(row.starts_with("0,0,0,") && !row.ends_with(",0"), "{row}");
    let (differ, rows) = common::month_files_mismatch(dir);
    assert!(differ == 0 && rows > 0, "and month files: {differ} of {rows} differ");
    assert!(tickerlake(&lake, &["process"], &[]).await.ok().stdout.contains("nothing new"));
}

/// A lake from before month files (a format-2 manifest, per-date rollups only) gets them on the
/// next run, even with nothing new to process, and then nothing is left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_from_before_month_files_gets_them_on_the_next_run() {
    let (_a, lake) = lake_dir();
    let dir = std::path::Path::new(&lake);
    tickerlake(&lake, &["simulate-history", "--hours", "50", "--symbols", "10", "--until", "2025-06-01T12:00:00Z"], &[]).await.ok();
    tickerlake(&lake, &["process"], &[]).await.ok();
    let head = dir.join("_tickerlake/manifest.json");
    let mut two: serde_json::Value = serde_json::from_slice(&std::fs::read(&head).unwrap()).unwrap();
    two["format"] = 2.into();
    std::fs::write(&head, serde_json::to_vec(&two).unwrap()).unwrap();
    std::fs::remove_dir_all(dir.join("rollups/by_month")).unwrap();

    let out = tickerlake(&lake, &["process"], &[]).await;
    assert!(out.ok().stdout.contains("month files of 2 month(s)"), "May and June: {}", out.stdout);
    let (differ, rows) = common::month_files_mismatch(dir);
    assert!(differ == 0 && rows > 0, "{differ} of {rows} differ");
    assert!(tickerlake(&lake, &["process"], &[]).await.ok().stdout.contains("nothing new"));
}
