//! The lake: where raw snapshots, processed partitions, quarantine and state live.
//!
//! One small trait, [`ObjectStore`], with a local-directory implementation (the embedded default)
//! and an S3 implementation. Everything above this module speaks in lake *keys* (`raw/…`,
//! `processed/date=…/…`) and never knows which backend it is talking to.
//!
//! Layout (identical on every backend, compatible with the original pipeline's bucket):
//! ```text
//! raw/raw_crypto_prices_YYYYMMDDTHHMM.csv      one snapshot per scheduled hour (see source::snapshot)
//! processed/date=YYYY-MM-DD/part-00000.parquet  exactly one file per date partition, replaced atomically
//! rollups/daily/date=…/part-00000.parquet       per symbol and date: first/last/min/max price, counts, % change moments
//! rollups/snapshots/date=…/part-00000.parquet   per snapshot: its time and the symbols kept
//! rollups/by_month/{daily,snapshots}/month=YYYY-MM/part-00000.parquet  a month's rollups in one file (Athena's tables)
//! quarantine/<path under raw/>                 rows rejected from that raw file, with the reason
//! _tickerlake/manifest.json                     what has been processed (the commit point of a run)
//! _tickerlake/carry/date=YYYY-MM-DD/part-00000.parquet  window state carried into the next date
//! _tickerlake/runs/<run id>/…                   a run's outputs until they are committed and published
//! _tickerlake/foreign/processed/…               files found in processed/ that no manifest names, moved aside
//! _tickerlake/lock                              one writer at a time
//! ```
//!
//! Conditional writes ([`PutMode`]) are the primitive the commit protocol (`commit`) and
//! the S3 lease ([`lease`]) are built on; `tests/store_conformance.rs` holds every store to them.

pub mod commit;
pub mod error;
pub mod lease;
pub mod local;
pub mod manifest;
pub mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use error::{CommitError, CommitResult, LakeError, LakeResult};

/// Prefix of the raw snapshots.
pub const RAW_PREFIX: &str = "raw/";
/// Prefix of the published (Hive-readable) processed partitions.
pub const PROCESSED_PREFIX: &str = "processed/";
/// Prefix of the per-raw-file quarantine CSVs.
pub const QUARANTINE_PREFIX: &str = "quarantine/";
/// Prefix of tickerlake's own state (manifest, carry, staging, lock).
pub const STATE_PREFIX: &str = "_tickerlake/";
/// The manifest: the commit point (see [`commit`]).
pub const MANIFEST_KEY: &str = "_tickerlake/manifest.json";
/// Prefix of the published window-state files.
pub const CARRY_PREFIX: &str = "_tickerlake/carry/";
/// Prefix under which each run stages its outputs before it commits.
pub const RUNS_PREFIX: &str = "_tickerlake/runs/";
/// Files found under `processed/` that no manifest names, moved aside (see [`foreign_key`]).
pub const FOREIGN_PREFIX: &str = "_tickerlake/foreign/";
/// Rewritten, with new text each time, by whoever adds raw snapshots older than an hourly run
/// looks at (`backfill`, before and after writing each month): an hourly run that finds text
/// its last full listing did not come after lists every raw file instead of the recent ones.
pub const LATE_RAW_NOTE: &str = "_tickerlake/late-raw";
/// The writer lock (an OS lock locally, a lease object on S3).
pub const LOCK_KEY: &str = "_tickerlake/lock";
/// The single file name inside every partition directory: a fixed name is what makes
/// replacing a partition one atomic write instead of a delete + add that readers could observe.
pub const PART_FILE: &str = "part-00000.parquet";

/// Prefix of the per-symbol daily rollup partitions.
pub const DAILY_PREFIX: &str = "rollups/daily/";
/// Prefix of the per-snapshot rollup partitions.
pub const SNAPSHOTS_PREFIX: &str = "rollups/snapshots/";

/// The files of a committed date, each `<prefix>date=YYYY-MM-DD/part-00000.parquet`: staged
/// together by the run that computes the date, published together after its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFile {
    /// The processed partition: every hourly row with its indicators (what readers and Athena read).
    Processed,
    /// The window state carried into the next date (tickerlake's own).
    Carry,
    /// The per-symbol daily rollup of the partition.
    Daily,
    /// The per-snapshot rollup of the partition.
    Snapshots,
}

impl DateFile {
    /// Every kind, the processed partition first.
    pub const ALL: [DateFile; 4] = [Self::Processed, Self::Carry, Self::Daily, Self::Snapshots];
    /// The rollups: summaries of the processed partition, readable as views and Glue tables.
    pub const ROLLUPS: [DateFile; 2] = [Self::Daily, Self::Snapshots];

