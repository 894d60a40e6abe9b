//! The commit protocol: how a run's outputs become the lake's committed state. [`Transaction`]
//! owns every step (begin, stage, commit, publish, clean up) and is the only code that writes the
//! manifest; `process` computes outputs and hands them over.
//!
//! The manifest (`_tickerlake/manifest.json`) is the only commit point. A partition is committed
//! when the manifest names it (with the run that wrote it), and only then; readers
//! ([`Manifest::committed_partitions`]) read exactly the files it names.
//!
//! States of one run `R` (each a type or a method of one):
//!
//! 1. **Begun** ([`Transaction::begin`]). `R` holds the lock, has read the manifest, and has
//!    finished a predecessor that committed but did not publish ("roll forward"). A committed
//!    staged file that is gone (a lifecycle rule, a person, a sweep elsewhere) is noted as a
//!    *lost* date, which `R` rebuilds from raw; until a run does, readers fail on it with one line
//!    naming the date and the command that repairs it.
//! 2. **Staged** ([`Transaction::stage`]). `R` uploads its partitions and carry files under
//!    `_tickerlake/runs/R/` (never over committed files) and the quarantine CSVs of its new raw
//!    files (deterministic per raw file). Last, for each month whose dates it changed (or that
//!    the manifest says needs them), it stages the month files (`lake::MonthFile`) built from the
//!    month's rollups as it will commit them ([`Transaction::months_to_build`]).
//! 3. **Committed** ([`Transaction::commit`] → [`Committed`]). `R` writes the manifest
//!    conditionally on the version it read at start (`If-Match`, or `If-None-Match: *` for the
//!    first commit), with its id in `commit` and its entries `published: false`: readers read the
//!    staged files. If the write fails, `R` reads the manifest back: its id there means the
//!    commit landed (an answer lost, a retry refused). A *proven* conflict (another run's commit,
//!    naming nothing of `R`'s) makes `R` delete its staging area and commit nothing; any other
//!    failure leaves the staging area alone, since a commit that landed may name it.
//! 4. **Published** ([`Committed::finish`]). `R` moves aside files under each date it publishes
//!    that no manifest names (a migrated bucket's Spark output), copies each staged file of the
//!    date to its published key (`processed/date=…/part-00000.parquet`, the carry state, the
//!    rollups: what Hive-style readers such as Athena list), then each staged month file, then
//!    commits the manifest again with `published: true`. A staged month file found gone marks
//!    its month stale: the next run builds it again.
//! 5. **Cleaned up** (the rest of [`Committed::finish`]). After a rebuild that dropped dates, `R`
//!    removes published files the manifest no longer names; it deletes its staging area, and the
//!    staging areas no manifest names that are older than [`STAGING_GRACE`] by the store's clock.
//!
//! Every step after the commit is *fenced*: it runs only while `R` still holds its lock (a lease
//! that could not be renewed for its whole term counts as lost) and the manifest is still the
//! version `R` wrote. A run that stalled past its lease and resumed finds a newer commit there and
//! stops, instead of overwriting or deleting that run's files. Failures after the commit are
//! warnings: the run is committed, and the next run finishes what is left.
//!
//! The lease (`lake::lease`) keeps two writers from doing the same work, but correctness rests on
//! step 3 alone: two runs forced past the lease still end with every raw file processed once.
//!
//! | crash point | what the lake holds | what the next run does |
//! | --- | --- | --- |
//! | while staging (`mid-stage`) | orphan files under `_tickerlake/runs/R/` | ignores them; deletes them once older than [`STAGING_GRACE`] |
//! | after staging, before the commit (`before-commit`) | the same, plus quarantine CSVs of uncommitted raw files (readers skip them) | the same; rewrites those quarantine CSVs |
//! | after the commit, before publishing (`after-commit`) | a committed manifest naming staged files | readers read the staged files; the run publishes them first ("roll forward") |
//! | while publishing (`mid-publish`) | some published keys hold `R`'s files, the manifest still names the staged ones | rolls forward: copies again (idempotent), commits `published: true` |
//! | before the month files are published (`before-month-publish`) | published dates, month files still staged (Athena's rollup tables behind the dates) | rolls forward: copies the month files |
//! | after publishing, before cleanup (`after-publish`) | staged copies no manifest names | deletes them once older than [`STAGING_GRACE`] |
//! | any, then the staging area is deleted by something else | a committed manifest naming staged files that are gone | readers fail naming the date; the run rebuilds the date from raw |

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::manifest::{Manifest, PartitionEntry, RawEntry, SEGMENTS_PREFIX, month_of_date};
use super::{
    self as lake, BY_MONTH_PREFIX, CommitError, CommitResult, DateFile, Fence, Lake, LakeError, LakeResult, MANIFEST_KEY, MonthFile,
    PART_FILE, PROCESSED_PREFIX, QUARANTINE_PREFIX, RUNS_PREFIX,
};
use crate::faults;

