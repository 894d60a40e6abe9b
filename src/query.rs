//! `query`: SQL over the lake in DuckDB, with views named like the original Athena tables:
//! `processed` (partitioned Parquet, `date` from the partition path) and `raw` (the CSV snapshots,
//! typed like a Glue crawler would type them), so the original project's queries run as written;
//! and `quarantine`, the rows `process` rejected (source_file, line, reason, record).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use duckdb::Connection;
use duckdb::arrow::array::RecordBatch;
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::lake::{self, Lake, PROCESSED_PREFIX, QUARANTINE_PREFIX, RAW_PREFIX};
use crate::process::engine::{TIMESTAMP_PATTERN, lit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Csv,
    Json,
}

/// A DuckDB connection with the lake's views defined. Keeps downloaded copies alive (S3 lakes).
pub struct LakeSession {
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
    let processed = view_files(lake, sql, "processed", PROCESSED_PREFIX, ".parquet").await?;
    let raw = view_files(lake, sql, "raw", RAW_PREFIX, ".csv").await?;
    let quarantine = view_files(lake, sql, "quarantine", QUARANTINE_PREFIX, ".csv").await?;
    // Where remote objects are downloaded (a local lake is read in place and leaves it empty).
    let tmp = tempfile::Builder::new().prefix("tickerlake-query-").tempdir()?;
    let sql_paths = |files: Vec<(PathBuf, String)>| -> Vec<String> { files.iter().map(|(p, _)| lit(&p.to_string_lossy())).collect() };
    let processed_paths = sql_paths(lake::materialize(lake, &processed, tmp.path(), "download").await?);
    let raw_paths = sql_paths(lake::materialize(lake, &raw, tmp.path(), "download").await?);
    let quarantine_paths = sql_paths(lake::materialize(lake, &quarantine, tmp.path(), "download").await?);
    let conn = Connection::open_in_memory()?;
    if processed_paths.is_empty() {
        if mentions(sql, "processed") {
            tracing::warn!("{} has no processed partitions yet; run `tickerlake process` first", lake.describe());
        }
        conn.execute_batch(
            "CREATE VIEW processed AS SELECT CAST(NULL AS VARCHAR) AS symbol, CAST(NULL AS DOUBLE) AS price,
               CAST(NULL AS TIMESTAMP) AS \"timestamp\", CAST(NULL AS DOUBLE) AS moving_avg, CAST(NULL AS DOUBLE) AS previous_price,
               CAST(NULL AS DOUBLE) AS price_change_pct, CAST(NULL AS DATE) AS date WHERE false",
        )?;
    } else {
        conn.execute_batch(&format!(
            "CREATE VIEW processed AS SELECT * FROM read_parquet([{}], hive_partitioning = true, hive_types = {{'date': DATE}})",
            processed_paths.join(", ")
        ))?;
    }
    if raw_paths.is_empty() {
        conn.execute_batch("CREATE VIEW raw AS SELECT CAST(NULL AS VARCHAR) AS symbol, CAST(NULL AS DOUBLE) AS price, CAST(NULL AS TIMESTAMP) AS \"timestamp\" WHERE false")?;
    } else {
        // Timestamps as `process` reads them: complete ones only (see TIMESTAMP_PATTERN).
        conn.execute_batch(&format!(
            "CREATE VIEW raw AS SELECT symbol, TRY_CAST(price AS DOUBLE) AS price,
                    CASE WHEN regexp_full_match(\"timestamp\", {})
                         THEN TRY_CAST(TRY_CAST(\"timestamp\" AS TIMESTAMPTZ) AS TIMESTAMP) END AS \"timestamp\"
             FROM read_csv([{}], columns = {{'symbol': 'VARCHAR', 'price': 'VARCHAR', 'timestamp': 'VARCHAR'}},
                           header = true, auto_detect = false, ignore_errors = true)",
            lit(TIMESTAMP_PATTERN),
            raw_paths.join(", ")
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
             FROM read_csv([{}], columns = {{'source_file': 'VARCHAR', 'line': 'BIGINT', 'reason': 'VARCHAR', 'record': 'VARCHAR'}},
                           header = true, auto_detect = false, delim = ',', quote = '\"', escape = '\"')",
            quarantine_paths.join(", ")
        ))?;
    }
    Ok(LakeSession { conn, _downloads: tmp })
}

/// Run `sql` and return the Arrow batches.
pub fn run_sql(session: &LakeSession, sql: &str) -> Result<Vec<RecordBatch>> {
    let mut stmt = session.conn.prepare(sql).with_context(|| format!("DuckDB rejected the query {sql:?}"))?;
    Ok(stmt.query_arrow([]).with_context(|| format!("the query {sql:?} failed"))?.collect())
}

/// Write batches in the chosen format.
pub fn render(batches: &[RecordBatch], format: OutputFormat, out: &mut dyn Write) -> Result<()> {
    match format {
        OutputFormat::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) && batches.first().is_none() {
                writeln!(out, "(no rows)")?;
            } else {
                writeln!(out, "{}", duckdb::arrow::util::pretty::pretty_format_batches(batches)?)?;
            }
        }
        OutputFormat::Csv => {
            let Some(first) = batches.first() else { return Ok(()) };
            let mut w = csv::Writer::from_writer(out);
            w.write_record(first.schema().fields().iter().map(|f| f.name().as_str()))?;
            let opts = FormatOptions::default().with_null("");
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
            let opts = FormatOptions::default();
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
        bail!("the query is empty; pass SQL such as \"SELECT * FROM processed LIMIT 10\"");
    }
    let session = open_session(lake, sql).await?;
    let batches = run_sql(&session, sql)?;
    render(&batches, format, out)
}
