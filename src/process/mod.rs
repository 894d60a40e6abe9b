//! `process`: raw snapshots → validated rows → indicators → Parquet partitions, incrementally.
//!
//! A run reads only raw files the manifest has not seen, plus what the window needs: the
//! committed partitions from the earliest new date on, and the carry state (last 4 rows of every
//! symbol) of the partition just before. It rewrites every partition from that date on, so a late
//! snapshot with an old timestamp gives the same result as a full recompute. The run computes
//! its outputs and hands them to its [`Transaction`], which owns how they become visible
//! (`lake::commit`: stage, compare-and-swap commit, publish, clean up). Partitions and carry
//! files also name the run that wrote them, and one that is not the committed run's (a lost or
//! damaged file) is recomputed from raw by the next run.

pub mod engine;
pub mod error;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::blocking::in_place as blocking;
use crate::faults;
use crate::lake::commit::{self, MonthFiles, Transaction};
use crate::lake::manifest::{Manifest, PartitionEntry, RawEntry, month_of_raw};
use crate::lake::{self, DateFile, LATE_RAW_NOTE, Lake, MonthFile, ObjectMeta, RAW_PREFIX};
use engine::{Engine, LoadStats, MonthBase, MonthBuilt, Rollups, StagedOutputs};
pub use error::{ProcessError, ProcessResult};

/// DuckDB's memory budget for a run unless told otherwise: a month of 3,000 symbols fits in it;
/// larger rebuilds spill to the run's stage directory instead of growing the process.
pub const DEFAULT_MEMORY_LIMIT: &str = "256MB";

/// How to run `process`.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Ignore the manifest and rebuild every partition from all raw files.
    pub full: bool,
    /// DuckDB memory limit (e.g. "256MB", "2GB").
    pub memory_limit: String,
    /// Raw CSV bytes per chunk; `None`: half the memory limit (tests set it small to force chunks).
    pub chunk_bytes: Option<u64>,
    /// Which raw files to look at for new ones.
    pub listing: Listing,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self { full: false, memory_limit: DEFAULT_MEMORY_LIMIT.to_owned(), chunk_bytes: None, listing: Listing::Full }
    }
}

/// Which raw files a run looks at for new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listing {
    /// Every raw file (`tickerlake process`): nothing is missed, and files changed or removed
    /// after processing are reported.
    #[default]
    Full,
    /// The hourly run's: the raw files from two days before the newest processed snapshot on,
    /// and every raw file once a day (see `list_raw`).
    Recent,
}

/// What a run did, printed at its end.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// New raw files read.
    pub snapshots_read: usize,
    /// Data rows in them.
    pub rows_read: u64,
    /// Rows kept for the indicators.
    pub rows_kept: u64,
    /// Rows dropped by the original job's filters, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Rows quarantined, by reason.
    pub quarantined: BTreeMap<String, u64>,
    /// Dates whose partitions this run committed.
    pub partitions_written: Vec<String>,
    /// Dates the committed state no longer has a partition for (a rebuild found no rows left).
    pub dates_removed: Vec<String>,
    /// Published partition files of such dates removed.
    pub partitions_deleted: Vec<String>,
    /// Files that no manifest names moved out of `processed/` (see `lake::foreign_key`).
    pub foreign_moved: usize,
    /// Committed dates that got their rollups (committed before rollups existed).
    pub rollups_added: usize,
    /// Months whose month files this run built (see `lake::MonthFile`).
    pub months_built: usize,
    /// Wall time of the run.
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
        if self.snapshots_read == 0
            && self.partitions_written.is_empty()
            && self.dates_removed.is_empty()
            && self.rollups_added == 0
            && self.months_built == 0
        {
            return write!(f, "nothing new to process ({:.2} s{requests})", self.elapsed.as_secs_f64());
        }
        let parts = match self.partitions_written.as_slice() {
            [] => "no partitions written".to_owned(),
            [one] => format!("1 partition written ({one})"),
            many => format!("{} partitions written ({} … {})", many.len(), many[0], many[many.len() - 1]),
        };
        write!(
            f,
            "{} snapshot(s) read, {} rows: {} kept, {}, {}; {parts}{}{}{}{} in {:.2} s{requests}",
            self.snapshots_read,
            self.rows_read,
            self.rows_kept,
            by_reason(&self.dropped, "dropped"),
            by_reason(&self.quarantined, "quarantined"),
            if self.partitions_deleted.is_empty() { String::new() } else { format!(", {} stale removed", self.partitions_deleted.len()) },
            if self.foreign_moved == 0 { String::new() } else { format!(", {} foreign file(s) moved aside", self.foreign_moved) },
            if self.rollups_added == 0 { String::new() } else { format!(", rollups added to {} earlier date(s)", self.rollups_added) },
            if self.months_built == 0 { String::new() } else { format!(", month files of {} month(s)", self.months_built) },
            self.elapsed.as_secs_f64()
        )
    }
}

