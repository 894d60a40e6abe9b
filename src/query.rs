//! `query`: SQL over the lake in DuckDB, with views named like the original Athena tables:
//! `processed` (partitioned Parquet, `date` from the partition path) and `raw` (the CSV snapshots,
//! typed like the Glue `raw` table), so the original project's queries run as written; and
//! `quarantine`, the rows `process` rejected (source_file, line, reason, record). The same SQL
//! runs on Athena through [`athena`] (`tickerlake query --engine athena`).
//! `processed` and `quarantine` are exactly the committed state: the files the manifest names,
//! never a file a run is still writing or left behind.

use std::io::Write;
use std::path::PathBuf;

use duckdb::Connection;
use duckdb::arrow::array::RecordBatch;
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};

pub mod athena;

/// A failed query (local engine).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// No SQL was given.
    #[error("the query is empty; pass SQL such as \"SELECT * FROM processed LIMIT 10\"")]
    Empty,
    /// The lake could not be read.
    #[error("{0}")]
    Lake(#[from] crate::lake::LakeError),
    /// The committed state could not be read (the manifest, or a file it names is gone).
    #[error("{0}")]
    Committed(#[from] crate::lake::CommitError),
    /// DuckDB refused or failed the SQL (its message keeps the caret line).
    #[error("DuckDB {doing} the query {sql:?}")]
    Sql {
        /// "rejected" (parse/bind) or "failed running" (execution).
        doing: &'static str,
        /// The SQL.
        sql: String,
        /// DuckDB's error.
        #[source]
        source: Box<duckdb::Error>,
    },
    /// Setting up the session's views failed.
    #[error("cannot define the lake's views")]
    Views(#[source] Box<duckdb::Error>),
    /// The result could not be formatted or written.
    #[error("cannot print the result: {0}")]
    Output(String),
    /// A temporary download directory could not be made.
    #[error("cannot create a download directory: {0}")]
    Io(#[from] std::io::Error),
}

impl From<duckdb::Error> for QueryError {
    fn from(e: duckdb::Error) -> Self {
        Self::Views(Box::new(e))
    }
}

impl QueryError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Lake(e) => e.is_permanent(),
            Self::Committed(e) => e.is_permanent(),
            _ => false,
        }
    }
}

macro_rules! output_err {
    ($($t:ty),*) => {$(
        impl From<$t> for QueryError {
            fn from(e: $t) -> Self {
                Self::Output(e.to_string())
            }
        }
    )*};
}
output_err!(duckdb::arrow::error::ArrowError, csv::Error, serde_json::Error);

type Result<T, E = QueryError> = std::result::Result<T, E>;

use crate::lake::manifest::{CommittedPartition, Manifest};
use crate::lake::{self, DateFile, Lake, LakeError, QUARANTINE_PREFIX, RAW_PREFIX};
use crate::sql::lit;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned table.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON array of objects (numbers stay numbers, NULL is null).
    Json,
}

/// Which engine answers `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineKind {
    /// Embedded DuckDB over the lake's committed files (no AWS needed).
    #[default]
    Local,
    /// Athena over the Glue catalog (`tickerlake catalog` first).
    Athena,
}

/// A DuckDB connection with the lake's views defined. Keeps downloaded copies alive (S3 lakes).
pub struct LakeSession {
    /// The connection, with the views defined.
    pub conn: Connection,
    _downloads: tempfile::TempDir,
}

/// Whether `sql` mentions the identifier `name` (case-insensitive, whole word).
fn mentions(sql: &str, name: &str) -> bool {
    sql.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|w| w.eq_ignore_ascii_case(name))
}

/// Keys under `prefix` with the extension, if the SQL uses the view (remote lakes download them).
async fn view_files(lake: &Lake, sql: &str, view: &str, prefix: &str, ext: &str) -> Result<Vec<String>> {
    if !mentions(sql, view) {
        return Ok(Vec::new());
    }
    Ok(lake.list(prefix).await?.into_iter().map(|o| o.key).filter(|k| k.ends_with(ext)).collect())
}

