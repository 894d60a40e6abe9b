//! `process`: raw snapshots → validated rows → indicators → Parquet partitions, incrementally.
//!
//! A run reads only raw files the manifest has not seen, plus what the window needs: the
//! committed partitions from the earliest new date on, and the carry state (last 4 rows of every
//! symbol) of the partition just before. It rewrites every partition from that date on, so a late
//! snapshot with an old timestamp gives the same result as a full recompute. The manifest is
//! written last; partitions and carry files name the run that wrote them, and one whose run was
//! never committed (a crash, a lost race) is recomputed from raw by the next run.

pub mod engine;
pub mod manifest;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};

use crate::lake::{self, CARRY_PREFIX, Lake, ObjectMeta, PROCESSED_PREFIX, QUARANTINE_PREFIX, RAW_PREFIX};
use engine::{Engine, LoadStats, StagedOutputs};
use manifest::{Manifest, PartitionEntry, RawEntry};

/// DuckDB's memory budget for a run unless told otherwise: a month of 3,000 symbols fits in it;
/// larger rebuilds spill to the run's stage directory instead of growing the process.
pub const DEFAULT_MEMORY_LIMIT: &str = "256MB";

#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Ignore the manifest and rebuild every partition from all raw files.
    pub full: bool,
    /// DuckDB memory limit (e.g. "256MB", "2GB").
    pub memory_limit: String,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self { full: false, memory_limit: DEFAULT_MEMORY_LIMIT.to_owned() }
    }
}

/// What a run did, printed at its end.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub snapshots_read: usize,
    pub rows_read: u64,
    pub rows_kept: u64,
    pub dropped: BTreeMap<String, u64>,
    pub quarantined: BTreeMap<String, u64>,
    pub partitions_written: Vec<String>,
    pub partitions_deleted: Vec<String>,
    pub elapsed: Duration,
    /// Requests sent to a remote lake during the run (None for the local lake).
    pub requests: Option<u64>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn by_reason(m: &BTreeMap<String, u64>, what: &str) -> String {
            let total: u64 = m.values().sum();
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{v} {k}")).collect();
            match parts.is_empty() {
                true => format!("{total} {what}"),
                false => format!("{total} {what} ({})", parts.join(", ")),
            }
        }
        let requests = self.requests.map(|n| format!(", {n} S3 requests")).unwrap_or_default();
        if self.snapshots_read == 0 {
            return write!(f, "nothing new to process ({:.2} s{requests})", self.elapsed.as_secs_f64());
        }
        let parts = match self.partitions_written.as_slice() {
            [] => "no partitions written".to_owned(),
            [one] => format!("1 partition written ({one})"),
            many => format!("{} partitions written ({} … {})", many.len(), many[0], many[many.len() - 1]),
        };
        write!(
            f,
            "{} snapshot(s) read, {} rows: {} kept, {}, {}; {parts}{} in {:.2} s{requests}",
            self.snapshots_read,
            self.rows_read,
            self.rows_kept,
            by_reason(&self.dropped, "dropped"),
            by_reason(&self.quarantined, "quarantined"),
            if self.partitions_deleted.is_empty() { String::new() } else { format!(", {} stale removed", self.partitions_deleted.len()) },
            self.elapsed.as_secs_f64()
        )
    }
}

