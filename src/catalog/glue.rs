//! The Glue calls of the catalog, and the table definitions (exact Hive types, Parquet and CSV
//! SerDes, partition projection properties).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_glue::Client;
use aws_sdk_glue::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_glue::types::{Column, DatabaseInput, PartitionInput, PartitionValueList, SerDeInfo, StorageDescriptor, Table, TableInput};

use super::{CatalogError, CatalogOptions, PartitionMode};

/// The processed table's name (as the original project's crawler named it).
pub const PROCESSED: &str = "processed";
/// The raw table's name.
pub const RAW: &str = "raw";
/// Partitions per BatchCreatePartition call (Glue's limit).
const CREATE_CHUNK: usize = 100;
/// Partitions per BatchDeletePartition call (Glue's limit).
const DELETE_CHUNK: usize = 25;
/// Table parameters tickerlake owns; on update every other parameter is kept as Glue has it.
const PROJECTION_KEYS: [&str; 12] = [
    "projection.enabled",
    "projection.date.type",
    "projection.date.format",
    "projection.date.range",
    "projection.date.interval",
    "projection.date.interval.unit",
    "projection.month.type",
    "projection.month.format",
    "projection.month.range",
    "projection.month.interval",
    "projection.month.interval.unit",
    "storage.location.template",
];

/// What `ensure_table` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableChange {
    /// The table did not exist.
    Created,
    /// Its definition differed and was replaced (partitions kept).
    Updated,
    /// It was already as wanted.
    Unchanged,
}

/// A Glue client that counts its requests.
#[derive(Debug, Clone)]
pub struct Glue {
    client: Client,
    requests: Arc<AtomicU64>,
}

fn column(name: &str, hive_type: &str) -> Column {
    Column::builder().name(name).r#type(hive_type).build().expect("name is set")
}

/// What a table's partitions are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKey {
    /// `date=YYYY-MM-DD` (Hive type `date`): one file per committed date.
    Date,
    /// `month=YYYY-MM` (Hive type `string`): one file per month with committed dates, which
    /// holds `date` as a column (`lake::MonthFile`).
    Month,
}

impl PartitionKey {
    /// The partition column's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Date => "date",
            Self::Month => "month",
        }
    }

    /// The partition value of a committed date.
    pub fn value_of(self, date: &str) -> String {
        match self {
            Self::Date => date.to_owned(),
            Self::Month => crate::lake::manifest::month_of_date(date),
        }
    }
}

/// A partitioned table of Parquet files, one per partition: `processed` and the rollups.
#[derive(Debug, Clone, Copy)]
pub struct PartitionedTable {
    /// The table's name (the query view's too).
    pub name: &'static str,
    /// Where its partitions live under the lake (`processed`, `rollups/by_month/daily`…).
    pub location: &'static str,
    /// Its partitions.
    pub key: PartitionKey,
    /// Its data columns (`date` is the partition key, or with month partitions the first column).
    pub columns: &'static [crate::indicators::Column],
    /// The table's description in Glue.
    pub description: &'static str,
}

/// `processed` (by date), then the rollups: their month files, so a year is 12 files to read.
pub const TABLES: [PartitionedTable; 3] = [
    PartitionedTable {
        name: PROCESSED,
        location: "processed",
        key: PartitionKey::Date,
        columns: &crate::indicators::PROCESSED_COLUMNS,
        description: "tickerlake indicators per symbol and hour, partitioned by UTC date",
    },
    PartitionedTable {
        name: "daily",
        location: "rollups/by_month/daily",
        key: PartitionKey::Month,
        columns: &crate::indicators::DAILY_COLUMNS,
        description: "tickerlake rollup per symbol and UTC date: counts, first/last/min/max price, % change moments; one file per month",
    },
    PartitionedTable {
        name: "snapshots",
        location: "rollups/by_month/snapshots",
        key: PartitionKey::Month,
        columns: &crate::indicators::SNAPSHOTS_COLUMNS,
        description: "tickerlake rollup per snapshot: its time and the symbols it kept; one file per month",
    },
];

/// The `processed` table: Parquet, Hive types, partitioned by `date`.
pub fn processed_table(opts: &CatalogOptions, first_date: Option<&str>) -> TableInput {
    partitioned_table(opts, TABLES[0], first_date)
}

