//! The commit protocol of a `process` run: stage, commit (compare-and-swap), publish, clean up.
//!
//! The manifest (`_tickerlake/manifest.json`) is the only commit point. A partition is committed
//! when the manifest names it (with the run that wrote it), and only then; readers
//! ([`Manifest::committed_partitions`]) read exactly the files it names.
//!
//! States of one run `R`:
//!
//! 1. **Staged.** `R` uploads its partitions and carry files under `_tickerlake/runs/R/` (never over
//!    committed files) and the quarantine CSVs of its new raw files (deterministic per raw file).
//! 2. **Committed.** `R` writes the manifest conditionally on the version it read at start
//!    (`If-Match`, or `If-None-Match: *` for the first commit). Its entries say `published: false`:
//!    readers read the staged files. If another writer committed first, the write fails with a
//!    conflict: `R` commits nothing, deletes its staging area, and says so; the next run starts
//!    from the winner's manifest and processes what is left.
//! 3. **Published.** `R` copies each staged file to its published key (`processed/date=…/part-00000.parquet`,
//!    `_tickerlake/carry/…`: what Hive-style readers such as Athena list), then commits the manifest
//!    again with `published: true`, then deletes its staging area.
//!
//! The lease (`lake::lease`) keeps two writers from doing the same work, but correctness rests on
//! step 2 alone: two runs forced past the lease still end with every raw file processed once.
//!
//! | crash point | what the lake holds | what the next run does |
//! | --- | --- | --- |
//! | while staging (`mid-stage`) | orphan files under `_tickerlake/runs/R/` | ignores them; deletes them once older than [`STAGING_GRACE`] |
//! | after staging, before the commit (`before-commit`) | the same, plus quarantine CSVs of uncommitted raw files (readers skip them) | the same; rewrites those quarantine CSVs |
//! | after the commit, before publishing (`after-commit`) | a committed manifest naming staged files | readers read the staged files; the run publishes them first ("roll forward") |
//! | while publishing (`mid-publish`) | some published keys hold `R`'s files, the manifest still names the staged ones | rolls forward: copies again (idempotent), commits `published: true` |
//! | after publishing, before cleanup | staged copies no manifest names | deletes them once older than [`STAGING_GRACE`] |

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::error::ProcessResult;
use super::manifest::Manifest;
use crate::faults;
use crate::lake::{self, Lake, LakeResult, RUNS_PREFIX};

/// Staging areas of runs that never committed are deleted only when older than this, so a slow
/// concurrent writer's files are never pulled from under it.
pub const STAGING_GRACE: Duration = Duration::from_secs(6 * 3600);

/// Upload `(published key, local file)` pairs into run `run_id`'s staging area, concurrently.
pub async fn stage(lake: &Lake, run_id: &str, files: &[(String, &Path)]) -> LakeResult<()> {
    let bar = lake::progress(files.len() as u64, "stage");
    futures::stream::iter(files.iter().map(|(key, path)| {
        let bar = bar.clone();
        async move {
            lake.put_file(&lake::staged_key(run_id, key), path).await?;
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

/// Upload quarantine CSVs straight to their keys (one per raw file, rewritten identically by any run).
pub async fn put_all(lake: &Lake, files: &[(String, &Path)]) -> LakeResult<()> {
    futures::stream::iter(files.iter().map(|(key, path)| lake.put_file(key, path)))
        .buffer_unordered(lake::IO_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Publish every committed-but-staged partition of `manifest` and record that. Returns the runs
/// whose staging areas are now unreferenced. Called after this run's commit, and at the start of
/// every run to finish a predecessor that crashed after its commit.
pub async fn publish(lake: &Lake, manifest: &mut Manifest) -> ProcessResult<BTreeSet<String>> {
    let pending: Vec<(String, String)> =
        manifest.partitions.iter().filter(|(_, e)| !e.published).map(|(d, e)| (d.clone(), e.run_id.clone())).collect();
    if pending.is_empty() {
        return Ok(BTreeSet::new());
    }
    let copies: Vec<(String, String)> = pending
        .iter()
        .flat_map(|(date, run)| {
            [lake::processed_key(date), lake::carry_key(date)].map(|published| (lake::staged_key(run, &published), published))
        })
        .collect();
    futures::stream::iter(copies.iter().map(|(from, to)| async move {
        lake.copy(from, to).await?;
        if to.starts_with(lake::PROCESSED_PREFIX) {
            faults::point("mid-publish");
        }
        LakeResult::Ok(())
    }))
    .buffer_unordered(lake::IO_CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    for (date, _) in &pending {
        if let Some(e) = manifest.partitions.get_mut(date) {
            e.published = true;
        }
    }
    manifest.commit(lake).await?;
    Ok(pending.into_iter().map(|(_, run)| run).collect())
}

/// Delete the staging areas of `runs` (published or abandoned by this process).
pub async fn drop_staging(lake: &Lake, runs: &BTreeSet<String>) -> LakeResult<()> {
    for run in runs {
        let prefix = format!("{RUNS_PREFIX}{run}/");
        for obj in lake.list(&prefix).await? {
            lake.delete(&obj.key).await?;
        }
    }
    Ok(())
}

/// Delete staging areas that no manifest entry names and that are older than [`STAGING_GRACE`]
/// (left by crashed or conflicting runs).
pub async fn sweep_abandoned(lake: &Lake, manifest: &Manifest, now: DateTime<Utc>) -> LakeResult<()> {
    let referenced: BTreeSet<&str> = manifest.partitions.values().filter(|e| !e.published).map(|e| e.run_id.as_str()).collect();
    let mut abandoned = BTreeSet::new();
    for obj in lake.list(RUNS_PREFIX).await? {
        let Some(run) = obj.key.strip_prefix(RUNS_PREFIX).and_then(|k| k.split('/').next()) else { continue };
        let old = run_started(run).is_some_and(|t| now.signed_duration_since(t).to_std().is_ok_and(|age| age > STAGING_GRACE));
        if old && !referenced.contains(run) {
            abandoned.insert(run.to_owned());
        }
    }
    if !abandoned.is_empty() {
        tracing::info!(runs = abandoned.len(), "removing staging areas of runs that never committed");
        drop_staging(lake, &abandoned).await?;
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