/// Open DuckDB over the lake for `sql`: local files in place; on S3, the objects of the views the
/// SQL mentions are downloaded to a temp dir first (no httpfs: DuckDB extensions are not fetched).
pub async fn open_session(lake: &Lake, sql: &str) -> Result<LakeSession> {
    let rollups = ROLLUP_VIEWS.iter().any(|(view, _)| reads(sql, view));
    let committed = match mentions(sql, "processed") || mentions(sql, "quarantine") || rollups {
        true => Some(Manifest::load_all(lake).await?),
        false => None,
    };
    let partitions: Vec<CommittedPartition> = committed.as_ref().map(Manifest::committed_partitions).unwrap_or_default();
    let files_of = |view: &str, kind: DateFile| -> Vec<(String, String)> {
        match reads(sql, view) {
            true => partitions.iter().filter_map(|p| p.file(kind).map(|k| (p.date.clone(), k))).collect(),
            false => Vec::new(),
        }
    };
    let processed = files_of("processed", DateFile::Processed);
    let raw = view_files(lake, sql, "raw", RAW_PREFIX, ".csv").await?;
    // Quarantine files of committed raw files only (a crashed run may have left others).
    let quarantine: Vec<String> = match (&committed, mentions(sql, "quarantine")) {
        (Some(m), true) => {
            let keys = m.quarantine_keys();
            view_files(lake, sql, "quarantine", QUARANTINE_PREFIX, ".csv").await?.into_iter().filter(|k| keys.contains(k)).collect()
        }
        _ => Vec::new(),
    };
    // Where remote objects are downloaded (a local lake is read in place and leaves it empty).
    let tmp = tempfile::Builder::new().prefix("tickerlake-query-").tempdir()?;
    let sql_paths =
        |files: Vec<(PathBuf, String)>| -> Vec<String> { files.iter().map(|(p, _)| p.to_string_lossy().into_owned()).collect() };
    let processed_paths = sql_paths(committed_files(lake, &partitions, &processed, tmp.path()).await?);
    let mut rollup_paths = Vec::new();
    for (view, kind) in ROLLUP_VIEWS {
        rollup_paths.push(sql_paths(committed_files(lake, &partitions, &files_of(view, kind), tmp.path()).await?));
    }
    let raw_paths = sql_paths(lake::materialize(lake, &raw, tmp.path(), "download").await?);
    let quarantine_paths = sql_paths(lake::materialize(lake, &quarantine, tmp.path(), "download").await?);
    let conn = Connection::open_in_memory()?;
    if processed_paths.is_empty() && mentions(sql, "processed") {
        tracing::warn!("{} has no processed partitions yet; run `tickerlake process` first", lake.describe());
    }
    define_views(&conn, &processed_paths, &raw_paths, &quarantine_paths)?;
    define_rollup_views(&conn, &rollup_paths[0], &rollup_paths[1])?;
    Ok(LakeSession { conn, _downloads: tmp })
}

/// The rollup views and the files they read.
const ROLLUP_VIEWS: [(&str, DateFile); 2] = [("daily", DateFile::Daily), ("snapshots", DateFile::Snapshots)];

/// Whether `sql` reads the files of `view`: by its name, or through a view over `daily`.
fn reads(sql: &str, view: &str) -> bool {
    mentions(sql, view) || (view == "daily" && crate::indicators::VIEWS_OVER_DAILY.iter().any(|(name, _)| mentions(sql, name)))
}

/// Local paths of committed files (`(date, key)`, downloaded under `dir` from a remote lake). A
/// file the manifest names that is gone is an error naming its date and the repair: a query
/// never answers without a committed partition's rows.
async fn committed_files(
    lake: &Lake,
    partitions: &[CommittedPartition],
    files: &[(String, String)],
    dir: &std::path::Path,
) -> Result<Vec<(PathBuf, String)>> {
    let keys: Vec<String> = files.iter().map(|(_, k)| k.clone()).collect();
    match lake::materialize(lake, &keys, dir, "download").await {
        Err(LakeError::NotFound { key }) => {
            match files.iter().find(|(_, k)| *k == key).and_then(|(d, _)| partitions.iter().find(|p| p.date == *d)) {
                Some(p) => Err(p.missing().into()),
                None => Err(LakeError::NotFound { key }.into()),
            }
        }
        other => Ok(other?),
    }
}

/// A view's files (local paths) as DuckDB's file list: one SQL string cast to a list of
/// `{'filename': …}` structs. DuckDB takes such entries as they are, where it would check at every
/// bind of the view that each plain path exists (in `serve`'s contained database also resolving
/// it with `realpath`, a `readlink` per path component) before its `date` filter prunes all but a
/// few; and one string is parsed faster than a list expression of as many elements is copied and
/// bound. Measured with DuckDB 2.0 on a year's 366 partitions, a one-symbol query over two of
/// them: 5.5 ms of CPU against 11 ms. Files are still checked (and contained) when opened.
fn file_list(paths: &[String]) -> String {
    // In the struct text, a value is single-quoted with `\` escaping quotes and backslashes.
    let quoted = |p: &String| format!("'{}'", p.replace('\\', "\\\\").replace('\'', "\\'"));
    let text = format!("[{}]", paths.iter().map(|p| format!("{{'filename': {}}}", quoted(p))).collect::<Vec<_>>().join(", "));
    format!("CAST({} AS STRUCT(filename VARCHAR)[])", lit(&text))
}

