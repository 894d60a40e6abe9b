//! Shared test helpers: run the real binary, write raw files, read the processed lake back.
#![allow(dead_code)]

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
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
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
/// file (it names its last holder) and in-flight temp files.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                if rel != "_tickerlake/lock" && !rel.starts_with("_tickerlake/tmp") {
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

/// A `process` run paused for 3 s after its first upload; the caller acts during the pause.
pub struct PausedRun {
    child: tokio::process::Child,
    /// stderr up to the pause, then the rest (drained in the background so the pipe never fills).
    head: String,
    tail: tokio::task::JoinHandle<String>,
}

impl PausedRun {
    /// Start the run and return once its stderr says it is paused.
    pub async fn start(lake: &str, env: &[(&str, &str)]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(BIN)
            .args(["--lake", lake, "process"])
            .envs(env.iter().copied())
            .env("TICKERLAKE_PAUSEPOINT", "mid-publish:3")
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
                if line.contains("pausepoint mid-publish") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(paused.ok(), Some(true), "the run never reached its pause point: {head}");
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
