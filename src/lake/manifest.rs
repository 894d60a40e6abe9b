//! The manifest: the lake's committed state (which raw files have been processed, which file
//! holds each committed partition) and its one commit point. `commit` is the only code that
//! writes it.
//!
//! It is stored as a small head, `_tickerlake/manifest.json` (the object the commit
//! compares-and-swaps), naming one immutable segment per month,
//! `_tickerlake/manifest/<YYYY-MM>-<content hash>.json`, with that month's raw files (by the
//! date in their name) and partitions. A run reads the head and only the months it touches and
//! rewrites only those, so an hourly run's reads, writes and time do not grow with the history
//! (a year adds twelve lines to the head). Readers that need everything load every segment
//! ([`Manifest::load_all`]); a segment never changes once written, so it can be cached by key.
//! Which partitions are still in a run's staging area (`published: false`) is in the head, and
//! so is the state of the month files (`lake::MonthFile`): which months' files are still in a
//! run's staging area, and which months' files the next run must rebuild.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{CommitError, CommitResult, DateFile, Lake, LakeError, MANIFEST_KEY, PutMode};

/// The format this build writes (and the newest it reads); older formats are read and rewritten
/// by the next commit: format 1 (one file with every entry), format 2 (no month files: every
/// month with partitions is read as needing them built).
const FORMAT: u32 = 3;
/// Where the segments live.
pub const SEGMENTS_PREFIX: &str = "_tickerlake/manifest/";
/// How many commit ids the head remembers (a run whose commit answer was lost finds its own id
/// there even after other runs committed on top).
const RECENT_COMMITS: usize = 16;
/// The segment of raw files whose name carries no date.
const UNDATED: &str = "undated";

/// The head as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Head {
    format: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    commit: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    recent_commits: Vec<String>,
    #[serde(default)]
    segments: BTreeMap<String, SegmentRef>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pending: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pending_months: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    stale_months: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw_watermark: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    full_listing_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    late_raw_listed: Option<String>,
}

/// A month's segment as the head names it, with what a run needs to know to decide whether to
/// read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentRef {
    /// The segment's key (content-addressed: a new version is a new key).
    pub key: String,
    /// Raw files in it.
    pub raw: u64,
    /// Partitions in it.
    pub partitions: u64,
    /// Earliest and latest date of its raw files' kept rows: which dates a re-read needs it for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_first_date: Option<String>,
    /// See `raw_first_date`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_last_date: Option<String>,
}

/// A segment as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Segment {
    raw: BTreeMap<String, RawEntry>,
    partitions: BTreeMap<String, StoredPartition>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredPartition {
    run_id: String,
    rows: u64,
    #[serde(default)]
    rollups: bool,
}

/// The format-1 manifest (one file), read to migrate.
#[derive(Debug, Deserialize)]
struct FormatOne {
    #[serde(default)]
    commit: String,
    raw: BTreeMap<String, RawEntry>,
    partitions: BTreeMap<String, PartitionEntry>,
}

/// The committed state of the lake, as far as it has been read (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// The id of the run whose commit wrote this version: how a run whose commit request failed
    /// ambiguously (its answer lost, a retry refused) tells whether the commit landed.
    pub commit: String,
    recent_commits: Vec<String>,
    /// The head's segments: as read, then as last written.
    segments: BTreeMap<String, SegmentRef>,
    /// Entries of the loaded months (and this run's changes).
    raw: BTreeMap<String, RawEntry>,
    partitions: BTreeMap<String, PartitionEntry>,
    /// Unpublished partitions, date → run: known for every month, loaded or not.
    pending: BTreeMap<String, String>,
    /// Committed month files still in a run's staging area: month → run.
    pending_months: BTreeMap<String, String>,
    /// Months whose month files no run has built for their committed rollups yet (a lake from
    /// before month files, a staged month file that went missing): the next run builds them.
    stale_months: BTreeSet<String>,
    loaded: BTreeSet<String>,
    /// Months whose segment must be written by the next [`Manifest::write`].
    changed: BTreeSet<String>,
    raw_watermark: Option<String>,
    full_listing_at: Option<DateTime<Utc>>,
    /// The last [`LATE_RAW_NOTE`](super::LATE_RAW_NOTE) a full listing came after.
    late_raw_listed: Option<String>,
    /// The version of the head this was read at (None: there was none); the commit is
    /// conditional on it.
    pub read_version: Option<String>,
}