    /// Where the published files of this kind live.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Processed => PROCESSED_PREFIX,
            Self::Carry => CARRY_PREFIX,
            Self::Daily => DAILY_PREFIX,
            Self::Snapshots => SNAPSHOTS_PREFIX,
        }
    }

    /// The published key of this kind's file of `date`.
    pub fn key(self, date: &str) -> String {
        format!("{}date={date}/{PART_FILE}", self.prefix())
    }
}

/// Prefix of the month files.
pub const BY_MONTH_PREFIX: &str = "rollups/by_month/";

/// The files of a month, each `rollups/by_month/<kind>/month=YYYY-MM/part-00000.parquet`: the
/// month's per-date rollup files in one file (its `date` a column), sorted by symbol. Hive
/// readers (the Glue tables Athena queries) read these: a year of a panel is 12 small reads
/// instead of 365. They are a function of the month's committed rollups; a run that changes a
/// date rebuilds its month's files, stages them, and publishes them after the dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonthFile {
    /// The month's per-symbol daily rollups.
    Daily,
    /// The month's per-snapshot rollups.
    Snapshots,
}

impl MonthFile {
    /// Every kind.
    pub const ALL: [MonthFile; 2] = [Self::Daily, Self::Snapshots];

    /// Where the published files of this kind live.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Daily => "rollups/by_month/daily/",
            Self::Snapshots => "rollups/by_month/snapshots/",
        }
    }

    /// The published key of this kind's file of `month` (`YYYY-MM`).
    pub fn key(self, month: &str) -> String {
        format!("{}month={month}/{PART_FILE}", self.prefix())
    }
}

/// Key of the one Parquet file of a published processed date partition.
pub fn processed_key(date: &str) -> String {
    DateFile::Processed.key(date)
}

/// Key of the published window-state file of a date.
pub fn carry_key(date: &str) -> String {
    DateFile::Carry.key(date)
}

/// Where run `run_id` stages the file that will be published at `key`.
pub fn staged_key(run_id: &str, key: &str) -> String {
    format!("{RUNS_PREFIX}{run_id}/{key}")
}

/// Key of the quarantine CSV of a raw file: its path under `raw/`, under `quarantine/` (one file
/// per raw file, so a re-run rewrites rather than adds, and nested raw files that share a name
/// keep one each).
pub fn quarantine_key(raw_key: &str) -> String {
    let rel = raw_key.strip_prefix(RAW_PREFIX).unwrap_or_else(|| raw_key.rsplit('/').next().unwrap_or(raw_key));
    format!("{QUARANTINE_PREFIX}{rel}")
}

/// Where files under `processed/` that no manifest names are moved (a migrated bucket's Spark
/// output): kept, out of the way of Hive-style readers such as Athena, which read every file of
/// a partition's directory.
pub fn foreign_key(key: &str) -> String {
    format!("{FOREIGN_PREFIX}{key}")
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The lake key (relative to the lake's root or prefix).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// A backend-specific version tag (S3 ETag, local mtime+size) used to notice a changed object.
    pub version: String,
    /// When the object was last written, by the store's clock (S3 LastModified, local mtime):
    /// ages compared on one clock, so a host whose clock is off cannot misjudge them.
    pub modified: Option<DateTime<Utc>>,
}

/// An object's bytes with the version a conditional write can be made against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The object's content.
    pub data: Bytes,
    /// Its version: an S3 ETag, or a content hash on the local lake.
    pub version: String,
    /// When it was written, by the store's clock (see [`ObjectMeta::modified`]).
    pub modified: Option<DateTime<Utc>>,
}

/// What a conditional read found ([`ObjectStore::get_if_changed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfChanged {
    /// The object is still at the version given: nothing was transferred.
    NotModified,
    /// The object is at another version now: its bytes and that version.
    Changed(Versioned),
    /// There is no object at the key.
    Missing,
}

/// The precondition of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode<'a> {
    /// Create or replace, unconditionally.
    Overwrite,
    /// Create only if no object has the key (S3 `If-None-Match: *`).
    Create,
    /// Replace only if the object is still at this version (S3 `If-Match: ETag`).
    Update(&'a str),
}

/// What a conditional create found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was created.
    Created,
    /// An object already had the key; nothing was written.
    AlreadyExists,
}