/// A partitioned table: Parquet, Hive types, partitioned by `date` or `month` (projected from
/// `first_date`'s on with `--partitions projection`).
pub fn partitioned_table(opts: &CatalogOptions, table: PartitionedTable, first_date: Option<&str>) -> TableInput {
    let location = opts.location(table.location);
    let date_column = (table.key == PartitionKey::Month).then_some(&crate::indicators::DATE_COLUMN);
    let sd = StorageDescriptor::builder()
        .set_columns(Some(date_column.into_iter().chain(table.columns).map(|c| column(c.name, c.hive)).collect()))
        .location(&location)
        .input_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
        .output_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat")
        .serde_info(
            SerDeInfo::builder()
                .serialization_library("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe")
                .parameters("serialization.format", "1")
                .build(),
        )
        .build();
    let mut params: HashMap<String, String> =
        [("classification", "parquet"), ("EXTERNAL", "TRUE")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let key = table.key.name();
    if opts.partitions == PartitionMode::Projection {
        let first = table.key.value_of(first_date.unwrap_or("2017-01-01"));
        let (format, unit) = match table.key {
            PartitionKey::Date => ("yyyy-MM-dd", "DAYS"),
            PartitionKey::Month => ("yyyy-MM", "MONTHS"),
        };
        for (k, v) in [
            ("enabled", "true".to_owned()),
            ("type", "date".to_owned()),
            ("format", format.to_owned()),
            ("range", format!("{first},NOW")),
            ("interval", "1".to_owned()),
            ("interval.unit", unit.to_owned()),
        ] {
            let name = if k == "enabled" { "projection.enabled".to_owned() } else { format!("projection.{key}.{k}") };
            params.insert(name, v);
        }
        params.insert("storage.location.template".to_owned(), format!("{location}{key}=${{{key}}}/"));
    }
    let key_type = match table.key {
        PartitionKey::Date => "date",
        PartitionKey::Month => "string",
    };
    TableInput::builder()
        .name(table.name)
        .description(table.description)
        .table_type("EXTERNAL_TABLE")
        .set_parameters(Some(params))
        .storage_descriptor(sd)
        .partition_keys(column(key, key_type))
        .build()
        .expect("name is set")
}

/// The `raw` table: the CSV snapshots, header skipped; `timestamp` stays text (see the module doc).
pub fn raw_table(opts: &CatalogOptions) -> TableInput {
    let sd = StorageDescriptor::builder()
        .set_columns(Some(vec![column("symbol", "string"), column("price", "double"), column("timestamp", "string")]))
        .location(opts.location("raw"))
        .input_format("org.apache.hadoop.mapred.TextInputFormat")
        .output_format("org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat")
        .serde_info(
            SerDeInfo::builder()
                .serialization_library("org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe")
                .parameters("field.delim", ",")
                .parameters("serialization.format", ",")
                .build(),
        )
        .build();
    let params: HashMap<String, String> = [("classification", "csv"), ("EXTERNAL", "TRUE"), ("skip.header.line.count", "1")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    TableInput::builder()
        .name(RAW)
        .description("tickerlake raw hourly snapshots as collected from Binance (symbol, price, timestamp text)")
        .table_type("EXTERNAL_TABLE")
        .set_parameters(Some(params))
        .storage_descriptor(sd)
        .build()
        .expect("name is set")
}

/// The parts of a definition tickerlake owns, for comparison.
fn essentials(
    table_type: Option<&str>,
    params: Option<&HashMap<String, String>>,
    sd: Option<&StorageDescriptor>,
    keys: &[Column],
    wanted: &TableInput,
) -> String {
    let owned: BTreeSet<&str> = wanted.parameters().into_iter().flat_map(|p| p.keys().map(String::as_str)).chain(PROJECTION_KEYS).collect();
    let params: Vec<(String, String)> = params
        .into_iter()
        .flat_map(|p| p.iter())
        .filter(|(k, _)| owned.contains(k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let cols = |c: &[Column]| c.iter().map(|c| format!("{}:{}", c.name(), c.r#type().unwrap_or(""))).collect::<Vec<_>>().join(",");
    let serde = sd.and_then(|s| s.serde_info());
    let serde_params: std::collections::BTreeMap<_, _> = serde.and_then(|s| s.parameters()).into_iter().flat_map(|p| p.iter()).collect();
    format!(
        "{table_type:?}|{params:?}|{:?}|{:?}|{:?}|{:?}|{serde_params:?}|{}|{}",
        sd.and_then(|s| s.location()),
        sd.and_then(|s| s.input_format()),
        sd.and_then(|s| s.output_format()),
        serde.and_then(|s| s.serialization_library()),
        sd.map(|s| cols(s.columns())).unwrap_or_default(),
        cols(keys),
    )
}

/// The full TableInput of an existing table with tickerlake's parts replaced by `wanted`'s: what
/// UpdateTable needs (it replaces the whole definition), keeping everything else Glue holds.
fn rebuilt(existing: &Table, wanted: &TableInput) -> TableInput {
    let mut params: HashMap<String, String> = existing.parameters().cloned().unwrap_or_default();
    for k in PROJECTION_KEYS {
        params.remove(k);
    }
    params.extend(wanted.parameters().cloned().unwrap_or_default());
    TableInput::builder()
        .name(existing.name())
        .set_description(wanted.description().or(existing.description()).map(str::to_owned))
        .set_owner(existing.owner().map(str::to_owned))
        .set_last_access_time(existing.last_access_time().cloned())
        .set_last_analyzed_time(existing.last_analyzed_time().cloned())
        .retention(existing.retention())
        .set_storage_descriptor(wanted.storage_descriptor().cloned())
        .set_partition_keys(Some(wanted.partition_keys().to_vec()))
        .set_view_original_text(existing.view_original_text().map(str::to_owned))
        .set_view_expanded_text(existing.view_expanded_text().map(str::to_owned))
        .set_table_type(wanted.table_type().map(str::to_owned))
        .set_parameters(Some(params))
        .build()
        .expect("name is set")
}

impl Glue {
    /// Wrap a client (built from the resolved AWS configuration).
    pub fn new(client: Client) -> Self {
        Self { client, requests: Arc::default() }
    }

    /// Glue requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the database exists.
    pub async fn database_exists(&self, db: &str) -> Result<bool, CatalogError> {
        self.count();
        match self.client.get_database().name(db).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => Ok(false),
            Err(e) => Err(explain(e, "glue:GetDatabase", Some(db.to_owned()))),
        }
    }

    /// Create the database if missing; true if it was created.
    pub async fn ensure_database(&self, db: &str) -> Result<bool, CatalogError> {
        if self.database_exists(db).await? {
            return Ok(false);
        }
        self.count();
        let input = DatabaseInput::builder().name(db).description("tickerlake: crypto prices lake").build().expect("name is set");
        match self.client.create_database().database_input(input).send().await {
            Ok(_) => Ok(true),
            // Created meanwhile by a concurrent run.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => Ok(false),
            Err(e) => Err(explain(e, "glue:CreateDatabase", Some(db.to_owned()))),
        }
    }

    async fn get_table(&self, db: &str, name: &str) -> Result<Option<Table>, CatalogError> {
        self.count();
        match self.client.get_table().database_name(db).name(name).send().await {
            Ok(out) => Ok(out.table),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => Ok(None),
            Err(e) => Err(explain(e, "glue:GetTable", Some(format!("{db}.{name}")))),
        }
    }

    /// The name of a table's first partition key (None: no such table).
    pub async fn partition_key(&self, db: &str, name: &str) -> Result<Option<String>, CatalogError> {
        Ok(self.get_table(db, name).await?.map(|t| t.partition_keys().first().map(|k| k.name().to_owned()).unwrap_or_default()))
    }

    /// Whether the table exists.
    pub async fn table_exists(&self, db: &str, name: &str) -> Result<bool, CatalogError> {
        Ok(self.get_table(db, name).await?.is_some())
    }

    /// Create the table, or update it if its definition differs from `wanted` (partitions kept).
    pub async fn ensure_table(&self, db: &str, wanted: TableInput) -> Result<TableChange, CatalogError> {
        let on = Some(format!("{db}.{}", wanted.name()));
        let Some(existing) = self.get_table(db, wanted.name()).await? else {
            self.count();
            return match self.client.create_table().database_name(db).table_input(wanted).send().await {
                Ok(_) => Ok(TableChange::Created),
                Err(e) => Err(explain(e, "glue:CreateTable", on)),
            };
        };
        let have =
            essentials(existing.table_type(), existing.parameters(), existing.storage_descriptor(), existing.partition_keys(), &wanted);
        let want = essentials(wanted.table_type(), wanted.parameters(), wanted.storage_descriptor(), wanted.partition_keys(), &wanted);
        if have == want {
            return Ok(TableChange::Unchanged);
        }
        self.count();
        match self.client.update_table().database_name(db).table_input(rebuilt(&existing, &wanted)).send().await {
            Ok(_) => Ok(TableChange::Updated),
            Err(e) => Err(explain(e, "glue:UpdateTable", on)),
        }
    }

    /// The values (dates or months) registered as partitions of `table` (all pages).
    pub async fn partition_values(&self, db: &str, table: &str) -> Result<BTreeSet<String>, CatalogError> {
        let mut out = BTreeSet::new();
        let mut token: Option<String> = None;
        loop {
            self.count();
            let page = self
                .client
                .get_partitions()
                .database_name(db)
                .table_name(table)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| explain(e, "glue:GetPartitions", Some(format!("{db}.{table}"))))?;
            out.extend(page.partitions().iter().filter_map(|p| p.values().first().cloned()));
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Register `values` (dates or months) as partitions of `table` (chunks of 100); returns how
    /// many were new. One already registered is success; any other per-partition error fails
    /// with its message.
    pub async fn add_partitions(&self, opts: &CatalogOptions, table: PartitionedTable, values: &[String]) -> Result<usize, CatalogError> {
        let name = table.name;
        let input = partitioned_table(opts, table, None);
        let sd = input.storage_descriptor().cloned().expect("partitioned_table has a storage descriptor");
        let key = table.key.name();
        let mut added = 0;
        for chunk in values.chunks(CREATE_CHUNK) {
            let inputs: Vec<PartitionInput> = chunk
                .iter()
                .map(|value| {
                    let mut psd = sd.clone();
                    psd.location = Some(format!("{}{key}={value}/", opts.location(table.location)));
                    PartitionInput::builder().values(value).storage_descriptor(psd).build()
                })
                .collect();
            self.count();
            let out = self
                .client
                .batch_create_partition()
                .database_name(&opts.database)
                .table_name(name)
                .set_partition_input_list(Some(inputs))
                .send()
                .await
                .map_err(|e| explain(e, "glue:BatchCreatePartition", Some(format!("{}.{name}", opts.database))))?;
            let mut existing = 0;
            for err in out.errors() {
                let code = err.error_detail().and_then(|d| d.error_code()).unwrap_or("");
                if code.contains("AlreadyExists") {
                    existing += 1;
                    continue;
                }
                return Err(CatalogError::Glue {
                    action: "glue:BatchCreatePartition",
                    on: Some(format!("{}.{name} partition {key}={}", opts.database, err.partition_values().join(","))),
                    message: format!("{code}: {}", err.error_detail().and_then(|d| d.error_message()).unwrap_or("no message")),
                    permanent: code.contains("AccessDenied"),
                });
            }
            added += chunk.len() - existing;
        }
        Ok(added)
    }

    /// Deregister partitions of `table` (dates or months) the lake no longer has (chunks of 25);
    /// returns how many were registered.
    pub async fn remove_partitions(&self, db: &str, table: &str, values: &[String]) -> Result<usize, CatalogError> {
        let mut removed = 0;
        for chunk in values.chunks(DELETE_CHUNK) {
            let values: Vec<PartitionValueList> =
                chunk.iter().map(|d| PartitionValueList::builder().values(d).build().expect("values are set")).collect();
            self.count();
            let out = self
                .client
                .batch_delete_partition()
                .database_name(db)
                .table_name(table)
                .set_partitions_to_delete(Some(values))
                .send()
                .await
                .map_err(|e| explain(e, "glue:BatchDeletePartition", Some(format!("{db}.{table}"))))?;
            let not_registered = out
                .errors()
                .iter()
                .filter(|e| e.error_detail().and_then(|d| d.error_code()).unwrap_or("").contains("EntityNotFound"))
                .count();
            removed += chunk.len() - not_registered;
            if let Some(err) =
                out.errors().iter().find(|e| !e.error_detail().and_then(|d| d.error_code()).unwrap_or("").contains("EntityNotFound"))
            {
                return Err(CatalogError::Glue {
                    action: "glue:BatchDeletePartition",
                    on: Some(format!("{db}.{table} partition {}", err.partition_values().join(","))),
                    message: err.error_detail().and_then(|d| d.error_message()).unwrap_or("no message").to_owned(),
                    permanent: false,
                });
            }
        }
        Ok(removed)
    }
}

/// One line for a failed Glue call: unreachable, denied (with the action to grant), or Glue's message.
fn explain<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    err: SdkError<E>,
    action: &'static str,
    on: Option<String>,
) -> CatalogError {
    let (message, permanent) = crate::aws::describe_failure(&err, "Glue", action);
    CatalogError::Glue { action, on, message, permanent }
}