/// Define the `processed`, `raw` and `quarantine` views over these files (local paths; none: an
/// empty view with the right columns). `serve` builds its snapshots with it.
pub fn define_views(
    conn: &Connection,
    processed_paths: &[String],
    raw_paths: &[String],
    quarantine_paths: &[String],
) -> duckdb::Result<()> {
    if processed_paths.is_empty() {
        let columns: Vec<String> =
            crate::indicators::PROCESSED_COLUMNS.iter().map(|c| format!("CAST(NULL AS {}) AS \"{}\"", c.duckdb, c.name)).collect();
        conn.execute_batch(&format!("CREATE VIEW processed AS SELECT {}, CAST(NULL AS DATE) AS date WHERE false", columns.join(", ")))?;
    } else {
        conn.execute_batch(&format!(
            "CREATE VIEW processed AS SELECT * FROM read_parquet({}, hive_partitioning = true, hive_types = {{'date': DATE}})",
            file_list(processed_paths)
        ))?;
    }
    if raw_paths.is_empty() {
        conn.execute_batch("CREATE VIEW raw AS SELECT CAST(NULL AS VARCHAR) AS symbol, CAST(NULL AS DOUBLE) AS price, CAST(NULL AS VARCHAR) AS \"timestamp\" WHERE false")?;
    } else {
        // Typed as the Glue `raw` table (catalog::glue::raw_table): `timestamp` stays the raw text,
        // since Athena's CSV SerDes cannot parse one with an offset; the same SQL then answers alike.
        conn.execute_batch(&format!(
            "CREATE VIEW raw AS SELECT symbol, TRY_CAST(price AS DOUBLE) AS price, \"timestamp\"
             FROM read_csv({}, columns = {{'symbol': 'VARCHAR', 'price': 'VARCHAR', 'timestamp': 'VARCHAR'}},
                           header = true, auto_detect = false, ignore_errors = true)",
            file_list(raw_paths)
        ))?;
    }
    if quarantine_paths.is_empty() {
        conn.execute_batch(
            "CREATE VIEW quarantine AS SELECT CAST(NULL AS VARCHAR) AS source_file, CAST(NULL AS BIGINT) AS line,
               CAST(NULL AS VARCHAR) AS reason, CAST(NULL AS VARCHAR) AS record WHERE false",
        )?;
    } else {
        // As `process` writes them (records may hold quotes and line breaks); line is empty in
        // files from versions that did not number every row.
        conn.execute_batch(&format!(
            "CREATE VIEW quarantine AS SELECT source_file, line, reason, record
             FROM read_csv({}, columns = {{'source_file': 'VARCHAR', 'line': 'BIGINT', 'reason': 'VARCHAR', 'record': 'VARCHAR'}},
                           header = true, auto_detect = false, delim = ',', quote = '\"', escape = '\"')",
            file_list(quarantine_paths)
        ))?;
    }
    Ok(())
}

/// Define the rollup views `daily` (per symbol and date) and `snapshots` (per snapshot) over
/// these files (local paths; none: an empty view with the right columns),
/// and over `daily`: `monthly` (per symbol and month) and `month_to_date` (per symbol and day, the
/// month's running sums). `serve` builds its snapshots with it too.
pub fn define_rollup_views(conn: &Connection, daily_paths: &[String], snapshots_paths: &[String]) -> duckdb::Result<()> {
    for (view, columns, paths) in [
        ("daily", &crate::indicators::DAILY_COLUMNS[..], daily_paths),
        ("snapshots", &crate::indicators::SNAPSHOTS_COLUMNS[..], snapshots_paths),
    ] {
        let sql = match paths.is_empty() {
            true => {
                let typed: Vec<String> = columns.iter().map(|c| format!("CAST(NULL AS {}) AS \"{}\"", c.duckdb, c.name)).collect();
                format!("CREATE VIEW {view} AS SELECT {}, CAST(NULL AS DATE) AS date WHERE false", typed.join(", "))
            }
            false => format!(
                "CREATE VIEW {view} AS SELECT * FROM read_parquet({}, hive_partitioning = true, hive_types = {{'date': DATE}})",
                file_list(paths)
            ),
        };
        conn.execute_batch(&sql)?;
    }
    for (view, body) in crate::indicators::VIEWS_OVER_DAILY {
        conn.execute_batch(&format!("CREATE VIEW {view} AS {body}"))?;
    }
    Ok(())
}

/// Run `sql` and return the Arrow batches.
pub fn run_sql(session: &LakeSession, sql: &str) -> Result<Vec<RecordBatch>> {
    let mut stmt =
        session.conn.prepare(sql).map_err(|source| QueryError::Sql { doing: "rejected", sql: sql.to_owned(), source: Box::new(source) })?;
    Ok(stmt
        .query_arrow([])
        .map_err(|source| QueryError::Sql { doing: "failed running", sql: sql.to_owned(), source: Box::new(source) })?
        .collect())
}