/// Staging areas of runs that never committed are deleted only when older than this, so a slow
/// concurrent writer's files are never pulled from under it.
pub const STAGING_GRACE: Duration = Duration::from_secs(6 * 3600);
/// Replaced manifest segments are deleted only when older than this, so readers that read the
/// head before the replacement can still read the segments it names.
pub const SEGMENT_GRACE: Duration = Duration::from_secs(3600);

/// One run's way from the committed state it read to the state it commits.
pub struct Transaction {
    lake: Lake,
    run_id: String,
    fence: Fence,
    /// What the run will commit: the committed state it read (its version is what the commit is
    /// conditional on; months are loaded as the run needs them), or nothing for a full rebuild,
    /// plus the run's changes.
    next: Manifest,
    /// For a full rebuild, the dates the committed state had (the rebuild may drop some).
    base_dates: Option<BTreeSet<String>>,
    /// Dates whose partition this run removed.
    dropped: BTreeSet<String>,
    /// Committed dates whose staged partition file was gone at the roll forward.
    lost: BTreeSet<String>,
    /// Dates this run changed (written, dropped, given rollups): their months' files are rebuilt.
    changed_dates: BTreeSet<String>,
}

/// What a run did about a month whose month files it had to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonthFiles {
    /// Staged, built from the month's rollups in [`Transaction::state`].
    Staged,
    /// The month has no dates left: its published month files are deleted after the commit.
    NoDates,
    /// Not built (a date has no rollups yet): the next run builds them.
    Later,
}

/// A run whose commit landed: what is left is publishing and cleaning up.
pub struct Committed {
    lake: Lake,
    run_id: String,
    fence: Fence,
    /// The manifest as this run committed it (its version is the one the run wrote, or None
    /// when another run committed on top before this one could read its own back).
    manifest: Manifest,
    /// Dates the committed state no longer has a partition for.
    removed: Vec<String>,
    /// A full rebuild: published files the manifest no longer names are stale.
    full: bool,
}

/// What [`Committed::finish`] did.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// Published keys of partitions the committed state no longer has, removed.
    pub stale_removed: Vec<String>,
    /// Files moved from `processed/` to `_tickerlake/foreign/`.
    pub foreign_moved: usize,
}

impl Transaction {
    /// Start a run: read the manifest and finish a predecessor's publication. With `full`, the
    /// run starts from nothing (every partition rebuilt) but still commits against the manifest
    /// it read.
    pub async fn begin(lake: &Lake, run_id: &str, fence: Fence, full: bool) -> CommitResult<Self> {
        let mut base = Manifest::load(lake).await?;
        // The months of unpublished dates (a predecessor's, to roll forward), or all of them.
        let months: Vec<String> = match full {
            true => base.months().map(str::to_owned).collect(),
            false => base.pending().keys().map(|d| month_of_date(d)).collect(),
        };
        base.ensure(lake, months).await?;
        let Published { runs, lost, .. } = publish_pending(lake, &mut base).await?;
        if !runs.is_empty() {
            tracing::warn!(?runs, "published the partitions of a run that stopped after its commit");
            for run in &runs {
                if let Err(e) = drop_staging(lake, run).await {
                    tracing::warn!("could not delete the staging area of run {run}: {e}");
                }
            }
        }
        for date in &lost {
            tracing::warn!(%date, "the committed partition file of this date is gone from its run's staging area; rebuilding the date from raw");
        }
        let (next, base_dates) = match full {
            true => (Manifest::empty_on(&base), Some(base.partition_dates())),
            false => (base, None),
        };
        Ok(Self {
            lake: lake.clone(),
            run_id: run_id.to_owned(),
            fence,
            next,
            base_dates,
            dropped: BTreeSet::new(),
            lost,
            changed_dates: BTreeSet::new(),
        })
    }