/// Run one phase of a run and log its wall time at debug level (`RUST_LOG=tickerlake=debug`
/// shows where a run spends its time, phase by phase and chunk by chunk).
pub(crate) fn timed<T>(phase: &'static str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    phase_done(phase, started);
    out
}

/// Log the wall time of a phase that started at `started` (see [`timed`]).
pub(crate) fn phase_done(phase: &'static str, started: Instant) {
    tracing::debug!(phase, ms = started.elapsed().as_millis() as u64, "phase done");
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
async fn fetch_optional(lake: &Lake, key: &str, dir: &Path) -> ProcessResult<Option<PathBuf>> {
    if let Some(p) = lake.local_path(key) {
        return Ok(p.exists().then_some(p));
    }
    let Some(bytes) = lake.get(key).await? else { return Ok(None) };
    std::fs::create_dir_all(dir)?;
    let p = dir.join(key.replace('/', "_"));
    std::fs::write(&p, bytes).map_err(|source| ProcessError::Io { context: format!("cannot write {}", p.display()), source })?;
    Ok(Some(p))
}

/// Process new raw snapshots (or all, with `full`) into the lake's processed partitions.
pub async fn process(lake: &Lake, opts: &ProcessOptions) -> ProcessResult<Summary> {
    let started = Instant::now();
    let requests_before = lake.requests();
    let run_id = commit::new_run_id();
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown host".into());
    let guard = if faults::enabled("ignore-lock") {
        None
    } else {
        Some(lake.lock(&format!("run {run_id}, pid {} on {host}", std::process::id())).await?)
    };
    let fence = guard.as_ref().map(lake::LockGuard::fence).unwrap_or_default();
    let result = process_locked(lake, opts, &run_id, fence).await;
    if let Some(guard) = guard
        && let Err(e) = guard.release().await
    {
        tracing::warn!("could not release the lake lock: {e}");
    }
    let mut summary = result?;
    summary.elapsed = started.elapsed();
    summary.requests = lake.requests().zip(requests_before).map(|(after, before)| after - before);
    Ok(summary)
}

async fn process_locked(lake: &Lake, opts: &ProcessOptions, run_id: &str, fence: lake::Fence) -> ProcessResult<Summary> {
    let mut tx = Transaction::begin(lake, run_id, fence, opts.full).await?;
    let mut summary = Summary::default();
    match compute(lake, opts, &mut tx, &mut summary).await {
        Ok(true) => {}
        Ok(false) => return Ok(summary),
        Err(e) => {
            // Nothing of this run is committed: its staging area is garbage.
            tx.abandon().await;
            return Err(e);
        }
    }
    let committed = tx.commit().await?;
    summary.dates_removed = committed.dates_removed().to_vec();
    // Committed: from here on a failure is only a warning. Readers already see the committed
    // files (from staging if need be), and the next run finishes what is left.
    let finished = committed.finish().await;
    summary.partitions_deleted = finished.stale_removed;
    summary.foreign_moved = finished.foreign_moved;
    Ok(summary)
}

/// Compute this run's outputs, stage them and record them in `tx`; whether there was anything to do.
///
/// New raw files are worked through in chunks, in key (= time) order, each sized to what the
/// memory limit holds: a chunk is an incremental step on top of the previous chunks' staged
/// outputs, so memory is bounded by the chunk, never by the history. The run commits once, at
/// the end: readers see all of it or none of it. Committed dates whose file was found gone are
/// rebuilt from raw even when nothing is new.
async fn compute(lake: &Lake, opts: &ProcessOptions, tx: &mut Transaction, summary: &mut Summary) -> ProcessResult<bool> {
    let raw = list_raw(lake, opts, tx).await?;
    let new: Vec<ObjectMeta> = raw.present.values().filter(|o| !tx.state().contains_raw(&o.key)).cloned().collect();
    if new.is_empty() && tx.lost_dates().is_empty() {
        tracing::info!("no new raw snapshots in {}", lake.describe());
        summary.rollups_added = add_missing_rollups(lake, opts, tx).await?;
        summary.months_built = build_month_files(lake, opts, tx).await?;
        return Ok(summary.rollups_added > 0 || summary.months_built > 0);
    }
    let mut chunks = chunks(&new, opts.chunk_bytes.unwrap_or_else(|| chunk_budget(&opts.memory_limit)));
    if chunks.is_empty() {
        // Nothing new, but lost dates to rebuild: one step with no new files.
        chunks.push(Vec::new());
    }
    tracing::info!(new = new.len(), chunks = chunks.len(), run_id = tx.run_id(), full = opts.full, "processing raw snapshots");
    // Files and rows done, and the rate, on a terminal (indicatif draws nothing in logs).
    let progress = indicatif::ProgressBar::new(new.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} snapshots, {msg} [{bar:30}] {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut written = BTreeSet::new();
    for chunk in &chunks {
        let step = process_chunk(lake, opts, tx, chunk, &raw).await?;
        summary.snapshots_read += chunk.len();
        summary.rows_read += step.loaded.per_file.values().map(|s| s.rows).sum::<u64>();
        summary.rows_kept += step.loaded.per_file.values().map(|s| s.kept).sum::<u64>();
        for (reason, n) in &step.loaded.dropped {
            *summary.dropped.entry(reason.clone()).or_default() += n;
        }
        for (reason, n) in &step.loaded.quarantined {
            *summary.quarantined.entry(reason.clone()).or_default() += n;
        }
        written.extend(step.dates_written);
        progress.inc(chunk.len() as u64);
        progress.set_message(format!("{} rows", summary.rows_read));
        if chunks.len() > 1 {
            tracing::debug!(done = progress.position(), of = new.len(), rows = summary.rows_read, "chunk staged");
        }
    }
    progress.finish_and_clear();
    summary.partitions_written = written.into_iter().collect();
    summary.rollups_added = add_missing_rollups(lake, opts, tx).await?;
    summary.months_built = build_month_files(lake, opts, tx).await?;
    Ok(true)
}

/// Dates a run may give rollups at once (each date's partition is read back whole).
const ROLLUP_BATCH: usize = 31;

/// Give the published dates of the loaded months that have no rollups (committed before
/// rollups existed) their rollup files, read back from their partitions a month at a time. The
/// files go straight to their published keys: they are functions of the committed partitions,
/// and readers look for them only once the commit records them. Returns how many dates got them.
async fn add_missing_rollups(lake: &Lake, opts: &ProcessOptions, tx: &mut Transaction) -> ProcessResult<usize> {
    // A month whose month files are to be built needs every date's rollups.
    tx.ensure(tx.state().stale_months().clone()).await?;
    let missing: Vec<(String, String)> =
        tx.state().partitions().iter().filter(|(_, e)| !e.rollups && e.published).map(|(d, e)| (d.clone(), e.processed_key(d))).collect();
    if missing.is_empty() {
        return Ok(0);
    }
    tracing::info!(dates = missing.len(), "computing rollups for dates committed before rollups existed");
    for batch in missing.chunks(ROLLUP_BATCH) {
        let stage = tempfile::Builder::new()
            .prefix("tickerlake-rollups-")
            .tempdir()
            .map_err(|source| ProcessError::Io { context: "cannot create a stage directory".into(), source })?;
        let keys: Vec<String> = batch.iter().map(|(_, k)| k.clone()).collect();
        let files = lake::materialize(lake, &keys, &stage.path().join("committed"), "rollups").await?;
        let dated: Vec<(String, PathBuf)> = batch.iter().zip(files).map(|((date, _), (path, _))| (date.clone(), path)).collect();
        let engine = Engine::new(stage.path(), &opts.memory_limit)?;
        let rollups = blocking(|| engine.rollups_of(&dated, tx.run_id(), &stage.path().join("out")))?;
        let mut uploads: Vec<(String, &Path)> = Vec::new();
        for (date, r) in &rollups {
            uploads.push((DateFile::Daily.key(date), &r.daily));
            uploads.push((DateFile::Snapshots.key(date), &r.snapshots));
        }
        tx.put_published(&uploads).await?;
        for date in rollups.keys() {
            tx.record_rollups(date);
        }
    }
    Ok(missing.len())
}

/// Build and stage the month files of every month [`Transaction::months_to_build`] names, from
/// the month's per-date rollups as the run will commit them, one month at a time. Where the
/// month's published files are current, only the dates the run changed are read, the rest
/// comes from those files: an hourly run reads two files and the day's rollups, whatever the
/// length of the month. Returns how many months got files.
async fn build_month_files(lake: &Lake, opts: &ProcessOptions, tx: &mut Transaction) -> ProcessResult<usize> {
    let months = tx.months_to_build();
    if months.is_empty() {
        return Ok(0);
    }
    tx.ensure(months.iter().cloned()).await?;
    let started = Instant::now();
    let stage = tempfile::Builder::new()
        .prefix("tickerlake-months-")
        .tempdir()
        .map_err(|source| ProcessError::Io { context: "cannot create a stage directory".into(), source })?;
    let engine = Engine::new(stage.path(), &opts.memory_limit)?;
    let mut built = 0;
    for month in &months {
        let dates: BTreeMap<String, PartitionEntry> =
            tx.state().partitions().range(format!("{month}-01")..=format!("{month}-31")).map(|(d, e)| (d.clone(), e.clone())).collect();
        if dates.is_empty() {
            tx.record_month_files(month, MonthFiles::NoDates);
            continue;
        }
        if let Some((date, _)) = dates.iter().find(|(_, e)| !e.rollups) {
            // Only a date committed before rollups existed and not published yet: the next run
            // publishes it, gives it rollups, and builds the month.
            tracing::warn!(%month, %date, "a date of this month has no rollups yet; its month files are left to the next run");
            tx.record_month_files(month, MonthFiles::Later);
            continue;
        }
        let dir = stage.path().join(month);
        let base = match tx.month_files_current(month) {
            true => {
                let daily = fetch_optional(lake, &MonthFile::Daily.key(month), &dir.join("base")).await?;
                let snapshots = fetch_optional(lake, &MonthFile::Snapshots.key(month), &dir.join("base")).await?;
                daily.zip(snapshots).map(|(daily, snapshots)| MonthBase { daily, snapshots })
            }
            false => None,
        };
        let changed = tx.changed_dates();
        let keep: Vec<String> = dates.keys().filter(|d| base.is_some() && !changed.contains(*d)).cloned().collect();
        let mut month_built = build_month(lake, &engine, tx, &dates, base.as_ref(), &keep, &dir).await?;
        if base.is_some() && month_built.dates != dates.keys().cloned().collect::<BTreeSet<_>>() {
            // The published files were not what the manifest says: build from every date.
            tracing::warn!(%month, "the published month files do not hold the month's committed dates; building them from every date");
            month_built = build_month(lake, &engine, tx, &dates, None, &[], &dir).await?;
        }
        let files = [
            (MonthFile::Daily.key(month), month_built.daily.as_path()),
            (MonthFile::Snapshots.key(month), month_built.snapshots.as_path()),
        ];
        tx.stage(&files).await?;
        tx.record_month_files(month, MonthFiles::Staged);
        built += 1;
    }
    phase_done("building month files", started);
    Ok(built)
}

/// One month's files: `base`'s rows of the dates in `keep`, the per-date rollups of the others.
async fn build_month(
    lake: &Lake,
    engine: &Engine,
    tx: &Transaction,
    dates: &BTreeMap<String, PartitionEntry>,
    base: Option<&MonthBase>,
    keep: &[String],
    dir: &Path,
) -> ProcessResult<MonthBuilt> {
    let read: Vec<(&String, &PartitionEntry)> = dates.iter().filter(|(d, _)| !keep.contains(*d)).collect();
    tracing::debug!(dir = %dir.display(), from_published = keep.len(), from_rollups = read.len(), "building a month's files (dates)");
    let mut files = Vec::new();
    for kind in DateFile::ROLLUPS {
        let keys: Vec<String> = read.iter().map(|(d, e)| e.key(kind, d)).collect();
        files.push(lake::materialize(lake, &keys, &dir.join("in"), "month files").await?);
    }
    let rollups: Vec<(String, Rollups)> = read
        .iter()
        .zip(files[0].iter().zip(&files[1]))
        .map(|((d, _), ((daily, _), (snapshots, _)))| ((*d).clone(), Rollups { daily: daily.clone(), snapshots: snapshots.clone() }))
        .collect();
    blocking(|| engine.month_files_of(base, keep, &rollups, tx.run_id(), &dir.join("out")))
}

/// The raw files a run sees.
struct RawListing {
    /// What the listing found, by key.
    present: BTreeMap<String, ObjectMeta>,
    /// For a short listing, the key it started after: older keys were not looked at.
    after: Option<String>,
}

impl RawListing {
    /// Whether a raw file may still be read: listed, or older than a short listing looked.
    fn may_be_present(&self, key: &str) -> bool {
        self.present.contains_key(key) || self.after.as_deref().is_some_and(|a| key <= a)
    }
}

/// How far back before the newest processed raw file a short listing looks: snapshots of the
/// last two days that arrive late are still found by hourly runs.
const RECENT_REACH: chrono::TimeDelta = chrono::TimeDelta::hours(48);
/// How long after a run that listed every raw file others may list only the recent ones: files
/// dropped into `raw/` with older names are found within a day (at once by `tickerlake process`).
const FULL_LISTING_EVERY: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// List the raw files this run works from, load the manifest months it needs to tell which are
/// new, and warn about processed files that changed or went away. An hourly run ([`Listing::Recent`])
/// lists only keys after a point two days before the newest processed snapshot (one request
/// on S3, whatever the history), except once a day and once after a backfill wrote older snapshots
/// (the lake's late-raw note changed); everything else lists every raw file.
async fn list_raw(lake: &Lake, opts: &ProcessOptions, tx: &mut Transaction) -> ProcessResult<RawListing> {
    let now = chrono::Utc::now();
    // Read before listing: raw files written before the note's latest text are in the listing.
    let late_raw = match opts.listing {
        Listing::Recent => lake.get(LATE_RAW_NOTE).await?.map(|b| String::from_utf8_lossy(&b).into_owned()),
        Listing::Full => None,
    };
    let late_raw_arrived = late_raw.is_some() && late_raw.as_deref() != tx.state().late_raw_listed();
    let after = match (opts.listing, tx.state().raw_watermark()) {
        (Listing::Recent, Some((newest, Some(listed)))) if !tx.is_full() && now.signed_duration_since(listed) < FULL_LISTING_EVERY => {
            if late_raw_arrived {
                tracing::info!(
                    "a backfill added snapshots older than the recent hours since the last full listing: listing every raw file"
                );
                None
            } else {
                recent_start(newest)
            }
        }
        _ => None,
    };
    let objects = match &after {
        Some(after) => lake.list_after(RAW_PREFIX, after).await?,
        None => lake.list(RAW_PREFIX).await?,
    };
    let present: BTreeMap<String, ObjectMeta> =
        objects.into_iter().filter(|o| o.key.ends_with(".csv")).map(|o| (o.key.clone(), o)).collect();
    let months: BTreeSet<String> = match &after {
        Some(_) => present.keys().map(|k| month_of_raw(k)).collect(),
        None => {
            tx.note_full_listing(now, late_raw);
            tx.state().months().map(str::to_owned).chain(present.keys().map(|k| month_of_raw(k))).collect()
        }
    };
    tx.ensure(months).await?;
    let listing = RawListing { present, after };
    report_drift(tx.state(), &listing);
    Ok(listing)
}

/// Where a short listing starts: the newest processed snapshot's key with its hour moved back
/// [`RECENT_REACH`] (keys sort by hour); None when the key carries no hour.
fn recent_start(newest: &str) -> Option<String> {
    let at = newest.find("raw_crypto_prices_")? + "raw_crypto_prices_".len();
    let stamp = newest.get(at..at + 11)?;
    let hour = chrono::NaiveDateTime::parse_from_str(&format!("{stamp}00"), "%Y%m%dT%H%M").ok()?;
    Some(format!("{}{}", &newest[..at], (hour - RECENT_REACH).format("%Y%m%dT%H")))
}

/// What one chunk did.
struct ChunkOutcome {
    loaded: LoadStats,
    dates_written: Vec<String>,
}

/// Split the new raw files (in key order) into runs of at most `budget` bytes of CSV (at least one
/// file each).
fn chunks(new: &[ObjectMeta], budget: u64) -> Vec<Vec<ObjectMeta>> {
    let mut out: Vec<Vec<ObjectMeta>> = Vec::new();
    let mut size = 0;
    for obj in new {
        if out.is_empty() || size + obj.size > budget {
            out.push(Vec::new());
            size = 0;
        }
        size += obj.size;
        out.last_mut().expect("just pushed").push(obj.clone());
    }
    out
}

/// Bytes of raw CSV one chunk may hold: half the memory limit (a month of 3,000 symbols, 116 MB of
/// CSV, runs in 256 MB). Unparsable limits get the default budget; DuckDB then rejects them.
fn chunk_budget(memory_limit: &str) -> u64 {
    parse_size(memory_limit).unwrap_or(256 << 20) / 2
}

/// A size in DuckDB's notation (`256MB`, `2GB`, `1.5GiB`, `512 KiB`, `1000000B`), in bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "byte" | "bytes" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * scale) as u64)
}

/// One incremental step: read `chunk`, recompute from its earliest date (or an earlier lost
/// one) on top of the committed (or this run's already staged) state, stage the outputs, and
/// record them in `tx` as this run's (not yet committed).
async fn process_chunk(
    lake: &Lake,
    opts: &ProcessOptions,
    tx: &mut Transaction,
    chunk: &[ObjectMeta],
    raw: &RawListing,
) -> ProcessResult<ChunkOutcome> {
    let stage = tempfile::Builder::new()
        .prefix("tickerlake-run-")
        .tempdir()
        .map_err(|source| ProcessError::Io { context: "cannot create a stage directory".into(), source })?;
    let keys: Vec<String> = chunk.iter().map(|o| o.key.clone()).collect();
    let started = Instant::now();
    let files = lake::materialize(lake, &keys, &stage.path().join("raw"), "raw").await?;
    phase_done("fetching raw files", started);

    let mut engine = Engine::new(stage.path(), &opts.memory_limit)?;
    let phase = spinner("reading raw CSV");
    let loaded = blocking(|| engine.load_raw("new_rows", &files)).map_err(|e| e.with_memory_hint(&opts.memory_limit))?;
    phase.finish_and_clear();

    let earliest_new = loaded.per_file.values().filter_map(|s| s.first_date.clone()).chain(tx.lost_dates().iter().cloned()).min();
    let mut dirty_dates = Vec::new();
    let staged = match earliest_new {
        Some(date) => {
            let started = Instant::now();
            let window = plan_window(lake, tx, &engine, date, stage.path()).await?;
            phase_done("reading committed state", started);
            dirty_dates.clone_from(&window.dirty_dates);
            let dirty_files = if window.dirty_dates.is_empty() {
                Vec::new()
            } else {
                let months: BTreeSet<String> = window.dirty_dates.iter().flat_map(|d| tx.state().months_with_raw_for(d)).collect();
                tx.ensure(months).await?;
                // Only raw files still there: a removed one's rows are gone from the rebuilt dates.
                let keys: BTreeSet<String> = window
                    .dirty_dates
                    .iter()
                    .flat_map(|d| tx.state().raw_files_for(d).map(str::to_owned).collect::<Vec<_>>())
                    .filter(|k| raw.may_be_present(k))
                    .collect();
                lake::materialize(lake, &keys.into_iter().collect::<Vec<_>>(), &stage.path().join("reread"), "re-read").await?
            };
            let phase = spinner("computing indicators");
            let staged = blocking(|| -> ProcessResult<StagedOutputs> {
                let mut loaded_tables: Vec<(&str, Option<&[String]>)> = vec![("new_rows", None)];
                if !dirty_files.is_empty() {
                    engine.load_raw("reread_rows", &dirty_files)?;
                    loaded_tables.push(("reread_rows", Some(&window.dirty_dates)));
                }
                timed("gathering window input", || engine.build_input(&loaded_tables, &window.clean_partitions, window.carry.as_deref()))?;
                engine.write_outputs(tx.run_id(), "new_rows")
            })
            .map_err(|e| e.with_memory_hint(&opts.memory_limit))?;
            phase.finish_and_clear();
            staged
        }
        // Nothing kept (all rows dropped or quarantined): only quarantine and the manifest change.
        None => blocking(|| -> ProcessResult<StagedOutputs> {
            engine.build_input(&[], &[], None)?;
            engine.write_outputs(tx.run_id(), "new_rows")
        })?,
    };
    drop(engine);

    let mut outputs: Vec<(String, &Path)> = Vec::new();
    for (date, (path, _)) in &staged.partitions {
        outputs.push((lake::processed_key(date), path));
    }
    for (date, path) in &staged.carries {
        outputs.push((lake::carry_key(date), path));
    }
    for (date, rollups) in &staged.rollups {
        outputs.push((DateFile::Daily.key(date), &rollups.daily));
        outputs.push((DateFile::Snapshots.key(date), &rollups.snapshots));
    }
    let started = Instant::now();
    tx.stage(&outputs).await?;
    let quarantine: Vec<(String, &Path)> =
        staged.quarantine.iter().map(|(raw, path)| (lake::quarantine_key(raw), path.as_path())).collect();
    tx.put_published(&quarantine).await?;
    phase_done("staging outputs in the lake", started);
    record(tx, chunk, &loaded, &staged, &dirty_dates);
    Ok(ChunkOutcome { loaded, dates_written: staged.partitions.keys().cloned().collect() })
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

async fn plan_window(lake: &Lake, tx: &mut Transaction, engine: &Engine, earliest_new: String, stage: &Path) -> ProcessResult<Window> {
    let dir = stage.join("committed");
    let is_committed = |path: &Path, entry: &PartitionEntry| -> ProcessResult<bool> {
        Ok(blocking(|| engine.run_id_of(path))?.as_deref() == Some(entry.run_id.as_str()))
    };
    // Walk back while the carry state before the start cannot be trusted (loading the months
    // the window reaches: the partitions from the start on, the one before it).
    let mut start = earliest_new;
    let carry = loop {
        tx.ensure(tx.state().months_for_window(&start)).await?;
        let Some((prev, entry)) = tx.state().partitions().range(..start.clone()).next_back() else { break None };
        let (prev, entry) = (prev.clone(), entry.clone());
        match fetch_optional(lake, &entry.carry_key(&prev), &dir).await? {
            Some(path) if is_committed(&path, &entry)? => break Some(path),
            _ => {
                tracing::warn!(date = %prev, "carry state is missing or not the committed run's; recomputing from that date");
                start = prev;
            }
        }
    };
    let mut window = Window { clean_partitions: Vec::new(), dirty_dates: Vec::new(), carry };
    let manifest = tx.state();
    for (date, entry) in manifest.partitions().range(start..) {
        match fetch_optional(lake, &entry.processed_key(date), &dir).await? {
            Some(path) if is_committed(&path, entry)? => window.clean_partitions.push(path),
            _ => {
                tracing::warn!(%date, "partition is missing or not the committed run's; rebuilding it from raw");
                window.dirty_dates.push(date.clone());
            }
        }
    }
    Ok(window)
}

/// Hand this chunk's outcome to the transaction: its raw files, and its partitions as the
/// committed ones; dates rebuilt from raw with nothing left lose their partition.
fn record(tx: &mut Transaction, new: &[ObjectMeta], loaded: &LoadStats, staged: &StagedOutputs, dirty_dates: &[String]) {
    for obj in new {
        let s = loaded.per_file.get(&obj.key).cloned().unwrap_or_default();
        tx.record_raw(
            obj.key.clone(),
            RawEntry {
                version: obj.version.clone(),
                rows: s.rows,
                kept: s.kept,
                quarantined: s.quarantined,
                first_date: s.first_date,
                last_date: s.last_date,
            },
        );
    }
    for (date, (_, rows)) in &staged.partitions {
        tx.record_partition(date.clone(), *rows);
    }
    for date in dirty_dates.iter().filter(|d| !staged.partitions.contains_key(*d)) {
        tx.drop_partition(date);
    }
}

/// Warn about processed raw files that changed or went away (among those the listing looked
/// at): incremental runs cannot undo rows.
fn report_drift(manifest: &Manifest, listing: &RawListing) {
    for (key, entry) in manifest.raw() {
        if listing.after.as_deref().is_some_and(|a| key.as_str() <= a) {
            continue;
        }
        match listing.present.get(key) {
            None => {
                tracing::warn!(%key, "raw file was processed but is gone; its rows stay in processed/ until `tickerlake process --full`")
            }
            Some(o) if o.version != entry.version => {
                tracing::warn!(%key, "raw file changed after it was processed; run `tickerlake process --full` to rebuild from the new contents")
            }
            _ => {}
        }
    }
}