/// The storage operations the pipeline needs, nothing more.
///
/// Every `put*` is atomic: a reader sees the old object or the new one, never a prefix of it.
/// A failed precondition is [`LakeError::Conflict`], and writes nothing.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Human-readable location, for logs and errors (`./lake`, `s3://bucket/prefix`).
    fn describe(&self) -> String;
    /// All objects whose key starts with `prefix`, sorted by key (pages through large listings).
    async fn list(&self, prefix: &str) -> LakeResult<Vec<ObjectMeta>>;
    /// The objects whose key starts with `prefix` and sorts after `start_after`, sorted by key:
    /// one request on S3 for a few recent keys, however many older ones there are.
    async fn list_after(&self, prefix: &str, start_after: &str) -> LakeResult<Vec<ObjectMeta>> {
        Ok(self.list(prefix).await?.into_iter().filter(|o| o.key.as_str() > start_after).collect())
    }
    /// The object's bytes and version, or `None` if it does not exist.
    async fn get_versioned(&self, key: &str) -> LakeResult<Option<Versioned>>;
    /// The object unless it is still at `version` (S3: a conditional GET, `If-None-Match`, which
    /// transfers nothing when unchanged). For readers that poll one object, e.g. the manifest.
    async fn get_if_changed(&self, key: &str, version: &str) -> LakeResult<IfChanged> {
        Ok(match self.get_versioned(key).await? {
            None => IfChanged::Missing,
            Some(v) if v.version == version => IfChanged::NotModified,
            Some(v) => IfChanged::Changed(v),
        })
    }
    /// The object's bytes, or `None` if it does not exist.
    async fn get(&self, key: &str) -> LakeResult<Option<Bytes>> {
        Ok(self.get_versioned(key).await?.map(|v| v.data))
    }
    /// Copy the object into a local file (streamed, never fully in memory); a missing object is
    /// [`LakeError::NotFound`].
    async fn get_to_file(&self, key: &str, dest: &Path) -> LakeResult<()>;
    /// Write the object atomically under a precondition; returns the new version.
    async fn put_opts(&self, key: &str, data: Bytes, mode: PutMode<'_>) -> LakeResult<String>;
    /// Create or replace the object atomically.
    async fn put(&self, key: &str, data: Bytes) -> LakeResult<()> {
        self.put_opts(key, data, PutMode::Overwrite).await.map(drop)
    }
    /// Create the object only if no object has that key (the check and the write are one step).
    async fn put_if_absent(&self, key: &str, data: Bytes) -> LakeResult<PutOutcome> {
        match self.put_opts(key, data, PutMode::Create).await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(LakeError::Conflict { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(e),
        }
    }
    /// Create or replace the object from a local file atomically (streamed/multipart when large).
    /// The file is not written again afterwards (a local lake may link it instead of copying it);
    /// removing it is fine.
    async fn put_file(&self, key: &str, src: &Path) -> LakeResult<()>;
    /// Copy an object to another key inside the lake (server-side on S3), atomically; a missing
    /// source is [`LakeError::NotFound`].
    async fn copy(&self, from: &str, to: &str) -> LakeResult<()>;
    /// Remove the object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> LakeResult<()>;
    /// Remove the object only while it is at `version`; a missing object is not an error.
    async fn delete_if(&self, key: &str, version: &str) -> LakeResult<()>;
    /// A local filesystem path at which DuckDB can read the object in place, if the backend has one.
    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }
    /// Take the single-writer lock for processing; see [`LockGuard`].
    async fn lock(&self, owner: &str) -> LakeResult<LockGuard>;
    /// Check that the lake is usable (create it first if `create`); one line per finding.
    /// A misconfiguration is an error whose message says, in one line, what to fix.
    async fn check(&self, create: bool) -> LakeResult<Vec<String>>;
    /// Requests sent to a remote store so far (retries included), if the backend counts them.
    fn requests(&self) -> Option<u64> {
        None
    }
}

/// Held while a run writes to the lake. A lease-backed guard renews itself in the background and
/// notes when it was lost (taken over after it expired); [`LockGuard::release`] gives up only a
/// lock that is still ours. Dropping it without releasing releases in the background where a
/// runtime is available (a lease also expires).
pub struct LockGuard {
    lost: Arc<AtomicBool>,
    release: Option<futures::future::BoxFuture<'static, LakeResult<()>>>,
}

impl LockGuard {
    /// A guard whose `release` runs `release`; `lost` is set by whoever notices the lock is gone.
    pub fn new(lost: Arc<AtomicBool>, release: impl std::future::Future<Output = LakeResult<()>> + Send + 'static) -> Self {
        Self { lost, release: Some(Box::pin(release)) }
    }

