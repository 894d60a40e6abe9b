//! The catalog: makes an S3 lake queryable by Athena (and any Hive-compatible reader) by keeping
//! AWS Glue's database, tables and partitions in step with the lake's committed state. It sits
//! beside the lake, not inside it: it reads the manifest and writes only to Glue.
//!
//! - `processed`: Parquet, partitioned by `date` (Hive type `date`, so `WHERE date = DATE '…'`
//!   and range filters mean the same on Athena and on the local engine).
//! - `daily`, `snapshots`: the rollups' month files, partitioned by `month` (`YYYY-MM`), with
//!   `date` a column: the same columns and SQL as the local engine's views, 12 files a year.
//! - `raw`: the CSV snapshots (header skipped); `price` is a `double`, `timestamp` the raw text
//!   (`2025-05-08 03:16:32.801588+00:00`), because Athena's CSV SerDes cannot parse a timestamp with
//!   an offset; the local engine's `raw` view exposes the same types.
//! - partitions: `register` (BatchCreatePartition of committed dates and months, ≤ 100 a call;
//!   works for every Hive reader) or `projection` (Athena partition projection; nothing registered).
//!
//! It runs after a committed `process` (only the dates that run wrote or removed) and as
//! `tickerlake catalog` (a full reconciliation); never before a commit, so Athena never lists an
//! uncommitted partition. Whether the catalog may be behind the lake is remembered *in the lake*
//! ([`BEHIND_KEY`], written before a run that may commit and removed once the catalog caught up),
//! so a failed or interrupted update is caught up by the next run in any mode, cron included.

pub mod glue;

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;

use crate::aws::AwsOptions;
use crate::lake::manifest::Manifest;
use crate::lake::{CommitError, Lake, LakeError};

/// Present while the catalog may be behind the lake's committed state: the next catalog update
/// is then a full reconciliation.
pub const BEHIND_KEY: &str = "_tickerlake/catalog-behind";

/// How partitions reach Athena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PartitionMode {
    /// Register each committed date with BatchCreatePartition (every Hive-compatible reader).
    #[default]
    Register,
    /// Athena partition projection table properties; nothing is registered.
    Projection,
}

/// Which catalog to keep (`--catalog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CatalogKind {
    /// No catalog (the default): the lake is files only.
    #[default]
    None,
    /// AWS Glue (Athena's catalog).
    Glue,
}

/// Where the lake is and what to call things in Glue.
#[derive(Debug, Clone)]
pub struct CatalogOptions {
    /// The Glue database (default `dbcrypto`, as in the original project).
    pub database: String,
    /// How partitions are exposed.
    pub partitions: PartitionMode,
    /// The lake's bucket.
    pub bucket: String,
    /// The lake's key prefix inside the bucket (empty or ending in `/`).
    pub prefix: String,
}

impl CatalogOptions {
    /// `s3://bucket/prefix/<what>/`.
    pub fn location(&self, what: &str) -> String {
        format!("s3://{}/{}{what}/", self.bucket, self.prefix)
    }

    /// Catalog options for the lake at `--lake`; a local lake cannot be cataloged in Glue.
    pub fn for_lake(lake: &str, database: &str, partitions: PartitionMode) -> Result<Self, CatalogError> {
        let Some(rest) = lake.strip_prefix("s3://") else {
            return Err(CatalogError::NotS3 { lake: lake.to_owned() });
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Ok(Self { database: database.to_owned(), partitions, bucket: bucket.to_owned(), prefix })
    }
}

/// A failed catalog operation. The lake itself is never changed by the catalog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// Glue catalogs S3 locations only.
    #[error(
        "--lake {lake} is not an S3 lake; the Glue catalog needs --lake s3://BUCKET/PREFIX (query a local lake with `tickerlake query`)"
    )]
    NotS3 {
        /// The lake given.
        lake: String,
    },
    /// Glue refused or failed a call.
    #[error("Glue {action} failed{}: {message}", on.as_deref().map(|o| format!(" on {o}")).unwrap_or_default())]
    Glue {
        /// The IAM action of the call (`glue:CreateTable`).
        action: &'static str,
        /// What it was about (database.table, partition).
        on: Option<String>,
        /// The service's message or the transport failure.
        message: String,
        /// Whether retrying cannot help (access denied, bad credentials).
        permanent: bool,
    },
    /// The lake's committed state could not be read.
    #[error("{0}")]
    Committed(#[from] CommitError),
    /// The lake could not be read or written (its note that the catalog is behind).
    #[error("{0}")]
    Lake(#[from] LakeError),
}

impl CatalogError {
    /// Whether retrying cannot fix it.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::NotS3 { .. } => true,
            Self::Glue { permanent, .. } => *permanent,
            Self::Committed(e) => e.is_permanent(),
            Self::Lake(e) => e.is_permanent(),
        }
    }
}