/// Run DuckDB work on the current thread without starving other tasks of a multi-thread runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A spinner with elapsed time for a phase whose length is unknown (DuckDB work); hidden off a terminal.
fn spinner(what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(what);
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A local copy of an optional lake object (None if it does not exist): one GET on S3.
/// Only for small objects (carry state, one day's partition), which are read into memory.
async fn fetch_optional(lake: &Lake, key: &str, dir: &Path) -> Result<Option<PathBuf>> {
    if let Some(p) = lake.local_path(key) {
        return Ok(p.exists().then_some(p));
    }
    let Some(bytes) = lake.get(key).await? else { return Ok(None) };
    std::fs::create_dir_all(dir)?;
    let p = dir.join(key.replace('/', "_"));
    std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
    Ok(Some(p))
}

/// Crash-test hooks, unset in normal use: `TICKERLAKE_FAILPOINT=<name>` aborts the process at
/// that point exactly like a kill -9; `TICKERLAKE_PAUSEPOINT=<name>:<secs>` sleeps there once, so a
/// test can take the S3 endpoint down mid-run. Tests use them to prove a re-run converges.
fn failpoint(name: &str) {
    if std::env::var("TICKERLAKE_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
    static PAUSED: std::sync::Once = std::sync::Once::new();
    if let Some(secs) = std::env::var("TICKERLAKE_PAUSEPOINT").ok().and_then(|v| v.strip_prefix(&format!("{name}:")).and_then(|s| s.parse().ok())) {
        PAUSED.call_once(|| {
            eprintln!("pausepoint {name}: sleeping {secs} s");
            // Pause this step only: a plain sleep would also freeze the tasks queued on this
            // worker (in-flight uploads among them) for the whole pause.
            blocking(|| std::thread::sleep(Duration::from_secs(secs)));
        });
    }
}

pub fn new_run_id() -> String {
    format!("{}-{:06x}", Utc::now().format("%Y%m%dT%H%M%S%.3fZ"), rand::random::<u32>() & 0xff_ffff)
}

/// Process new raw snapshots (or all, with `full`) into the lake's processed partitions.
pub async fn process(lake: &Lake, opts: &ProcessOptions) -> Result<Summary> {
    let started = Instant::now();
    let requests_before = lake.requests();
    let run_id = new_run_id();
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown host".into());
    let guard = lake.lock(&format!("run {run_id}, pid {} on {host}", std::process::id())).await?;
    let result = process_locked(lake, opts, &run_id).await;
    if let Err(e) = guard.release().await {
        tracing::warn!("could not release the lake lock: {e:#}");
    }
    let mut summary = result?;
    summary.elapsed = started.elapsed();
    summary.requests = lake.requests().zip(requests_before).map(|(after, before)| after - before);
    Ok(summary)
}

async fn process_locked(lake: &Lake, opts: &ProcessOptions, run_id: &str) -> Result<Summary> {
    let mut manifest = if opts.full { Manifest::empty() } else { Manifest::load(lake).await? };
    let listing: Vec<ObjectMeta> = lake.list(RAW_PREFIX).await?.into_iter().filter(|o| o.key.ends_with(".csv")).collect();
    let present: BTreeMap<String, ObjectMeta> = listing.into_iter().map(|o| (o.key.clone(), o)).collect();
    report_drift(&manifest, &present);
    let new: Vec<ObjectMeta> = present.values().filter(|o| !manifest.raw.contains_key(&o.key)).cloned().collect();
    let mut summary = Summary::default();
    if new.is_empty() {
        tracing::info!("no new raw snapshots in {}", lake.describe());
        return Ok(summary);
    }
    tracing::info!(new = new.len(), run_id, full = opts.full, "processing raw snapshots");
    let stage = tempfile::Builder::new().prefix("tickerlake-run-").tempdir().context("cannot create a stage directory")?;
    let new_keys: Vec<String> = new.iter().map(|o| o.key.clone()).collect();
    let new_files = lake::materialize(lake, &new_keys, &stage.path().join("raw"), "raw").await?;

    let mut engine = Engine::new(stage.path(), &opts.memory_limit)?;
    let phase = spinner("reading raw CSV");
    let loaded = blocking(|| engine.load_raw("new_rows", &new_files))?;
    phase.finish_and_clear();
    summary.snapshots_read = new.len();
    summary.rows_read = loaded.per_file.values().map(|s| s.rows).sum();
    summary.rows_kept = loaded.per_file.values().map(|s| s.kept).sum();
    summary.dropped = loaded.dropped.clone();
    summary.quarantined = loaded.quarantined.clone();

    let earliest_new = loaded.per_file.values().filter_map(|s| s.first_date.clone()).min();
    let mut dirty_dates = Vec::new();
    let staged = match earliest_new {
        Some(date) => {
            let window = plan_window(lake, &manifest, &engine, date, stage.path()).await?;
            dirty_dates.clone_from(&window.dirty_dates);
            let dirty_files = if window.dirty_dates.is_empty() {
                Vec::new()
            } else {
                // Only raw files still there: a removed one's rows are gone from the rebuilt dates.
                let keys: BTreeSet<String> = window.dirty_dates.iter()
                    .flat_map(|d| manifest.raw_files_for(d).map(str::to_owned).collect::<Vec<_>>())
                    .filter(|k| present.contains_key(k))
                    .collect();
                lake::materialize(lake, &keys.into_iter().collect::<Vec<_>>(), &stage.path().join("reread"), "re-read").await?
            };
            let phase = spinner("computing indicators");
            let staged = blocking(|| -> Result<StagedOutputs> {
                let mut loaded_tables: Vec<(&str, Option<&[String]>)> = vec![("new_rows", None)];
                if !dirty_files.is_empty() {
                    engine.load_raw("reread_rows", &dirty_files)?;
                    loaded_tables.push(("reread_rows", Some(&window.dirty_dates)));
                }
                engine.build_input(&loaded_tables, &window.clean_partitions, window.carry.as_deref())?;
                engine.write_outputs(run_id, "new_rows")
            })?;
            phase.finish_and_clear();
            staged
        }
        // Nothing kept (all rows dropped or quarantined): only quarantine and the manifest change.
        None => blocking(|| -> Result<StagedOutputs> {
            engine.build_input(&[], &[], None)?;
            engine.write_outputs(run_id, "new_rows")
        })?,
    };
    drop(engine);

    publish(lake, &staged).await?;
    summary.partitions_written = staged.partitions.keys().cloned().collect();
    if opts.full {
        summary.partitions_deleted = remove_stale(lake, &staged).await?;
    }

    failpoint("before-commit");
    // Commit: from here on the run's output is what the lake says was processed.
    record(&mut manifest, &new, &loaded, &staged, &dirty_dates, run_id);
    manifest.commit(lake).await?;
    tracing::info!(run_id, partitions = staged.partitions.len(), "committed");
    Ok(summary)
}

/// What the window computation needs from committed state.
struct Window {
    /// Committed partitions (dates ≥ the recompute start) whose files are the committed ones.
    clean_partitions: Vec<PathBuf>,
    /// Committed dates whose partition file is missing or not from the committed run: rebuilt from raw.
    dirty_dates: Vec<String>,
    /// The last 4 rows per symbol before the recompute start.
    carry: Option<PathBuf>,
}

async fn plan_window(lake: &Lake, manifest: &Manifest, engine: &Engine, earliest_new: String, stage: &Path) -> Result<Window> {
    let dir = stage.join("committed");
    let is_committed = |path: &Path, entry: &PartitionEntry| -> Result<bool> {
        Ok(blocking(|| engine.run_id_of(path))?.as_deref() == Some(entry.run_id.as_str()))
    };
    // Walk back while the carry state before the start cannot be trusted.
    let mut start = earliest_new;
    let carry = loop {
        let Some((prev, entry)) = manifest.partitions.range(..start.clone()).next_back() else { break None };
        match fetch_optional(lake, &lake::carry_key(prev), &dir).await? {
            Some(path) if is_committed(&path, entry)? => break Some(path),
            _ => {
                tracing::warn!(date = %prev, "carry state is missing or from an uncommitted run; recomputing from that date");
                start = prev.clone();
            }
        }
    };
    let mut window = Window { clean_partitions: Vec::new(), dirty_dates: Vec::new(), carry };
    for (date, entry) in manifest.partitions.range(start..) {
        match fetch_optional(lake, &lake::processed_key(date), &dir).await? {
            Some(path) if is_committed(&path, entry)? => window.clean_partitions.push(path),
            _ => {
                tracing::warn!(%date, "partition is missing or from an uncommitted run; rebuilding it from raw");
                window.dirty_dates.push(date.clone());
            }
        }
    }
    Ok(window)
}

async fn publish(lake: &Lake, staged: &StagedOutputs) -> Result<()> {
    let mut uploads: Vec<(String, &Path)> = Vec::new();
    for (date, (path, _)) in &staged.partitions {
        uploads.push((lake::processed_key(date), path));
    }
    for (date, path) in &staged.carries {
        uploads.push((lake::carry_key(date), path));
    }
    for (raw_key, path) in &staged.quarantine {
        uploads.push((quarantine_key(raw_key), path));
    }
    let bar = lake::progress(uploads.len() as u64, "publish");
    futures::stream::iter(uploads.iter().map(|(key, path)| {
        let bar = bar.clone();
        async move {
            lake.put_file(key, path).await?;
            if key.starts_with(PROCESSED_PREFIX) {
                // An uncommitted partition is now visible: the state a crash here must recover from.
                failpoint("mid-publish");
            }
            bar.inc(1);
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(lake::IO_CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    bar.finish_and_clear();
    Ok(())
}

/// `quarantine/<raw file name>`: one file per raw file, so re-running rewrites rather than adds.
pub fn quarantine_key(raw_key: &str) -> String {
    let name = raw_key.rsplit('/').next().unwrap_or(raw_key);
    format!("{QUARANTINE_PREFIX}{name}")
}

/// After a full rebuild, delete partitions/carry/quarantine files the rebuild did not produce.
async fn remove_stale(lake: &Lake, staged: &StagedOutputs) -> Result<Vec<String>> {
    let keep: BTreeSet<String> = staged.partitions.keys().map(|d| lake::processed_key(d))
        .chain(staged.carries.keys().map(|d| lake::carry_key(d)))
        .chain(staged.quarantine.keys().map(|k| quarantine_key(k)))
        .collect();
    let mut removed = Vec::new();
    for prefix in [PROCESSED_PREFIX, CARRY_PREFIX, QUARANTINE_PREFIX] {
        for obj in lake.list(prefix).await? {
            if !keep.contains(&obj.key) {
                lake.delete(&obj.key).await?;
                if obj.key.starts_with(PROCESSED_PREFIX) {
                    removed.push(obj.key);
                }
            }
        }
    }
    Ok(removed)
}

/// The manifest after this run: its new raw files, and its partitions as the committed ones.
fn record(manifest: &mut Manifest, new: &[ObjectMeta], loaded: &LoadStats, staged: &StagedOutputs, dirty_dates: &[String], run_id: &str) {
    for obj in new {
        let s = loaded.per_file.get(&obj.key).cloned().unwrap_or_default();
        manifest.raw.insert(obj.key.clone(), RawEntry {
            version: obj.version.clone(),
            rows: s.rows,
            kept: s.kept,
            quarantined: s.quarantined,
            first_date: s.first_date,
            last_date: s.last_date,
        });
    }
    for (date, (_, rows)) in &staged.partitions {
        manifest.partitions.insert(date.clone(), PartitionEntry { run_id: run_id.to_owned(), rows: *rows });
    }
    for date in dirty_dates.iter().filter(|d| !staged.partitions.contains_key(*d)) {
        // Rebuilt from raw and nothing was left: the date no longer has a partition.
        manifest.partitions.remove(date);
    }
}

/// Warn about raw files changed or removed after processing: incremental runs cannot undo rows.
fn report_drift(manifest: &Manifest, present: &BTreeMap<String, ObjectMeta>) {
    for (key, entry) in &manifest.raw {
        match present.get(key) {
            None => tracing::warn!(%key, "raw file was processed but is gone; its rows stay in processed/ until `tickerlake process --full`"),
            Some(o) if o.version != entry.version => {
                tracing::warn!(%key, "raw file changed after it was processed; run `tickerlake process --full` to rebuild from the new contents")
            }
            _ => {}
        }
    }
}