/// One processed raw file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RawEntry {
    /// The object's version when it was processed (ETag or mtime+size), to notice edits.
    pub version: String,
    /// Data rows read.
    pub rows: u64,
    /// Rows kept for the indicators.
    pub kept: u64,
    /// Rows quarantined.
    pub quarantined: u64,
    /// Range of dates its kept rows fall in: which partitions to re-read it for, if ever needed.
    pub first_date: Option<String>,
    /// See `first_date`.
    pub last_date: Option<String>,
}

/// One committed date partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PartitionEntry {
    /// The run whose output is committed; the partition's Parquet metadata names the same run.
    pub run_id: String,
    /// Rows in the partition.
    pub rows: u64,
    /// Whether the committed file has been copied to its published key (`processed/date=…/`);
    /// until then it is read from the run's staging area.
    #[serde(default = "published_by_default")]
    pub published: bool,
    /// Whether the date has its rollup files (dates committed before rollups existed have
    /// none until a run computes them from the partition).
    #[serde(default)]
    pub rollups: bool,
}

fn published_by_default() -> bool {
    true
}

/// A committed partition as readers should read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedPartition {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// The key of the committed Parquet file (published or still staged).
    pub key: String,
    /// The run that wrote it.
    pub run_id: String,
    /// Whether it is at its published key (else in its run's staging area).
    pub published: bool,
    /// Whether it has rollup files.
    pub rollups: bool,
}

impl CommittedPartition {
    /// The committed file of `kind` of this date (None: a rollup the date does not have yet).
    pub fn file(&self, kind: DateFile) -> Option<String> {
        if matches!(kind, DateFile::Daily | DateFile::Snapshots) && !self.rollups {
            return None;
        }
        let published = kind.key(&self.date);
        Some(if self.published { published } else { super::staged_key(&self.run_id, &published) })
    }

    /// The one-line error for a reader that found this partition's file gone: a staged file
    /// is rebuilt by the next `process` (it notices the loss when it publishes); a published
    /// one only by a full rebuild (runs do not look at every published file).
    pub fn missing(&self) -> CommitError {
        let repair = if self.published { "tickerlake process --full" } else { "tickerlake process" };
        CommitError::MissingPartition { date: self.date.clone(), key: self.key.clone(), repair }
    }
}

impl PartitionEntry {
    /// Where the committed file of `kind` of `date` is now (published, or in its run's staging area).
    pub fn key(&self, kind: DateFile, date: &str) -> String {
        let published = kind.key(date);
        if self.published { published } else { super::staged_key(&self.run_id, &published) }
    }

    /// Where the committed partition file of `date` is now.
    pub fn processed_key(&self, date: &str) -> String {
        self.key(DateFile::Processed, date)
    }

    /// Where the committed carry file of `date` is now.
    pub fn carry_key(&self, date: &str) -> String {
        self.key(DateFile::Carry, date)
    }
}

/// The month (`YYYY-MM`) whose segment holds a raw file: from the `YYYYMMDD` after
/// `raw_crypto_prices_` in its name (ours and the original pipeline's), else the undated one.
pub fn month_of_raw(key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.split_once("raw_crypto_prices_")
        .map(|(_, rest)| rest.as_bytes())
        .filter(|d| d.len() >= 8 && d[..8].iter().all(u8::is_ascii_digit))
        .map(|d| format!("{}-{}", String::from_utf8_lossy(&d[..4]), String::from_utf8_lossy(&d[4..6])))
        .unwrap_or_else(|| UNDATED.to_owned())
}

/// The month (`YYYY-MM`) whose segment holds a partition date.
pub fn month_of_date(date: &str) -> String {
    date.get(..7).unwrap_or(date).to_owned()
}

