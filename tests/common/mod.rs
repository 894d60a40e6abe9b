//! Shared test helpers: run the real binary, write raw files, read the processed lake back.
// Shared by several test crates, each using a part of it; `pub` is for those crates.
#![allow(dead_code, unreachable_pub)]

pub mod emulator;
pub mod serve;

use std::collections::BTreeMap;
use std::path::Path;

pub const BIN: &str = env!("CARGO_BIN_EXE_tickerlake");

#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert_ne!(self.code, Some(0), "expected failure\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

/// Run `tickerlake --lake <lake> <args…>` with extra env vars, without blocking the runtime.
pub async fn tickerlake(lake: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--lake").arg(lake).args(args).env_remove("RUST_LOG").env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run tickerlake");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn write_raw(lake: &Path, name: &str, content: &str) {
    let dir = lake.join("raw");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), content).unwrap();
}

/// One processed row with exact float bits, for exact comparisons.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub date: String,
    pub symbol: String,
    pub ts_us: i64,
    pub price: f64,
    pub moving_avg: f64,
    pub previous_price: Option<f64>,
    pub price_change_pct: Option<f64>,
}

/// All processed rows of a local lake, ordered.
pub fn processed_rows(lake: &Path) -> Vec<Row> {
    let files: Vec<String> = glob_parquet(&lake.join("processed"));
    if files.is_empty() {
        return Vec::new();
    }
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let list = files.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(",");
    let mut stmt = conn
        .prepare(&format!(
            "SELECT CAST(date AS VARCHAR), symbol, epoch_us(\"timestamp\"), price, moving_avg, previous_price, price_change_pct
             FROM read_parquet([{list}], hive_partitioning = true) ORDER BY symbol, \"timestamp\", price"
        ))
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Row {
            date: r.get(0)?,
            symbol: r.get(1)?,
            ts_us: r.get(2)?,
            price: r.get(3)?,
            moving_avg: r.get(4)?,
            previous_price: r.get(5)?,
            price_change_pct: r.get(6)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// How a local lake's published month files (`rollups/by_month/`) differ from its published
/// per-date rollup files: `(rows in only one of them, rows in the per-date files)`, both kinds
/// together. `(0, n)`: they hold the same rows.
pub fn month_files_mismatch(lake: &Path) -> (u64, u64) {
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let (mut differ, mut rows) = (0, 0);
    for (kind, columns) in [
        (
            "daily",
            "date, symbol, observations, first_time, first_price, last_time, last_price, min_price, max_price, mean_price, last_moving_avg, change_count, change_mean, change_m2",
        ),
        ("snapshots", "date, time, symbols"),
    ] {
        // The per-date files' date is in their path, the month files' in the file.
        let read = |files: Vec<String>, hive: &str| match files.is_empty() {
            true => format!("(SELECT {} WHERE false)", columns.split(", ").map(|c| format!("NULL AS {c}")).collect::<Vec<_>>().join(", ")),
            false => format!(
                "(SELECT {columns} FROM read_parquet([{}], {hive}))",
                files.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(",")
            ),
        };
        let per_date = read(glob_parquet(&lake.join("rollups").join(kind)), "hive_partitioning = true, hive_types = {'date': DATE}");
        let by_month = read(glob_parquet(&lake.join("rollups/by_month").join(kind)), "hive_partitioning = false");
        let (d, n): (u64, u64) = conn
            .query_row(
                &format!(
                    "SELECT (SELECT count(*) FROM ({per_date} EXCEPT ALL {by_month})) + (SELECT count(*) FROM ({by_month} EXCEPT ALL {per_date})),
                            (SELECT count(*) FROM {per_date})"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        differ += d;
        rows += n;
    }
    (differ, rows)
}

pub fn glob_parquet(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(glob_parquet(&p));
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Relative path → bytes for every file under `dir` (state comparisons), leaving out the lock
/// files (the writer lock names its last holder) and in-flight temp files.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                if rel != "_tickerlake/lock" && rel != "_tickerlake/cas.lock" && !rel.starts_with("_tickerlake/tmp") {
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// Raw CSV in the collector's format from (symbol, price text, timestamp text) rows.
pub fn csv(rows: &[(&str, &str, &str)]) -> String {
    let mut s = String::from("symbol,price,timestamp\n");
    for (sym, price, ts) in rows {
        s.push_str(&format!("{sym},{price},{ts}\n"));
    }
    s
}

/// Fails the calling test, with what to do, when the binary was built without its crash hooks.
pub fn require_fault_injection() {
    if !cfg!(feature = "fault-injection") {
        panic!("this test needs the crash hooks: run it with `cargo test --features fault-injection` (./dev test does)");
    }
}

/// A `process` run paused for 3 s after its first upload; the caller acts during the pause.
pub struct PausedRun {
    child: tokio::process::Child,
    /// stderr up to the pause, then the rest (drained in the background so the pipe never fills).
    head: String,
    tail: tokio::task::JoinHandle<String>,
}

impl PausedRun {
    /// Start the run and return once its stderr says it is paused (after its first staged upload).
    pub async fn start(lake: &str, env: &[(&str, &str)]) -> Self {
        Self::start_at(lake, env, "mid-stage", 3).await
    }

    /// Start the run paused `secs` at the named point (see src/faults.rs).
    pub async fn start_at(lake: &str, env: &[(&str, &str)], point: &str, secs: u32) -> Self {
        Self::start_with(lake, &["process"], env, point, secs).await
    }

    /// Start `tickerlake --lake <lake> <args…>` paused `secs` at the named point.
    pub async fn start_with(lake: &str, args: &[&str], env: &[(&str, &str)], point: &str, secs: u32) -> Self {
        use tokio::io::AsyncBufReadExt;
        require_fault_injection();
        let mut child = tokio::process::Command::new(BIN)
            .args(["--lake", lake])
            .args(args)
            .envs(env.iter().copied())
            .env("TICKERLAKE_PAUSEPOINT", format!("{point}:{secs}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut head = String::new();
        let paused = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                head.push_str(&line);
                head.push('\n');
                if line.contains(&format!("pausepoint {point}")) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(paused.ok(), Some(true), "the run never reached its pause point {point}: {head}");
        let tail = tokio::spawn(async move {
            let mut rest = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                rest.push_str(&line);
                rest.push('\n');
            }
            rest
        });
        Self { child, head, tail }
    }

    /// Wait for the run; its exit status and whole stderr.
    pub async fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(std::time::Duration::from_secs(120), self.child.wait()).await.expect("the run hung").unwrap();
        (status, self.head + &self.tail.await.unwrap())
    }
}

/// Every processed row, as CSV through `tickerlake query` (what a reader sees).
pub const ROWS_SQL: &str =
    "SELECT symbol, timestamp, price, moving_avg, previous_price, price_change_pct, date FROM processed ORDER BY ALL";

/// Raw snapshots read by a successful `process` (0 for "nothing new").
pub fn snapshots_read(out: &Out) -> usize {
    out.stdout.split(" snapshot(s) read").next().and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// Two writers forced past the writer lock (`TICKERLAKE_FAULTS=ignore-lock`): A stages its work
/// and pauses before its commit; meanwhile a new snapshot arrives and B processes everything and
/// commits. A must then lose its commit with a one-line conflict and commit nothing, and the lake
/// must equal `reference` (the same raw files, one writer) with every raw file processed once.
pub async fn two_writers_past_the_lock(lake: &str, reference: &str, env: &[(&str, &str)]) {
    let mut forced: Vec<(&str, &str)> = env.to_vec();
    forced.push(("TICKERLAKE_FAULTS", "ignore-lock"));
    let history = ["simulate-history", "--hours", "30", "--symbols", "10", "--until", "2025-05-09T05:00:00Z"];
    let more = ["simulate-history", "--hours", "10", "--symbols", "10", "--until", "2025-05-09T15:00:00Z"];
    let late = ["simulate-history", "--hours", "1", "--symbols", "10", "--until", "2025-05-09T16:00:00Z"];
    for l in [lake, reference] {
        tickerlake(l, &history, env).await.ok();
    }
    let first = tickerlake(lake, &["process"], env).await;
    first.ok();
    tickerlake(lake, &more, env).await.ok();

    let a = PausedRun::start_at(lake, &forced, "before-commit", 4).await;
    tickerlake(lake, &late, env).await.ok();
    let b = tickerlake(lake, &["process"], &forced).await;
    b.ok();
    let (status, stderr) = a.finish().await;
    assert!(!status.success(), "the writer that lost the race must fail: {stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("error: another run committed to") && last.contains("committed nothing"), "one line: {stderr}");
    let c = tickerlake(lake, &["process"], env).await;
    c.ok();
    assert!(c.stdout.contains("nothing new"), "B committed everything: {}", c.stdout);
    assert_eq!(snapshots_read(&first) + snapshots_read(&b), 41, "each of the 41 raw files processed exactly once");

    for args in [&more[..], &late[..]] {
        tickerlake(reference, args, env).await.ok();
    }
    tickerlake(reference, &["process"], env).await.ok();
    let want = tickerlake(reference, &["query", "--format", "csv", ROWS_SQL], env).await;
    let got = tickerlake(lake, &["query", "--format", "csv", ROWS_SQL], env).await;
    assert!(want.ok().stdout.lines().count() > 100, "{}", want.stdout);
    assert!(got.ok().stdout == want.stdout, "the lake equals a single-writer run");
}

/// A committed run whose staged files are deleted before they are published (a lifecycle rule on
/// `_tickerlake/`, a sweep on a host whose clock is off, a person): readers fail with one line
/// naming the date and the repair, and the next `process` rebuilds the date from raw, ending
/// equal to a run that lost nothing.
pub async fn lost_staged_files_are_rebuilt(lake: &str, reference: &str, env: &[(&str, &str)], delete_staging: impl AsyncFnOnce()) {
    require_fault_injection();
    let history = ["simulate-history", "--hours", "30", "--symbols", "10", "--until", "2025-05-09T05:00:00Z"];
    let more = ["simulate-history", "--hours", "10", "--symbols", "10", "--until", "2025-05-09T15:00:00Z"];
    for l in [lake, reference] {
        tickerlake(l, &history, env).await.ok();
        tickerlake(l, &["process"], env).await.ok();
        tickerlake(l, &more, env).await.ok();
    }
    let mut crash: Vec<(&str, &str)> = env.to_vec();
    crash.push(("TICKERLAKE_FAILPOINT", "after-commit"));
    tickerlake(lake, &["process"], &crash).await.failed();
    delete_staging().await;
    wait_for_a_dead_runs_lease(env).await;

    let read = tickerlake(lake, &["query", "--format", "csv", ROWS_SQL], env).await;
    read.failed();
    let last = read.stderr.lines().last().unwrap_or("");
    assert_eq!(
        last,
        format!(
            "error: the committed partition of 2025-05-09 is missing from the lake (_tickerlake/runs/{}/processed/date=2025-05-09/part-00000.parquet is gone); `tickerlake process` rebuilds it from raw",
            last.split("_tickerlake/runs/").nth(1).and_then(|r| r.split('/').next()).unwrap_or("?")
        ),
        "one line naming the date and the repair: {}",
        read.stderr
    );
    let repair = tickerlake(lake, &["process"], env).await;
    repair.ok();
    assert!(repair.stderr.contains("gone from its run's staging area; rebuilding the date from raw"), "{}", repair.stderr);
    assert!(repair.stdout.contains("1 partition written (2025-05-09)"), "{}", repair.stdout);
    tickerlake(reference, &["process"], env).await.ok();
    let want = tickerlake(reference, &["query", "--format", "csv", ROWS_SQL], env).await;
    let got = tickerlake(lake, &["query", "--format", "csv", ROWS_SQL], env).await;
    assert!(got.ok().stdout == want.ok().stdout, "the repaired lake equals one that lost nothing");
    assert!(tickerlake(lake, &["process"], env).await.ok().stdout.contains("nothing new"));
}

/// A killed run's S3 lease stays until it expires (`TICKERLAKE_LOCK_TTL_SECS` in `env`; the
/// local lake's OS lock dies with the process).
pub async fn wait_for_a_dead_runs_lease(env: &[(&str, &str)]) {
    if let Some((_, ttl)) = env.iter().find(|(k, _)| *k == "TICKERLAKE_LOCK_TTL_SECS") {
        tokio::time::sleep(std::time::Duration::from_secs(ttl.parse::<u64>().unwrap() + 1)).await;
    }
}

/// A commit that landed but whose answer was lost, with the read-back failing too: the run
/// fails, but its staged files stay (the manifest names them), readers see the commit, and
/// the next run publishes it.
pub async fn an_ambiguous_commit_keeps_its_staged_files(lake: &str, reference: &str, env: &[(&str, &str)]) {
    require_fault_injection();
    let history = ["simulate-history", "--hours", "30", "--symbols", "10", "--until", "2025-05-09T05:00:00Z"];
    let more = ["simulate-history", "--hours", "10", "--symbols", "10", "--until", "2025-05-09T15:00:00Z"];
    for l in [lake, reference] {
        tickerlake(l, &history, env).await.ok();
        tickerlake(l, &["process"], env).await.ok();
        tickerlake(l, &more, env).await.ok();
    }
    tickerlake(reference, &["process"], env).await.ok();
    let want = tickerlake(reference, &["query", "--format", "csv", ROWS_SQL], env).await.ok().stdout.clone();

    let mut faulty: Vec<(&str, &str)> = env.to_vec();
    faulty.push(("TICKERLAKE_FAULTS", "lose-commit-answer,fail-commit-recheck"));
    let out = tickerlake(lake, &["process"], &faulty).await;
    out.failed();
    assert!(out.stderr.contains("fault injection: the commit's answer"), "{}", out.stderr);
    let seen = tickerlake(lake, &["query", "--format", "csv", ROWS_SQL], env).await;
    assert!(seen.ok().stdout == want, "the commit landed: readers see it from the staged files: {}", seen.stderr);
    let next = tickerlake(lake, &["process"], env).await;
    assert!(next.ok().stdout.contains("nothing new"), "{}", next.stdout);
    assert!(next.stderr.contains("published the partitions of a run that stopped after its commit"), "{}", next.stderr);
    let got = tickerlake(lake, &["query", "--format", "csv", ROWS_SQL], env).await;
    assert!(got.ok().stdout == want);
}

/// A run stalled after its publication (a lease that lapsed, a paused VM) while another run
/// commits: when it resumes, its clean-up is fenced off (the manifest is no longer its version),
/// so it deletes none of the newer run's partition, carry or quarantine files.
pub async fn a_stalled_writer_is_fenced_after_its_commit(lake: &str, reference: &str, env: &[(&str, &str)]) {
    let mut forced: Vec<(&str, &str)> = env.to_vec();
    forced.push(("TICKERLAKE_FAULTS", "ignore-lock"));
    let history = ["simulate-history", "--hours", "30", "--symbols", "10", "--until", "2025-05-09T05:00:00Z"];
    for l in [lake, reference] {
        tickerlake(l, &history, env).await.ok();
    }
    tickerlake(lake, &["process"], env).await.ok();
    // A full rebuild that will remove every published file its own manifest does not name.
    let stalled = PausedRun::start_with(lake, &["process", "--full"], &forced, "after-publish", 6).await;
    // Meanwhile: a new day, with a malformed row (a quarantine file), processed by another run.
    let late = csv(&[("AUSDT", "1.5", "2025-05-10 00:00:00+00:00"), ("BUSDT", "abc", "2025-05-10 00:00:00+00:00")]);
    put_raw(lake, "raw/raw_crypto_prices_20250510T0000.csv", &late, env).await;
    put_raw(reference, "raw/raw_crypto_prices_20250510T0000.csv", &late, env).await;
    tickerlake(lake, &["process"], &forced).await.ok();
    let (status, stderr) = stalled.finish().await;
    assert!(status.success(), "the stalled run is committed: {stderr}");
    assert!(stderr.contains("another run committed after this one"), "it says why it stops: {stderr}");

    tickerlake(reference, &["process"], env).await.ok();
    for sql in [ROWS_SQL, "SELECT source_file, line, reason, record FROM quarantine ORDER BY ALL"] {
        let want = tickerlake(reference, &["query", "--format", "csv", sql], env).await;
        let got = tickerlake(lake, &["query", "--format", "csv", sql], env).await;
        assert!(want.ok().stdout.lines().count() > 1, "{sql}: {}", want.stdout);
        assert!(got.ok().stdout == want.stdout, "{sql}: the newer run's files are all there: {}", got.stderr);
    }
    // And the next run finds every committed file the newer run wrote, carry state included.
    let next = tickerlake(lake, &["process"], env).await;
    assert!(next.ok().stdout.contains("nothing new") && !next.stderr.contains("missing"), "{}{}", next.stdout, next.stderr);
}

/// Write a raw file into a lake (local directory or S3, through `tickerlake`'s own store).
pub async fn put_raw(lake: &str, key: &str, body: &str, env: &[(&str, &str)]) {
    if !lake.starts_with("s3://") {
        let path = Path::new(lake).join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
        return;
    }
    store(lake, env).await.put(key, bytes::Bytes::from(body.to_owned())).await.unwrap();
}

/// The lake's store (an S3 lake in tests: the emulator named by `TICKERLAKE_ENDPOINT_URL` in
/// `env`, with the emulators' dummy credentials).
pub async fn store(lake: &str, env: &[(&str, &str)]) -> tickerlake::lake::Lake {
    let endpoint = env.iter().find(|(k, _)| *k == "TICKERLAKE_ENDPOINT_URL").map(|(_, v)| (*v).to_owned());
    let opts = tickerlake::aws::AwsOptions {
        target: tickerlake::aws::Target::S3Compatible,
        endpoint_url: endpoint,
        glue_endpoint: None,
        athena_endpoint: None,
        path_style: true,
        default_region: Some("us-east-1".into()),
        dummy_credentials: true,
        lock_ttl: None,
        attempt_timeout: Some(std::time::Duration::from_secs(10)),
    };
    tickerlake::lake::open(lake, &opts, tickerlake::lake::Access::Create).await.unwrap()
}