    /// Whether the lock is still ours (a lease can be lost when renewal fails past its expiry).
    pub fn is_held(&self) -> bool {
        !self.lost.load(Ordering::SeqCst)
    }

    /// A view of whether the lock is still held, for the steps of a run that must stop once it
    /// is not (see `commit`).
    pub fn fence(&self) -> Fence {
        Fence(Some(self.lost.clone()))
    }

    /// Give the lock up (a no-op for a lease that is no longer ours).
    pub async fn release(mut self) -> LakeResult<()> {
        match self.release.take() {
            Some(fut) => fut.await,
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(fut) = self.release.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                if let Err(e) = fut.await {
                    tracing::warn!("could not release the lake lock: {e}");
                }
            });
        }
    }
}

/// Whether a run still holds its lock: cheap to clone, checked before every step of the commit
/// protocol that could undo another writer's work. A run without a lock (tests forcing writers
/// past it) has nothing to lose and is always "held"; the manifest's compare-and-swap still
/// fences its commit.
#[derive(Debug, Clone, Default)]
pub struct Fence(Option<Arc<AtomicBool>>);

impl Fence {
    /// Whether the lock is still held.
    pub fn is_held(&self) -> bool {
        self.0.as_ref().is_none_or(|lost| !lost.load(Ordering::SeqCst))
    }
}

/// The lake every stage works on: a shared handle to one store.
pub type Lake = Arc<dyn ObjectStore>;

/// Requests in flight at once when copying many objects.
pub const IO_CONCURRENCY: usize = 16;

/// A progress bar for `len` steps; indicatif draws nothing when stderr is not a terminal, so
/// logs stay clean under cron.
pub fn progress(len: u64, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len).with_message(what);
    bar.set_style(indicatif::ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}").unwrap().progress_chars("=> "));
    bar
}

/// Local paths (with their keys) at which DuckDB can read the objects: in place when the lake is
/// local, else downloaded concurrently under `dir`, keeping the key's layout (hive `date=` paths
/// stay meaningful). A missing object is [`LakeError::NotFound`].
pub async fn materialize(lake: &Lake, keys: &[String], dir: &Path, what: &'static str) -> LakeResult<Vec<(PathBuf, String)>> {
    use futures::{StreamExt, TryStreamExt};
    let bar = progress(keys.len() as u64, what);
    let out = futures::stream::iter(keys.iter().map(|key| {
        let bar = bar.clone();
        async move {
            let path = match lake.local_path(key) {
                // Read in place, once it is known to be there.
                Some(p) if p.exists() => p,
                Some(_) => return Err(LakeError::NotFound { key: key.clone() }),
                None => {
                    let p = dir.join(key);
                    std::fs::create_dir_all(p.parent().expect("keys have a parent"))
                        .map_err(|e| LakeError::io(format!("cannot create a directory under {}", dir.display()), e))?;
                    lake.get_to_file(key, &p).await?;
                    p
                }
            };
            bar.inc(1);
            LakeResult::Ok((path, key.clone()))
        }
    }))
    .buffered(IO_CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    bar.finish_and_clear();
    Ok(out)
}

/// Whether opening a lake may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Commands that write (init, collect, backfill, process, run, simulate-history): a missing
    /// local lake is created, and the log says so. (A missing bucket is created by `init` only.)
    Create,
    /// Read-only commands (query, doctor): a local lake that does not exist is an error naming the
    /// path, and nothing is created. S3 is never created on open; a missing bucket is reported.
    Existing,
}

/// Open the lake named by `--lake`: a directory path, or `s3://bucket[/prefix]`.
pub async fn open(location: &str, s3: &crate::aws::AwsOptions, access: Access) -> LakeResult<Lake> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(LakeError::Location(format!("--lake {location:?} names no bucket; use s3://BUCKET or s3://BUCKET/PREFIX")));
        }
        return Ok(Arc::new(s3::S3Store::connect(bucket, prefix, s3).await?));
    }
    if location.contains("://") {
        return Err(LakeError::Location(format!(
            "--lake {location:?} is not a supported location; use a directory path (e.g. ./lake) or s3://BUCKET/PREFIX"
        )));
    }
    let store = match access {
        Access::Create => local::LocalStore::open(Path::new(location))?,
        Access::Existing => local::LocalStore::open_existing(Path::new(location))?,
    };
    Ok(Arc::new(store))
}