    /// The id of this run (the commit's id, the staging area's name).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Whether the run rebuilds everything from nothing.
    pub fn is_full(&self) -> bool {
        self.base_dates.is_some()
    }

    /// The state as this run will commit it so far (its staged partitions included, at their
    /// staging keys): what the run's next chunk computes on. Only the months loaded with
    /// [`Transaction::ensure`] are in it (a full rebuild has every month: it starts from none).
    pub fn state(&self) -> &Manifest {
        &self.next
    }

    /// Load these months of the committed state, for the run to read or change them.
    pub async fn ensure(&mut self, months: impl IntoIterator<Item = String>) -> CommitResult<()> {
        if self.is_full() {
            return Ok(());
        }
        self.next.ensure(&self.lake, months).await
    }

    /// Note that the run listed every raw file (at `at`, by its own clock), after reading the
    /// late-raw note `late_raw`.
    pub fn note_full_listing(&mut self, at: DateTime<Utc>, late_raw: Option<String>) {
        self.next.set_full_listing(at, late_raw);
    }

    /// Committed dates whose file was found gone: the run must rebuild them from raw.
    pub fn lost_dates(&self) -> &BTreeSet<String> {
        &self.lost
    }

    /// Upload `(published key, local file)` pairs into the run's staging area, concurrently.
    pub async fn stage(&self, files: &[(String, &Path)]) -> LakeResult<()> {
        let bar = lake::progress(files.len() as u64, "stage");
        futures::stream::iter(files.iter().map(|(key, path)| {
            let bar = bar.clone();
            async move {
                self.lake.put_file(&lake::staged_key(&self.run_id, key), path).await?;
                faults::point("mid-stage");
                bar.inc(1);
                LakeResult::Ok(())
            }
        }))
        .buffer_unordered(lake::IO_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
        bar.finish_and_clear();
        Ok(())
    }

    /// Upload files straight to their published keys: files whose content any run would write
    /// identically (a raw file's quarantine CSV, the rollups of a committed partition), which
    /// readers look at only once the manifest names them.
    pub async fn put_published(&self, files: &[(String, &Path)]) -> LakeResult<()> {
        futures::stream::iter(files.iter().map(|(key, path)| self.lake.put_file(key, path)))
            .buffer_unordered(lake::IO_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Record a processed raw file.
    pub fn record_raw(&mut self, key: String, entry: RawEntry) {
        self.next.insert_raw(key, entry);
    }

    /// Record that this run's staged partition (and carry file) of `date` replaces the committed one.
    pub fn record_partition(&mut self, date: String, rows: u64) {
        self.lost.remove(&date);
        self.changed_dates.insert(date.clone());
        self.next.insert_partition(date, PartitionEntry { run_id: self.run_id.clone(), rows, published: false, rollups: true });
    }

    /// Record that a committed (published) date now has its rollup files, written straight to
    /// their published keys: they are a function of the committed partition, so writing them
    /// before the commit changes nothing a reader of the manifest sees.
    pub fn record_rollups(&mut self, date: &str) {
        self.changed_dates.insert(date.to_owned());
        self.next.set_rollups(date);
    }

    /// The months whose month files the run must build before it commits: those it changed a
    /// date of, and those the committed state says need them.
    pub fn months_to_build(&self) -> BTreeSet<String> {
        self.changed_dates.iter().map(|d| month_of_date(d)).chain(self.next.stale_months().iter().cloned()).collect()
    }

    /// The dates this run changed (written, dropped, given rollups).
    pub fn changed_dates(&self) -> &BTreeSet<String> {
        &self.changed_dates
    }

    /// Whether the published month files of `month` hold the month's committed rollups as this
    /// run found them (the month is not stale, and the run is not a rebuild from nothing): a
    /// run may then build the month's new files from them and the dates it changed.
    pub fn month_files_current(&self, month: &str) -> bool {
        !self.is_full() && !self.next.stale_months().contains(month)
    }

    /// Record what became of a month [`Transaction::months_to_build`] named.
    pub fn record_month_files(&mut self, month: &str, outcome: MonthFiles) {
        match outcome {
            MonthFiles::Staged => self.next.insert_month_files(month, &self.run_id),
            MonthFiles::NoDates => self.next.remove_month_files(month),
            MonthFiles::Later => self.next.set_month_stale(month),
        }
    }

    /// Record that `date` has no partition any more (rebuilt from raw, nothing left); whether it had one.
    pub fn drop_partition(&mut self, date: &str) -> bool {
        self.lost.remove(date);
        self.changed_dates.insert(date.to_owned());
        let had = self.next.remove_partition(date);
        if had {
            self.dropped.insert(date.to_owned());
        }
        had
    }

    /// Give up before committing: nothing names the staging area, so it is deleted (best effort).
    pub async fn abandon(self) {
        if let Err(e) = drop_staging(&self.lake, &self.run_id).await {
            tracing::warn!("could not delete this run's staging area: {e}");
        }
    }

    /// Commit the recorded state: a compare-and-swap of the manifest against the version read at
    /// the start (see the module documentation for what each failure leaves behind).
    pub async fn commit(mut self) -> CommitResult<Committed> {
        faults::point("before-commit");
        if !self.fence.is_held() {
            let lake = self.lake.describe();
            self.abandon().await;
            return Err(CommitError::LeaseLost { lake });
        }
        let written = match self.next.write(&self.lake, Some(&self.run_id)).await {
            // Tests: the commit lands but its answer is lost (a timeout, a dropped connection).
            Ok(()) if faults::enabled("lose-commit-answer") => Err(injected("the commit's answer")),
            other => other,
        };
        if let Err(e) = written {
            let current = match faults::enabled("fail-commit-recheck") {
                true => Err(injected("reading the manifest back")),
                false => Manifest::load(&self.lake).await,
            };
            match current {
                // It landed: its answer was lost, or a retry of it was refused.
                Ok(current) if current.commit == self.run_id => self.next.adopt_commit(&current),
                // It landed, and another run has committed on top already: what is left of
                // this run's steps is fenced off (the version is not the one this run wrote).
                Ok(current) if current.has_commit(&self.run_id) => self.next.read_version = None,
                Ok(_) if matches!(e, CommitError::Conflict { .. }) => {
                    // Proven: another run committed, and nothing there names this run's files.
                    self.abandon().await;
                    return Err(e);
                }
                // Unknown: a commit that landed may name the staged files; leave them (the sweep
                // deletes them once no manifest names them).
                _ => return Err(e),
            }
        }
        tracing::info!(run_id = %self.run_id, "committed");
        let removed = match &self.base_dates {
            Some(base) => base.difference(&self.next.partition_dates()).cloned().collect(),
            None => self.dropped.into_iter().collect(),
        };
        let full = self.base_dates.is_some();
        Ok(Committed { lake: self.lake, run_id: self.run_id, fence: self.fence, manifest: self.next, removed, full })
    }
}

impl Committed {
    /// Dates whose partitions this run committed.
    pub fn dates_written(&self) -> Vec<String> {
        self.manifest.partitions().iter().filter(|(_, e)| e.run_id == self.run_id).map(|(d, _)| d.clone()).collect()
    }

    /// Dates the committed state no longer has a partition for.
    pub fn dates_removed(&self) -> &[String] {
        &self.removed
    }

    /// Publish and clean up, each step fenced. Never fails: the run is committed, and a step
    /// that could not run is left to the next run (with a warning saying so).
    pub async fn finish(mut self) -> Finished {
        faults::point("after-commit");
        let mut done = Finished::default();
        if let Err(why) = self.fenced("publishing").await {
            tracing::warn!("{why}");
            return done;
        }
        match publish_pending(&self.lake, &mut self.manifest).await {
            Ok(published) => {
                done.foreign_moved += published.foreign_moved;
                if !published.lost.is_empty() {
                    tracing::warn!(dates = ?published.lost, "committed files went missing before they were published; the next run rebuilds them");
                }
            }
            Err(e) => {
                tracing::warn!("committed, but publishing failed ({e}); the next run publishes");
                return done;
            }
        }
        faults::point("after-publish");
        if self.full || !self.removed.is_empty() {
            if let Err(why) = self.fenced("removing stale files").await {
                tracing::warn!("{why}");
                return done;
            }
            let removal = match self.full {
                true => remove_stale(&self.lake, &self.manifest).await,
                false => remove_dates(&self.lake, &self.manifest, &self.removed).await,
            };
            match removal {
                Ok((removed, moved)) => {
                    done.stale_removed = removed;
                    done.foreign_moved += moved;
                }
                Err(e) => tracing::warn!("committed, but removing stale files failed ({e}); the next rebuild does it"),
            }
        }
        let reference = match self.fenced("cleaning up staging areas").await {
            Ok(modified) => modified,
            Err(why) => {
                tracing::warn!("{why}");
                return done;
            }
        };
        if !self.manifest.references_staging_of(&self.run_id)
            && let Err(e) = drop_staging(&self.lake, &self.run_id).await
        {
            tracing::warn!("could not delete this run's staging area ({e}); a later run sweeps it");
        }
        let reference = reference.unwrap_or_else(Utc::now);
        if let Err(e) = sweep_abandoned(&self.lake, &self.manifest, &self.run_id, reference).await {
            tracing::warn!("could not sweep abandoned staging areas: {e}");
        }
        if let Err(e) = sweep_segments(&self.lake, &self.manifest, reference).await {
            tracing::warn!("could not remove replaced manifest segments: {e}");
        }
        done
    }

    /// Whether this run may still act on the lake: it holds its lock and the manifest is the
    /// version it wrote. Returns the manifest's write time by the store's clock (the reference
    /// for the sweep's ages), or why the step is skipped.
    async fn fenced(&self, step: &str) -> Result<Option<DateTime<Utc>>, String> {
        if !self.fence.is_held() {
            return Err(format!("committed, but this run lost its lock before {step}; the next run does it"));
        }
        let current = match self.lake.get_versioned(MANIFEST_KEY).await {
            Ok(c) => c,
            Err(e) => return Err(format!("committed, but the manifest could not be read before {step} ({e}); the next run does it")),
        };
        match (current, &self.manifest.read_version) {
            (Some(c), Some(ours)) if &c.version == ours => Ok(c.modified),
            _ => Err(format!("committed, but another run committed after this one; {step} is left to it")),
        }
    }
}

/// What [`publish_pending`] did.
#[derive(Debug, Default)]
struct Published {
    /// Runs none of whose staged files the manifest names any more.
    runs: BTreeSet<String>,
    /// Dates whose staged partition file is gone: left unpublished (readers fail on them, the
    /// next run rebuilds them).
    lost: BTreeSet<String>,
    /// Files moved aside from the published dates' directories.
    foreign_moved: usize,
}

/// Publish every committed-but-staged partition of `manifest` (after moving aside files under
/// its date that no manifest names) and record that in the manifest.
async fn publish_pending(lake: &Lake, manifest: &mut Manifest) -> CommitResult<Published> {
    let pending: Vec<(String, String)> = manifest.pending().iter().map(|(d, r)| (d.clone(), r.clone())).collect();
    let pending_months: Vec<(String, String)> = manifest.pending_months().iter().map(|(m, r)| (m.clone(), r.clone())).collect();
    if pending.is_empty() && pending_months.is_empty() {
        return Ok(Published::default());
    }
    let dates: Vec<&str> = pending.iter().map(|(d, _)| d.as_str()).collect();
    let foreign_moved = move_foreign(lake, &dates).await?;
    let rollups: BTreeSet<&str> =
        pending.iter().filter(|(d, _)| manifest.partitions().get(d).is_some_and(|e| e.rollups)).map(|(d, _)| d.as_str()).collect();
    let outcomes: Vec<(String, bool)> = futures::stream::iter(pending.iter().map(|(date, run)| {
        let with_rollups = rollups.contains(date.as_str());
        async move {
            for kind in DateFile::ALL {
                let published = kind.key(date);
                match lake.copy(&lake::staged_key(run, &published), &published).await {
                    Ok(()) => {}
                    // A missing carry file is recomputed by the next run that needs it (it checks the run id).
                    Err(LakeError::NotFound { .. }) if kind == DateFile::Carry => {}
                    // Rollups of a run from before they existed.
                    Err(LakeError::NotFound { .. }) if kind != DateFile::Processed && !with_rollups => {}
                    Err(LakeError::NotFound { .. }) => return Ok((date.clone(), false)),
                    Err(e) => return Err(e),
                }
                if kind == DateFile::Processed {
                    faults::point("mid-publish");
                }
            }
            Ok((date.clone(), true))
        }
    }))
    .buffer_unordered(lake::IO_CONCURRENCY)
    .try_collect()
    .await?;
    let mut lost = BTreeSet::new();
    for (date, copied) in outcomes {
        match copied {
            true => manifest.set_published(&date),
            false => {
                lost.insert(date);
            }
        }
    }
    faults::point("before-month-publish");
    let month_outcomes: Vec<(String, bool)> = futures::stream::iter(pending_months.iter().map(|(month, run)| async move {
        for kind in MonthFile::ALL {
            let published = kind.key(month);
            match lake.copy(&lake::staged_key(run, &published), &published).await {
                Ok(()) => {}
                Err(LakeError::NotFound { .. }) => return Ok((month.clone(), false)),
                Err(e) => return Err(e),
            }
        }
        Ok((month.clone(), true))
    }))
    .buffer_unordered(lake::IO_CONCURRENCY)
    .try_collect()
    .await?;
    for (month, copied) in month_outcomes {
        match copied {
            true => manifest.set_month_published(&month),
            false => {
                tracing::warn!(%month, "the committed month files of this month are gone from their run's staging area; the next run builds them again");
                manifest.set_month_stale(&month);
            }
        }
    }
    // Lost month files are recorded as stale, so only lost dates leave the manifest as it was.
    if lost.len() < pending.len() || !pending_months.is_empty() {
        manifest.write(lake, None).await?;
    }
    let runs = pending.into_iter().chain(pending_months).map(|(_, run)| run).filter(|run| !manifest.references_staging_of(run)).collect();
    Ok(Published { runs, lost, foreign_moved })
}

/// Move files under `processed/date=D/` that are not tickerlake's partition file to
/// `_tickerlake/foreign/` (copy, then delete: never lost), so Hive-style readers do not read them
/// beside it. Returns how many were moved; says so once.
async fn move_foreign(lake: &Lake, dates: &[&str]) -> LakeResult<usize> {
    let listings: Vec<Vec<lake::ObjectMeta>> =
        futures::stream::iter(dates.iter().map(|d| async move { lake.list(&format!("{PROCESSED_PREFIX}date={d}/")).await }))
            .buffer_unordered(lake::IO_CONCURRENCY)
            .try_collect()
            .await?;
    let foreign: Vec<String> = listings.into_iter().flatten().map(|o| o.key).filter(|k| !k.ends_with(&format!("/{PART_FILE}"))).collect();
    move_aside(lake, &foreign).await?;
    Ok(foreign.len())
}

async fn move_aside(lake: &Lake, keys: &[String]) -> LakeResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    futures::stream::iter(keys.iter().map(|key| async move {
        lake.copy(key, &lake::foreign_key(key)).await?;
        lake.delete(key).await
    }))
    .buffer_unordered(lake::IO_CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    tracing::warn!(
        files = keys.len(),
        first = %keys[0],
        "moved files that no manifest names out of processed/ into {}processed/ (a migrated bucket's Spark output?): \
         Athena and other Hive readers would count their rows beside tickerlake's",
        lake::FOREIGN_PREFIX
    );
    Ok(())
}

/// Delete the staging area of `run_id`.
async fn drop_staging(lake: &Lake, run_id: &str) -> LakeResult<()> {
    for obj in lake.list(&format!("{RUNS_PREFIX}{run_id}/")).await? {
        lake.delete(&obj.key).await?;
    }
    Ok(())
}

/// Delete staging areas (other than `own`'s) that no manifest entry names and whose newest file
/// is older than [`STAGING_GRACE`] at `reference` (a time on the store's clock).
async fn sweep_abandoned(lake: &Lake, manifest: &Manifest, own: &str, reference: DateTime<Utc>) -> LakeResult<()> {
    let mut newest: BTreeMap<String, Option<DateTime<Utc>>> = BTreeMap::new();
    for obj in lake.list(RUNS_PREFIX).await? {
        let Some(run) = obj.key.strip_prefix(RUNS_PREFIX).and_then(|k| k.split('/').next()) else { continue };
        // A store without write times falls back on the run id's start time (the writer's clock).
        let at = obj.modified.or_else(|| run_started(run));
        let slot = newest.entry(run.to_owned()).or_insert(at);
        *slot = (*slot).max(at);
    }
    let abandoned: Vec<String> = newest
        .into_iter()
        .filter(|(run, at)| {
            let old = at.is_some_and(|t| reference.signed_duration_since(t).to_std().is_ok_and(|age| age > STAGING_GRACE));
            old && run != own && !manifest.references_staging_of(run)
        })
        .map(|(run, _)| run)
        .collect();
    if !abandoned.is_empty() {
        tracing::info!(runs = abandoned.len(), "removing staging areas of runs that never committed");
        for run in &abandoned {
            drop_staging(lake, run).await?;
        }
    }
    Ok(())
}

/// Delete published partition, carry and rollup files of dates the committed manifest does not have, and
/// quarantine files of raw files it does not have (after a full rebuild, or dates emptied by a
/// rebuild); other files under `processed/` are moved aside, never deleted. Returns the partition
/// keys removed and how many files were moved.
async fn remove_stale(lake: &Lake, committed: &Manifest) -> LakeResult<(Vec<String>, usize)> {
    let months = committed.months_with_partitions();
    let keep: BTreeSet<String> = committed
        .partition_dates()
        .iter()
        .flat_map(|d| DateFile::ALL.map(|kind| kind.key(d)))
        .chain(months.iter().flat_map(|m| MonthFile::ALL.map(|kind| kind.key(m))))
        .chain(committed.quarantine_keys())
        .collect();
    let mut removed = Vec::new();
    let mut foreign = Vec::new();
    let prefixes = DateFile::ALL.map(DateFile::prefix);
    for prefix in prefixes.into_iter().chain([BY_MONTH_PREFIX, QUARANTINE_PREFIX]) {
        for obj in lake.list(prefix).await? {
            if keep.contains(&obj.key) {
                continue;
            }
            if prefix == PROCESSED_PREFIX && !obj.key.ends_with(&format!("/{PART_FILE}")) {
                foreign.push(obj.key);
                continue;
            }
            lake.delete(&obj.key).await?;
            if prefix == PROCESSED_PREFIX {
                removed.push(obj.key);
            }
        }
    }
    move_aside(lake, &foreign).await?;
    Ok((removed, foreign.len()))
}

/// A transient failure made up by a test (`TICKERLAKE_FAULTS`).
fn injected(what: &str) -> CommitError {
    LakeError::Timeout { endpoint: format!("(fault injection: {what})") }.into()
}

/// Delete the published files of dates an incremental run emptied (rebuilt from raw, no rows
/// left), and the month files of months left with no dates. Returns the partition keys removed.
async fn remove_dates(lake: &Lake, committed: &Manifest, dates: &[String]) -> LakeResult<(Vec<String>, usize)> {
    let mut removed = Vec::new();
    for date in dates {
        for kind in DateFile::ALL {
            lake.delete(&kind.key(date)).await?;
        }
        removed.push(lake::processed_key(date));
    }
    let months: BTreeSet<String> = dates.iter().map(|d| month_of_date(d)).collect();
    for month in months.difference(&committed.months_with_partitions()) {
        for kind in MonthFile::ALL {
            lake.delete(&kind.key(month)).await?;
        }
    }
    Ok((removed, 0))
}

/// Manifest segments the head no longer names (replaced by a later version of their month) are
/// deleted once older than [`SEGMENT_GRACE`] by the store's clock, so a reader that read the
/// previous head a moment ago can still read them.
async fn sweep_segments(lake: &Lake, manifest: &Manifest, reference: DateTime<Utc>) -> LakeResult<()> {
    let named = manifest.segment_keys();
    for obj in lake.list(SEGMENTS_PREFIX).await? {
        let old = obj.modified.is_some_and(|t| reference.signed_duration_since(t).to_std().is_ok_and(|age| age > SEGMENT_GRACE));
        if old && !named.contains(&obj.key) {
            lake.delete(&obj.key).await?;
        }
    }
    Ok(())
}

/// When a run started, from its id (`20250508T031632.801Z-1a2b3c`).
fn run_started(run_id: &str) -> Option<DateTime<Utc>> {
    let stamp = run_id.split('-').next()?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ").ok().map(|t| t.and_utc())
}

/// A new run id: its start time (sortable, readable in listings) and a random suffix.
pub fn new_run_id() -> String {
    format!("{}-{:06x}", Utc::now().format("%Y%m%dT%H%M%S%.3fZ"), rand::random::<u32>() & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_carry_their_start_time() {
        let id = new_run_id();
        let t = run_started(&id).expect("parsable");
        assert!((Utc::now() - t).num_seconds().abs() < 5, "{id} -> {t}");
        assert_eq!(run_started("garbage"), None);
    }
}