/// FNV-1a of the bytes, as hex: a segment's name changes with its content.
fn content_hash(data: &[u8]) -> String {
    let h = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

impl Manifest {
    /// An empty manifest (a new lake), every month known (there are none).
    pub fn empty() -> Self {
        Self::default()
    }

    /// An empty manifest that commits against `base`'s version: what a full rebuild starts from.
    pub fn empty_on(base: &Manifest) -> Self {
        Self {
            commit: base.commit.clone(),
            recent_commits: base.recent_commits.clone(),
            raw_watermark: base.raw_watermark.clone(),
            full_listing_at: base.full_listing_at,
            late_raw_listed: base.late_raw_listed.clone(),
            read_version: base.read_version.clone(),
            ..Self::default()
        }
    }

    /// Read the committed head (empty if the lake has none yet), remembering its version. No
    /// month is loaded yet (see [`Manifest::ensure`], [`Manifest::load_all`]).
    pub async fn load(lake: &Lake) -> CommitResult<Self> {
        let Some(found) = lake.get_versioned(MANIFEST_KEY).await? else {
            return Ok(Self::empty());
        };
        let corrupt = |source| CommitError::CorruptManifest { lake: lake.describe(), source };
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let mut manifest = match serde_json::from_slice::<Probe>(&found.data).map_err(corrupt)?.format {
            1 => Self::from_format_one(serde_json::from_slice(&found.data).map_err(corrupt)?),
            format @ (2 | FORMAT) => {
                let head: Head = serde_json::from_slice(&found.data).map_err(corrupt)?;
                let mut m = Self {
                    commit: head.commit,
                    recent_commits: head.recent_commits,
                    segments: head.segments,
                    pending: head.pending,
                    pending_months: head.pending_months,
                    stale_months: head.stale_months,
                    raw_watermark: head.raw_watermark,
                    full_listing_at: head.full_listing_at,
                    late_raw_listed: head.late_raw_listed,
                    ..Self::default()
                };
                if format == 2 {
                    m.stale_months = m.months_with_partitions();
                }
                m
            }
            found => return Err(CommitError::ManifestFormat { found, expected: FORMAT }),
        };
        manifest.read_version = Some(found.version);
        Ok(manifest)
    }

    /// Read the committed state whole: the head and every month.
    pub async fn load_all(lake: &Lake) -> CommitResult<Self> {
        let mut manifest = Self::load(lake).await?;
        let months: Vec<String> = manifest.segments.keys().cloned().collect();
        manifest.ensure(lake, months).await?;
        Ok(manifest)
    }

    /// A format-1 manifest, every month loaded and marked changed (and needing month files):
    /// the next commit writes it in the current format.
    fn from_format_one(one: FormatOne) -> Self {
        let mut m = Self { commit: one.commit, ..Self::default() };
        for (key, entry) in one.raw {
            m.insert_raw(key, entry);
        }
        for (date, entry) in one.partitions {
            m.stale_months.insert(month_of_date(&date));
            m.insert_partition(date, entry);
        }
        m
    }

    /// Load the given months' segments (those not loaded yet; a month the head does not name
    /// has no entries), concurrently.
    pub async fn ensure(&mut self, lake: &Lake, months: impl IntoIterator<Item = String>) -> CommitResult<()> {
        let wanted: BTreeSet<String> = months.into_iter().filter(|m| !self.loaded.contains(m)).collect();
        let to_read: Vec<(String, String)> =
            wanted.iter().filter_map(|m| self.segments.get(m).map(|r| (m.clone(), r.key.clone()))).collect();
        let read: Vec<(String, Segment)> = futures::stream::iter(to_read.into_iter().map(|(month, key)| async move {
            let data = lake.get(&key).await?.ok_or_else(|| LakeError::NotFound { key: key.clone() })?;
            let segment: Segment =
                serde_json::from_slice(&data).map_err(|source| CommitError::CorruptManifest { lake: lake.describe(), source })?;
            CommitResult::Ok((month, segment))
        }))
        .buffer_unordered(super::IO_CONCURRENCY)
        .try_collect()
        .await?;
        for (_, segment) in read {
            self.raw.extend(segment.raw);
            for (date, p) in segment.partitions {
                let published = self.pending.get(&date) != Some(&p.run_id);
                self.partitions.insert(date, PartitionEntry { run_id: p.run_id, rows: p.rows, published, rollups: p.rollups });
            }
        }
        self.loaded.extend(wanted);
        Ok(())
    }

    /// Whether every month the head names is loaded.
    pub fn is_complete(&self) -> bool {
        self.segments.keys().all(|m| self.loaded.contains(m))
    }

    /// The months the head names.
    pub fn months(&self) -> impl Iterator<Item = &str> {
        self.segments.keys().map(String::as_str)
    }

    /// The months that have committed partitions: from the partitions when every month is
    /// loaded, else as of the head read or last written.
    pub fn months_with_partitions(&self) -> BTreeSet<String> {
        if self.is_complete() {
            return self.partitions.keys().map(|d| month_of_date(d)).collect();
        }
        self.segments.iter().filter(|(m, r)| r.partitions > 0 && m.as_str() != UNDATED).map(|(m, _)| m.clone()).collect()
    }

    /// Months whose raw files' kept rows may touch `date` (to load before a re-read of it).
    pub fn months_with_raw_for(&self, date: &str) -> Vec<String> {
        self.segments
            .iter()
            .filter(
                |(_, r)| matches!((&r.raw_first_date, &r.raw_last_date), (Some(a), Some(b)) if a.as_str() <= date && date <= b.as_str()),
            )
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// The month of `date` and every later month with partitions, and the latest earlier month
    /// with partitions: what a recomputation from `date` reads (the partitions from it on, the
    /// carry state of the one before).
    pub fn months_for_window(&self, date: &str) -> BTreeSet<String> {
        let month = month_of_date(date);
        let with_partitions = |(m, r): &(&String, &SegmentRef)| r.partitions > 0 && m.as_str() != UNDATED;
        let mut months: BTreeSet<String> = self.segments.range(month.clone()..).filter(with_partitions).map(|(m, _)| m.clone()).collect();
        months.extend(self.segments.range(..month.clone()).rfind(with_partitions).map(|(m, _)| m.clone()));
        months.insert(month);
        months
    }

    /// The partitions of the loaded months.
    pub fn partitions(&self) -> &BTreeMap<String, PartitionEntry> {
        &self.partitions
    }

    /// The raw entries of the loaded months.
    pub fn raw(&self) -> &BTreeMap<String, RawEntry> {
        &self.raw
    }

    /// Whether a raw file has been processed (its month must be loaded).
    pub fn contains_raw(&self, key: &str) -> bool {
        let month = month_of_raw(key);
        assert!(self.loaded.contains(&month) || !self.segments.contains_key(&month), "manifest month {month} is not loaded");
        self.raw.contains_key(key)
    }

    /// Every committed date (needs every month loaded).
    pub fn partition_dates(&self) -> BTreeSet<String> {
        self.assert_complete();
        self.partitions.keys().cloned().collect()
    }

    /// The earliest committed date if every month is loaded, else (from the head alone) the
    /// first day of the earliest month with partitions: where Athena's partition projection
    /// starts its range.
    pub fn first_partition_month_start(&self) -> Option<String> {
        if self.is_complete() {
            return self.partitions.keys().next().cloned();
        }
        self.segments.iter().find(|(m, r)| r.partitions > 0 && m.as_str() != UNDATED).map(|(m, _)| format!("{m}-01"))
    }

    fn assert_complete(&self) {
        assert!(self.is_complete(), "the manifest is not loaded whole (Manifest::load_all)");
    }

    /// Record a processed raw file.
    pub fn insert_raw(&mut self, key: String, entry: RawEntry) {
        let month = month_of_raw(&key);
        if self.raw_watermark.as_ref().is_none_or(|w| *w < key) && month != UNDATED {
            self.raw_watermark = Some(key.clone());
        }
        self.raw.insert(key, entry);
        self.touch(month);
    }

    /// Record a committed partition (replacing the date's entry, if any).
    pub fn insert_partition(&mut self, date: String, entry: PartitionEntry) {
        match entry.published {
            true => self.pending.remove(&date),
            false => self.pending.insert(date.clone(), entry.run_id.clone()),
        };
        self.touch(month_of_date(&date));
        self.partitions.insert(date, entry);
    }

    /// Remove a date's partition; whether it had one.
    pub fn remove_partition(&mut self, date: &str) -> bool {
        self.pending.remove(date);
        self.touch(month_of_date(date));
        self.partitions.remove(date).is_some()
    }

    /// Record that a date's rollup files are at their published keys.
    pub fn set_rollups(&mut self, date: &str) {
        self.touch(month_of_date(date));
        if let Some(e) = self.partitions.get_mut(date) {
            e.rollups = true;
        }
    }

    /// Record that a staged partition was copied to its published key.
    pub fn set_published(&mut self, date: &str) {
        if let Some(e) = self.partitions.get_mut(date) {
            e.published = true;
        }
        self.pending.remove(date);
    }

    /// A month changes: it must be loaded (its segment is rewritten whole).
    fn touch(&mut self, month: String) {
        assert!(
            self.loaded.contains(&month) || !self.segments.contains_key(&month),
            "manifest month {month} is changed before it is loaded"
        );
        self.loaded.insert(month.clone());
        self.changed.insert(month);
    }

    /// Unpublished partitions: date → the run whose staging area holds them.
    pub fn pending(&self) -> &BTreeMap<String, String> {
        &self.pending
    }

    /// Whether any entry still needs files from run `run_id`'s staging area.
    pub fn references_staging_of(&self, run_id: &str) -> bool {
        self.pending.values().chain(self.pending_months.values()).any(|r| r == run_id)
    }

    /// Committed month files still in a run's staging area: month → run.
    pub fn pending_months(&self) -> &BTreeMap<String, String> {
        &self.pending_months
    }

    /// Months whose month files must be built by the next run.
    pub fn stale_months(&self) -> &BTreeSet<String> {
        &self.stale_months
    }

    /// Record that run `run_id` staged the month files of `month`, built from the month's
    /// rollups as this manifest has them.
    pub fn insert_month_files(&mut self, month: &str, run_id: &str) {
        self.stale_months.remove(month);
        self.pending_months.insert(month.to_owned(), run_id.to_owned());
    }

    /// Record that a month has no month files to publish (it has no partitions left).
    pub fn remove_month_files(&mut self, month: &str) {
        self.stale_months.remove(month);
        self.pending_months.remove(month);
    }

    /// Record that a month's staged month files were copied to their published keys.
    pub fn set_month_published(&mut self, month: &str) {
        self.pending_months.remove(month);
    }

    /// Record that a month's files must be built again by the next run.
    pub fn set_month_stale(&mut self, month: &str) {
        self.pending_months.remove(month);
        self.stale_months.insert(month.to_owned());
    }

    /// Whether a commit with this id is this version's or one of the few before it.
    pub fn has_commit(&self, run_id: &str) -> bool {
        self.commit == run_id || self.recent_commits.iter().any(|c| c == run_id)
    }

    /// The keys of the segments the head names.
    pub fn segment_keys(&self) -> BTreeSet<String> {
        self.segments.values().map(|r| r.key.clone()).collect()
    }

    /// The greatest dated raw key processed, and when a run last listed every raw file: what an
    /// hourly run's short listing starts from (see `process`).
    pub fn raw_watermark(&self) -> Option<(&str, Option<DateTime<Utc>>)> {
        self.raw_watermark.as_deref().map(|w| (w, self.full_listing_at))
    }

    /// After a write whose answer was lost but which landed (`current` is the head read back,
    /// naming this commit): take its version and segments as written.
    pub(super) fn adopt_commit(&mut self, current: &Manifest) {
        self.read_version = current.read_version.clone();
        self.commit = current.commit.clone();
        self.recent_commits = current.recent_commits.clone();
        self.segments = current.segments.clone();
        self.changed.clear();
    }

    /// Note that this run listed every raw file at `at`, after reading `late_raw` (the
    /// [`LATE_RAW_NOTE`](super::LATE_RAW_NOTE)'s text, if there was one).
    pub fn set_full_listing(&mut self, at: DateTime<Utc>, late_raw: Option<String>) {
        self.full_listing_at = Some(at);
        if late_raw.is_some() {
            self.late_raw_listed = late_raw;
        }
    }

    /// The [`LATE_RAW_NOTE`](super::LATE_RAW_NOTE) text the last full listing came after: a different one means raw
    /// files older than an hourly run looks at have arrived since.
    pub fn late_raw_listed(&self) -> Option<&str> {
        self.late_raw_listed.as_deref()
    }

    /// Write the changed months' segments, then the head if nobody else has written it since it
    /// was read (compare-and-swap), as commit `id` (None: the same commit, republished: only the
    /// publication state changed); remember the new version. A lost race is
    /// [`CommitError::Conflict`] and changes nothing readers see.
    pub(super) async fn write(&mut self, lake: &Lake, id: Option<&str>) -> CommitResult<()> {
        let id = id.map(str::to_owned).unwrap_or_else(|| self.commit.clone());
        let mut segments = self.segments.clone();
        let mut bodies: Vec<(String, Bytes)> = Vec::new();
        for month in &self.changed {
            let in_month = |d: &String| month_of_date(d) == *month;
            let segment = Segment {
                raw: self.raw.iter().filter(|(k, _)| month_of_raw(k) == *month).map(|(k, e)| (k.clone(), e.clone())).collect(),
                partitions: self
                    .partitions
                    .iter()
                    .filter(|(d, _)| in_month(d))
                    .map(|(d, e)| (d.clone(), StoredPartition { run_id: e.run_id.clone(), rows: e.rows, rollups: e.rollups }))
                    .collect(),
            };
            if segment.raw.is_empty() && segment.partitions.is_empty() {
                segments.remove(month);
                continue;
            }
            let body = serde_json::to_vec(&segment).expect("a segment serialises");
            let key = format!("{SEGMENTS_PREFIX}{month}-{}.json", content_hash(&body));
            let dates = segment.raw.values().flat_map(|e| [e.first_date.clone(), e.last_date.clone()]).flatten();
            let (first, last) = dates.fold((None::<String>, None::<String>), |(lo, hi), d| {
                (Some(lo.map_or(d.clone(), |l| l.min(d.clone()))), Some(hi.map_or(d.clone(), |h| h.max(d))))
            });
            segments.insert(
                month.clone(),
                SegmentRef {
                    key: key.clone(),
                    raw: segment.raw.len() as u64,
                    partitions: segment.partitions.len() as u64,
                    raw_first_date: first,
                    raw_last_date: last,
                },
            );
            bodies.push((key, Bytes::from(body)));
        }
        // Segments first: the head that names them is the commit.
        futures::stream::iter(bodies.into_iter().map(|(key, body)| async move { lake.put(&key, body).await }))
            .buffer_unordered(super::IO_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        let mut recent = self.recent_commits.clone();
        if !self.commit.is_empty() && self.commit != id {
            recent.push(self.commit.clone());
        }
        let keep_from = recent.len().saturating_sub(RECENT_COMMITS);
        let recent = recent.split_off(keep_from);
        let head = Head {
            format: FORMAT,
            commit: id.clone(),
            recent_commits: recent.clone(),
            segments: segments.clone(),
            pending: self.pending.clone(),
            pending_months: self.pending_months.clone(),
            stale_months: self.stale_months.clone(),
            raw_watermark: self.raw_watermark.clone(),
            full_listing_at: self.full_listing_at,
            late_raw_listed: self.late_raw_listed.clone(),
        };
        let body = Bytes::from(serde_json::to_vec(&head).expect("the head serialises"));
        let mode = match &self.read_version {
            Some(v) => PutMode::Update(v),
            None => PutMode::Create,
        };
        match lake.put_opts(MANIFEST_KEY, body, mode).await {
            Ok(version) => {
                self.read_version = Some(version);
                self.commit = id;
                self.recent_commits = recent;
                self.segments = segments;
                self.changed.clear();
                Ok(())
            }
            Err(LakeError::Conflict { .. }) => Err(CommitError::Conflict { lake: lake.describe() }),
            Err(e) => Err(e.into()),
        }
    }

    /// Committed raw files (of the loaded months) whose kept rows touch `date`.
    pub fn raw_files_for(&self, date: &str) -> impl Iterator<Item = &str> {
        self.raw
            .iter()
            .filter(move |(_, e)| matches!((&e.first_date, &e.last_date), (Some(a), Some(b)) if a.as_str() <= date && date <= b.as_str()))
            .map(|(k, _)| k.as_str())
    }

    /// The committed partitions, each at the key that holds its committed file: what every reader
    /// (query, catalog, SQL endpoint) reads, and nothing else under `processed/`. Needs every
    /// month loaded.
    pub fn committed_partitions(&self) -> Vec<CommittedPartition> {
        self.assert_complete();
        self.partitions
            .iter()
            .map(|(date, e)| CommittedPartition {
                date: date.clone(),
                key: e.processed_key(date),
                run_id: e.run_id.clone(),
                published: e.published,
                rollups: e.rollups,
            })
            .collect()
    }

    /// The quarantine files of committed raw files (readers show no others: a crashed run may
    /// have left some). Needs every month loaded.
    pub fn quarantine_keys(&self) -> BTreeSet<String> {
        self.assert_complete();
        self.raw.keys().map(|k| super::quarantine_key(k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_files_go_to_the_month_in_their_name() {
        assert_eq!(month_of_raw("raw/raw_crypto_prices_20250508T0300.csv"), "2025-05");
        assert_eq!(month_of_raw("raw/2024/raw_crypto_prices_20241231T2316.csv"), "2024-12");
        assert_eq!(month_of_raw("raw/prices.csv"), UNDATED);
        assert_eq!(month_of_raw("raw/raw_crypto_prices_2025.csv"), UNDATED);
    }

    #[tokio::test]
    async fn a_commit_writes_only_the_months_it_changed_and_reads_back_lazily() {
        let dir = tempfile::tempdir().unwrap();
        let lake: Lake = std::sync::Arc::new(super::super::local::LocalStore::open(dir.path()).unwrap());
        let mut m = Manifest::load(&lake).await.unwrap();
        for (key, date) in
            [("raw/raw_crypto_prices_20250131T2300.csv", "2025-01-31"), ("raw/raw_crypto_prices_20250201T0000.csv", "2025-02-01")]
        {
            m.insert_raw(key.into(), RawEntry { first_date: Some(date.into()), last_date: Some(date.into()), ..Default::default() });
            m.insert_partition(date.into(), PartitionEntry { run_id: "r1".into(), rows: 3, published: false, rollups: true });
        }
        m.write(&lake, Some("r1")).await.unwrap();
        let segments = lake.list(SEGMENTS_PREFIX).await.unwrap();
        assert_eq!(segments.len(), 2, "one segment per month");

        // Read back: the head alone, then one month on demand.
        let mut back = Manifest::load(&lake).await.unwrap();
        assert!(!back.is_complete() && back.partitions().is_empty());
        assert_eq!(back.pending().len(), 2, "publication state is in the head");
        assert!(back.references_staging_of("r1"));
        back.ensure(&lake, ["2025-02".to_owned()]).await.unwrap();
        assert!(back.contains_raw("raw/raw_crypto_prices_20250201T0000.csv"));
        assert_eq!(back.months_with_raw_for("2025-01-31"), ["2025-01"]);
        assert_eq!(back.months_for_window("2025-02-01"), BTreeSet::from(["2025-01".to_owned(), "2025-02".to_owned()]));
        back.set_published("2025-02-01");
        assert!(!back.partitions()["2025-02-01"].processed_key("2025-02-01").contains("_tickerlake/runs/"));
        // A change to February rewrites February only; January's segment stays as it was.
        back.insert_raw("raw/raw_crypto_prices_20250201T0100.csv".into(), RawEntry::default());
        let january = back.segments["2025-01"].key.clone();
        back.write(&lake, Some("r2")).await.unwrap();
        let all = Manifest::load_all(&lake).await.unwrap();
        assert_eq!(all.segments["2025-01"].key, january);
        assert!(all.stale_months().is_empty() && all.pending_months().is_empty(), "a new lake in this format has no stale months");
        assert_eq!(all.months_with_partitions(), BTreeSet::from(["2025-01".to_owned(), "2025-02".to_owned()]));
        assert_eq!(all.raw().len(), 3);
        assert_eq!(all.partition_dates().len(), 2);
        assert!(all.has_commit("r1") && all.has_commit("r2") && !all.has_commit("r3"));
        assert_eq!(all.pending().keys().collect::<Vec<_>>(), ["2025-01-31"]);
        assert_eq!(all.first_partition_month_start().as_deref(), Some("2025-01-31"));
        assert_eq!(Manifest::load(&lake).await.unwrap().first_partition_month_start().as_deref(), Some("2025-01-01"));
        assert_eq!(all.raw_watermark().map(|(w, _)| w), Some("raw/raw_crypto_prices_20250201T0100.csv"));
    }

    #[tokio::test]
    async fn a_format_one_manifest_is_read_and_rewritten_in_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let lake: Lake = std::sync::Arc::new(super::super::local::LocalStore::open(dir.path()).unwrap());
        let one = r#"{"format":1,"raw":{"raw/raw_crypto_prices_20250508T0300.csv":{"version":"v","rows":2,"kept":1,"quarantined":0,
                     "first_date":"2025-05-08","last_date":"2025-05-08"}},"partitions":{"2025-05-08":{"run_id":"old","rows":1}}}"#;
        lake.put(MANIFEST_KEY, Bytes::from(one)).await.unwrap();
        let mut m = Manifest::load(&lake).await.unwrap();
        assert!(m.is_complete() && m.partitions()["2025-05-08"].published);
        m.write(&lake, Some("new")).await.unwrap();
        let text = String::from_utf8(lake.get(MANIFEST_KEY).await.unwrap().unwrap().to_vec()).unwrap();
        assert!(text.starts_with(&format!("{{\"format\":{FORMAT}")), "{text}");
        let back = Manifest::load_all(&lake).await.unwrap();
        assert_eq!(back.stale_months().iter().collect::<Vec<_>>(), ["2025-05"], "a lake from before month files needs them built");
        assert_eq!(back.committed_partitions()[0].run_id, "old");
        assert!(back.contains_raw("raw/raw_crypto_prices_20250508T0300.csv"));
    }

    #[tokio::test]
    async fn month_files_are_pending_then_published_and_a_format_two_head_needs_them_built() {
        let dir = tempfile::tempdir().unwrap();
        let lake: Lake = std::sync::Arc::new(super::super::local::LocalStore::open(dir.path()).unwrap());
        let mut m = Manifest::load(&lake).await.unwrap();
        m.insert_partition("2025-03-02".into(), PartitionEntry { run_id: "r1".into(), rows: 1, published: false, rollups: true });
        m.insert_month_files("2025-03", "r1");
        m.write(&lake, Some("r1")).await.unwrap();
        let mut back = Manifest::load(&lake).await.unwrap();
        assert_eq!(back.pending_months().get("2025-03").map(String::as_str), Some("r1"));
        back.set_published("2025-03-02");
        assert!(back.references_staging_of("r1"), "the month files still are in r1's staging area");
        back.set_month_published("2025-03");
        assert!(!back.references_staging_of("r1"));
        back.set_month_stale("2025-03");
        back.write(&lake, None).await.unwrap();
        assert_eq!(Manifest::load(&lake).await.unwrap().stale_months().iter().collect::<Vec<_>>(), ["2025-03"]);

        // The same head in format 2 (no month state): every month with partitions is stale.
        let text = String::from_utf8(lake.get(MANIFEST_KEY).await.unwrap().unwrap().to_vec()).unwrap();
        let two = text.replacen(&format!("\"format\":{FORMAT}"), "\"format\":2", 1).replace(",\"stale_months\":[\"2025-03\"]", "");
        assert!(!two.contains("stale_months"), "{two}");
        lake.put(MANIFEST_KEY, Bytes::from(two)).await.unwrap();
        assert_eq!(Manifest::load(&lake).await.unwrap().stale_months().iter().collect::<Vec<_>>(), ["2025-03"]);
    }
}