/// Timestamps as the raw files, Athena and the original project print them, in every format:
/// `2025-05-08 03:00:16.600` (fraction only when there is one), `+00:00` when zoned.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f";
const TIMESTAMP_TZ_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f%:z";

fn format_options() -> FormatOptions<'static> {
    FormatOptions::default()
        .with_null("")
        .with_datetime_format(Some(TIMESTAMP_FORMAT))
        .with_timestamp_format(Some(TIMESTAMP_FORMAT))
        .with_timestamp_tz_format(Some(TIMESTAMP_TZ_FORMAT))
}

/// Zoned timestamps with their zone given as an offset. DuckDB labels TIMESTAMPTZ columns with a
/// zone *name* ("UTC"), which Arrow's formatter (built without chrono-tz) cannot print; the values
/// are instants, so relabelling them "+00:00" only changes how they print: in UTC, like the lake.
fn utc_offsets(batch: &RecordBatch) -> Result<RecordBatch> {
    use duckdb::arrow::datatypes::{DataType, Field, Schema};
    let zoned = |t: &DataType| matches!(t, DataType::Timestamp(_, Some(tz)) if tz.as_ref() != "+00:00");
    if !batch.schema().fields().iter().any(|f| zoned(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(unit, Some(_)) if zoned(field.data_type()) => {
                let utc = DataType::Timestamp(*unit, Some("+00:00".into()));
                columns.push(duckdb::arrow::compute::cast(column, &utc)?);
                fields.push(Field::new(field.name(), utc, field.is_nullable()));
            }
            _ => {
                columns.push(column.clone());
                fields.push(field.as_ref().clone());
            }
        }
    }
    Ok(RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)?)
}

/// Write batches in the chosen format.
pub fn render(batches: &[RecordBatch], format: OutputFormat, out: &mut dyn Write) -> Result<()> {
    let batches = &batches.iter().map(utc_offsets).collect::<Result<Vec<_>>>()?;
    let opts = format_options();
    match format {
        OutputFormat::Table => {
            if batches.is_empty() {
                writeln!(out, "(no rows)")?;
            } else {
                writeln!(out, "{}", duckdb::arrow::util::pretty::pretty_format_batches_with_options(batches, &opts)?)?;
            }
        }
        OutputFormat::Csv => {
            let Some(first) = batches.first() else { return Ok(()) };
            let mut w = csv::Writer::from_writer(out);
            w.write_record(first.schema().fields().iter().map(|f| f.name().as_str()))?;
            for batch in batches {
                let fmts = batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts)).collect::<Result<Vec<_>, _>>()?;
                for row in 0..batch.num_rows() {
                    w.write_record(fmts.iter().map(|f| f.value(row).to_string()))?;
                }
            }
            w.flush()?;
        }
        OutputFormat::Json => {
            // One JSON array of objects; numbers stay numbers, NULL is null.
            let mut rows = Vec::new();
            for batch in batches {
                let schema = batch.schema();
                let fmts = batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts)).collect::<Result<Vec<_>, _>>()?;
                for row in 0..batch.num_rows() {
                    let mut obj = serde_json::Map::new();
                    for (i, field) in schema.fields().iter().enumerate() {
                        let col = batch.column(i);
                        let value = if col.is_null(row) {
                            serde_json::Value::Null
                        } else if field.data_type().is_numeric() {
                            let text = fmts[i].value(row).to_string();
                            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                        } else if *field.data_type() == duckdb::arrow::datatypes::DataType::Boolean {
                            serde_json::Value::Bool(fmts[i].value(row).to_string() == "true")
                        } else {
                            serde_json::Value::String(fmts[i].value(row).to_string())
                        };
                        obj.insert(field.name().clone(), value);
                    }
                    rows.push(serde_json::Value::Object(obj));
                }
            }
            serde_json::to_writer_pretty(&mut *out, &rows)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// The `query` command: open, run, print.
pub async fn query(lake: &Lake, sql: &str, format: OutputFormat, out: &mut dyn Write) -> Result<()> {
    if sql.trim().is_empty() {
        return Err(QueryError::Empty);
    }
    let session = open_session(lake, sql).await?;
    let batches = run_sql(&session, sql)?;
    render(&batches, format, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_lists_keep_every_path_as_it_is() {
        let paths: Vec<String> = [
            "/lake/processed/date=2025-01-01/part-00000.parquet",
            "/we ird, 'name' {x}: [y] \\z.parquet",
            "/a/b\"c/d.parquet",
            " /leading and trailing space ",
        ]
        .map(str::to_owned)
        .to_vec();
        let conn = Connection::open_in_memory().unwrap();
        let back: Vec<String> = conn
            .prepare(&format!("SELECT unnest({}).filename", file_list(&paths)))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<duckdb::Result<_>>()
            .unwrap();
        assert_eq!(back, paths);
    }
}
