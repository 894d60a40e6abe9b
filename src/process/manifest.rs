//! The manifest: what has been processed. Writing it is the commit point of a `process` run.
//!
//! Everything a run writes before the manifest is either deterministic (re-running rewrites the
//! same bytes' worth of data) or tagged with the run id, so a crash before the commit leaves
//! nothing that a re-run would double-count.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::lake::{Lake, MANIFEST_KEY};

const FORMAT: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    /// Raw files already processed, by lake key.
    pub raw: BTreeMap<String, RawEntry>,
    /// Committed processed partitions, by date (`YYYY-MM-DD`).
    pub partitions: BTreeMap<String, PartitionEntry>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RawEntry {
    /// The object's version when it was processed (ETag or mtime+size), to notice edits.
    pub version: String,
    pub rows: u64,
    pub kept: u64,
    pub quarantined: u64,
    /// Range of dates its kept rows fall in: which partitions to re-read it for, if ever needed.
    pub first_date: Option<String>,
    pub last_date: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PartitionEntry {
    /// The run whose output is committed; the partition's Parquet metadata must name the same run.
    pub run_id: String,
    pub rows: u64,
}

impl Manifest {
    pub async fn load(lake: &Lake) -> Result<Self> {
        let Some(bytes) = lake.get(MANIFEST_KEY).await? else {
            return Ok(Self { format: FORMAT, ..Self::default() });
        };
        let manifest: Self = serde_json::from_slice(&bytes).with_context(|| {
            format!("{MANIFEST_KEY} in {} is corrupt; rebuild it with `tickerlake process --full`", lake.describe())
        })?;
        if manifest.format != FORMAT {
            bail!("{MANIFEST_KEY} has format {} but this tickerlake reads format {FORMAT}; rebuild with `tickerlake process --full`", manifest.format);
        }
        Ok(manifest)
    }

    pub fn empty() -> Self {
        Self { format: FORMAT, ..Self::default() }
    }

    pub async fn commit(&self, lake: &Lake) -> Result<()> {
        lake.put(MANIFEST_KEY, Bytes::from(serde_json::to_vec(self)?)).await
    }

    /// Committed raw files whose kept rows touch `date`.
    pub fn raw_files_for(&self, date: &str) -> impl Iterator<Item = &str> {
        self.raw.iter()
            .filter(move |(_, e)| matches!((&e.first_date, &e.last_date), (Some(a), Some(b)) if a.as_str() <= date && date <= b.as_str()))
            .map(|(k, _)| k.as_str())
    }
}