/// What a catalog run changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogReport {
    /// The database was created.
    pub database_created: bool,
    /// Tables created.
    pub tables_created: Vec<String>,
    /// Tables whose definition was updated.
    pub tables_updated: Vec<String>,
    /// Partitions registered.
    pub partitions_added: usize,
    /// Partitions removed (dates no longer in the lake).
    pub partitions_removed: usize,
    /// Partitions already registered.
    pub partitions_unchanged: usize,
    /// Glue requests sent.
    pub requests: u64,
}

impl CatalogReport {
    /// Whether nothing changed.
    pub fn is_noop(&self) -> bool {
        !self.database_created
            && self.tables_created.is_empty()
            && self.tables_updated.is_empty()
            && self.partitions_added == 0
            && self.partitions_removed == 0
    }
}

impl fmt::Display for CatalogReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_noop() {
            return write!(
                f,
                "catalog is up to date: nothing changed ({} partition(s) checked, {} Glue requests)",
                self.partitions_unchanged, self.requests
            );
        }
        let mut parts = Vec::new();
        if self.database_created {
            parts.push("database created".to_owned());
        }
        if !self.tables_created.is_empty() {
            parts.push(format!("created table(s) {}", self.tables_created.join(", ")));
        }
        if !self.tables_updated.is_empty() {
            parts.push(format!("updated table(s) {}", self.tables_updated.join(", ")));
        }
        parts.push(format!(
            "{} partition(s) added, {} removed, {} already registered",
            self.partitions_added, self.partitions_removed, self.partitions_unchanged
        ));
        write!(f, "catalog updated: {} ({} Glue requests)", parts.join("; "), self.requests)
    }
}

/// The catalog of one lake.
#[derive(Debug, Clone)]
pub struct Catalog {
    glue: glue::Glue,
    options: CatalogOptions,
}

impl Catalog {
    /// A Glue catalog for the lake described by `options`.
    pub async fn connect(aws: &AwsOptions, options: CatalogOptions) -> Self {
        let sdk = crate::aws::sdk_config(aws).await;
        Self { glue: glue::Glue::new(crate::aws::glue_client(&sdk, aws)), options }
    }

    /// Reconcile everything with the committed manifest: database, tables, every partition
    /// (`processed`'s: the committed dates; the rollups': the months with committed dates).
    pub async fn sync(&self, manifest: &Manifest) -> Result<CatalogReport, CatalogError> {
        let before = self.glue.requests();
        let mut report = CatalogReport::default();
        let dates = manifest.partition_dates();
        self.ensure_schema(dates.first().map(String::as_str), &mut report).await?;
        if self.options.partitions == PartitionMode::Register {
            let months = manifest.months_with_partitions();
            for table in glue::TABLES {
                let wanted = match table.key {
                    glue::PartitionKey::Date => &dates,
                    glue::PartitionKey::Month => &months,
                };
                let registered = self.glue.partition_values(&self.options.database, table.name).await?;
                let missing: Vec<String> = wanted.difference(&registered).cloned().collect();
                let stale: Vec<String> = registered.difference(wanted).cloned().collect();
                report.partitions_unchanged += registered.intersection(wanted).count();
                report.partitions_added += self.glue.add_partitions(&self.options, table, &missing).await?;
                report.partitions_removed += self.glue.remove_partitions(&self.options.database, table.name, &stale).await?;
            }
        }
        report.requests = self.glue.requests() - before;
        Ok(report)
    }

