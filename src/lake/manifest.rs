//! The manifest: what has been processed and which file holds each committed partition. It is
//! the lake's single source of truth; `commit` is the only code that changes it.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{CommitError, CommitResult, Lake, LakeError, MANIFEST_KEY, PutMode};

const FORMAT: u32 = 1;

/// The committed state of the lake.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Format of this file (readers refuse other formats).
    pub format: u32,
    /// The id of the run whose commit wrote this version: how a run whose commit request failed
    /// ambiguously (its answer lost, a retry refused) tells whether the commit landed.
    /// Empty in manifests written before commits had ids.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
    /// Raw files already processed, by lake key.
    pub raw: BTreeMap<String, RawEntry>,
    /// Committed processed partitions, by date (`YYYY-MM-DD`).
    pub partitions: BTreeMap<String, PartitionEntry>,
    /// The version of the manifest object this was read at (None: there was none); the commit is
    /// conditional on it.
    #[serde(skip)]
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
    /// until then it is read from the run's staging area. Manifests written before staging
    /// existed had only published files.
    #[serde(default = "published_by_default")]
    pub published: bool,
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
}

impl CommittedPartition {
    /// The one-line error for a reader that found this partition's file gone: a staged file
    /// is rebuilt by the next `process` (it notices the loss when it publishes); a published
    /// one only by a full rebuild (runs do not look at every published file).
    pub fn missing(&self) -> CommitError {
        let repair = if self.published { "tickerlake process --full" } else { "tickerlake process" };
        CommitError::MissingPartition { date: self.date.clone(), key: self.key.clone(), repair }
    }
}

impl PartitionEntry {
    /// Where the committed partition file of `date` is now.
    pub fn processed_key(&self, date: &str) -> String {
        self.locate(super::processed_key(date))
    }

    /// Where the committed carry file of `date` is now.
    pub fn carry_key(&self, date: &str) -> String {
        self.locate(super::carry_key(date))
    }

    fn locate(&self, published: String) -> String {
        if self.published { published } else { super::staged_key(&self.run_id, &published) }
    }
}

impl Manifest {
    /// An empty manifest (a new lake).
    pub fn empty() -> Self {
        Self { format: FORMAT, ..Self::default() }
    }

    /// Read the committed manifest (empty if the lake has none yet), remembering its version.
    pub async fn load(lake: &Lake) -> CommitResult<Self> {
        let Some(found) = lake.get_versioned(MANIFEST_KEY).await? else {
            return Ok(Self::empty());
        };
        let mut manifest: Self =
            serde_json::from_slice(&found.data).map_err(|source| CommitError::CorruptManifest { lake: lake.describe(), source })?;
        if manifest.format != FORMAT {
            return Err(CommitError::ManifestFormat { found: manifest.format, expected: FORMAT });
        }
        manifest.read_version = Some(found.version);
        Ok(manifest)
    }

    /// Write the manifest if nobody else has since it was read (compare-and-swap), and remember
    /// the new version. A lost race is [`CommitError::Conflict`] and writes nothing.
    pub(super) async fn write(&mut self, lake: &Lake) -> CommitResult<()> {
        let body = Bytes::from(serde_json::to_vec(self).expect("the manifest serialises"));
        let mode = match &self.read_version {
            Some(v) => PutMode::Update(v),
            None => PutMode::Create,
        };
        match lake.put_opts(MANIFEST_KEY, body, mode).await {
            Ok(version) => {
                self.read_version = Some(version);
                Ok(())
            }
            Err(LakeError::Conflict { .. }) => Err(CommitError::Conflict { lake: lake.describe() }),
            Err(e) => Err(e.into()),
        }
    }

    /// Committed raw files whose kept rows touch `date`.
    pub fn raw_files_for(&self, date: &str) -> impl Iterator<Item = &str> {
        self.raw
            .iter()
            .filter(move |(_, e)| matches!((&e.first_date, &e.last_date), (Some(a), Some(b)) if a.as_str() <= date && date <= b.as_str()))
            .map(|(k, _)| k.as_str())
    }

    /// Whether any entry still needs files from run `run_id`'s staging area.
    pub fn references_staging_of(&self, run_id: &str) -> bool {
        self.partitions.values().any(|e| !e.published && e.run_id == run_id)
    }

    /// The committed partitions, each at the key that holds its committed file: what every reader
    /// (query, catalog, SQL endpoint) reads, and nothing else under `processed/`.
    pub fn committed_partitions(&self) -> Vec<CommittedPartition> {
        self.partitions
            .iter()
            .map(|(date, e)| CommittedPartition {
                date: date.clone(),
                key: e.processed_key(date),
                run_id: e.run_id.clone(),
                published: e.published,
            })
            .collect()
    }

    /// The quarantine files of committed raw files (readers show no others: a crashed run may
    /// have left some).
    pub fn quarantine_keys(&self) -> std::collections::BTreeSet<String> {
        self.raw.keys().map(|k| super::quarantine_key(k)).collect()
    }
}