    /// Before a run that may commit: note in the lake that the catalog may fall behind, so that
    /// if this process dies before [`Catalog::update`] the next run catches up. Returns whether
    /// it already was behind (an earlier update failed or never happened).
    pub async fn mark_behind(&self, lake: &Lake) -> Result<bool, CatalogError> {
        if lake.get(BEHIND_KEY).await?.is_some() {
            return Ok(true);
        }
        let note = format!(
            "the Glue catalog may be behind this lake since {}; the next run or `tickerlake catalog` reconciles it\n",
            chrono::Utc::now()
        );
        lake.put(BEHIND_KEY, Bytes::from(note)).await?;
        Ok(false)
    }

    /// After a run: bring the catalog in step with the committed state (the dates the run wrote
    /// and removed; everything when it was `behind`), then forget the note. On failure the note
    /// stays, and the next run reconciles everything.
    pub async fn update(&self, lake: &Lake, behind: bool, written: &[String], removed: &[String]) -> Result<CatalogReport, CatalogError> {
        // Tables from an older tickerlake (the rollups partitioned by date) are redefined, and
        // their partitions replaced, by a full reconciliation.
        let rollups = glue::TABLES[1];
        let outdated = self.glue.partition_key(&self.options.database, rollups.name).await?.is_some_and(|k| k != rollups.key.name());
        let report = match behind || outdated {
            true => self.sync(&Manifest::load_all(lake).await?).await?,
            false => self.after_commit(&Manifest::load(lake).await?, written, removed).await?,
        };
        lake.delete(BEHIND_KEY).await?;
        Ok(report)
    }

    /// `tickerlake catalog`: reconcile everything with the lake's committed state, and forget
    /// any note that the catalog was behind.
    pub async fn reconcile(&self, lake: &Lake) -> Result<CatalogReport, CatalogError> {
        self.update(lake, true, &[], &[]).await
    }

    /// After a committed run: register the dates it wrote and their months (a no-op for those
    /// already there) and deregister the dates it removed (and their months, if left with no
    /// dates), creating the database and tables first if they are missing.
    pub async fn after_commit(
        &self,
        manifest: &Manifest,
        dates_written: &[String],
        dates_removed: &[String],
    ) -> Result<CatalogReport, CatalogError> {
        let before = self.glue.requests();
        let mut report = CatalogReport::default();
        if !self.glue.table_exists(&self.options.database, glue::PROCESSED).await? || self.options.partitions == PartitionMode::Projection {
            // First run, or projection (whose range may need to grow): reconcile the schema.
            self.ensure_schema(manifest.first_partition_month_start().as_deref(), &mut report).await?;
        }
        if self.options.partitions == PartitionMode::Register {
            let with_dates = manifest.months_with_partitions();
            for table in glue::TABLES {
                let values = |dates: &[String]| dates.iter().map(|d| table.key.value_of(d)).collect::<BTreeSet<String>>();
                let written: Vec<String> = values(dates_written).into_iter().collect();
                let removed: Vec<String> = values(dates_removed).into_iter().filter(|v| !with_dates.contains(v)).collect();
                let added = self.glue.add_partitions(&self.options, table, &written).await?;
                report.partitions_added += added;
                report.partitions_unchanged += written.len() - added;
                report.partitions_removed += self.glue.remove_partitions(&self.options.database, table.name, &removed).await?;
            }
        }
        report.requests = self.glue.requests() - before;
        Ok(report)
    }

    /// The database and the tables, the date tables' projection range starting at `first_date`.
    async fn ensure_schema(&self, first_date: Option<&str>, report: &mut CatalogReport) -> Result<(), CatalogError> {
        report.database_created = self.glue.ensure_database(&self.options.database).await?;
        let tables =
            glue::TABLES.map(|t| glue::partitioned_table(&self.options, t, first_date)).into_iter().chain([glue::raw_table(&self.options)]);
        for table in tables {
            let name = table.name().to_owned();
            match self.glue.ensure_table(&self.options.database, table).await? {
                glue::TableChange::Created => report.tables_created.push(name),
                glue::TableChange::Updated => report.tables_updated.push(name),
                glue::TableChange::Unchanged => {}
            }
        }
        Ok(())
    }

    /// One line per problem with Glue access, for `doctor`.
    pub async fn check(&self) -> Result<String, CatalogError> {
        let exists = self.glue.database_exists(&self.options.database).await?;
        Ok(match exists {
            true => format!("Glue database {} is reachable", self.options.database),
            false => format!("Glue is reachable; database {} does not exist yet (`tickerlake catalog` creates it)", self.options.database),
        })
    }
}
