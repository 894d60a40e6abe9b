//! The DuckDB session of one `process` run: parse raw CSV, gather the window inputs, compute the
//! indicators, and write the partitions, carry state and quarantine files to a local stage
//! directory (the caller publishes them to the lake).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use duckdb::Connection;

use crate::indicators;

const VALIDATE_SQL: &str = include_str!("validate.sql");
/// Parquet key-value metadata naming the run that wrote a file (see manifest.rs).
pub const RUN_ID_KEY: &str = "tickerlake_run_id";
/// A complete raw timestamp (RE2, whole string): `YYYY-MM-DD HH:MM:SS` or with a `T`, an optional
/// fraction of 1–9 digits, an optional offset `Z`, `±HH`, `±HHMM` or `±HH:MM` (hours 00–23).
/// The calendar (month, day, leap years) is left to DuckDB's cast, which this guards: on its
/// own the cast reads `2025-01-03 18:01:` as 18:01:00 and accepts 24:00:00 or an offset of +99:99.
pub const TIMESTAMP_PATTERN: &str =
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?";

/// Per raw file counts and date range, as parsed by [`Engine::load_raw`].
#[derive(Debug, Clone, Default)]
pub struct FileStats {
    pub rows: u64,
    pub kept: u64,
    pub quarantined: u64,
    pub first_date: Option<String>,
    pub last_date: Option<String>,
}

/// Counts of one load, for the run summary.
#[derive(Debug, Clone, Default)]
pub struct LoadStats {
    pub per_file: BTreeMap<String, FileStats>,
    pub dropped: BTreeMap<String, u64>,
    pub quarantined: BTreeMap<String, u64>,
}

/// Files the stage directory holds after [`Engine::write_outputs`], by date / raw key.
#[derive(Debug, Default)]
pub struct StagedOutputs {
    pub partitions: BTreeMap<String, (PathBuf, u64)>,
    pub carries: BTreeMap<String, PathBuf>,
    pub quarantine: BTreeMap<String, PathBuf>,
}

pub struct Engine {
    conn: Connection,
    stage: PathBuf,
    loads: usize,
}

/// A SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn list_lit<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let parts: Vec<String> = items.into_iter().map(lit).collect();
    format!("[{}]", parts.join(", "))
}

impl Engine {
    /// A session spilling to `stage` beyond `memory_limit` (DuckDB syntax, e.g. "256MB").
    pub fn new(stage: &Path, memory_limit: &str) -> Result<Self> {
        let conn = Connection::open_in_memory().context("cannot start DuckDB")?;
        let spill = stage.join("duckdb-spill");
        std::fs::create_dir_all(&spill)?;
        conn.execute_batch(&format!(
            "SET temp_directory = {}; SET preserve_insertion_order = false;",
            lit(&spill.to_string_lossy())
        ))?;
        conn.execute_batch(&format!("SET memory_limit = {}", lit(memory_limit)))
            .with_context(|| format!("--memory-limit {memory_limit:?} is not a size DuckDB accepts; use e.g. 256MB or 2GB"))?;
        Ok(Self { conn, stage: stage.to_path_buf(), loads: 0 })
    }

    /// Parse raw CSV files (local path, lake key) into table `table` (see validate.sql) and count.
    pub fn load_raw(&mut self, table: &str, files: &[(PathBuf, String)]) -> Result<LoadStats> {
        self.loads += 1;
        let keys_table = format!("{table}_keys");
        // Readable files first: their position is DuckDB's file_index in the scan.
        let mut readable = Vec::new();
        let mut bad_headers = Vec::new();
        for (path, key) in files {
            match header_problem(path)? {
                None => readable.push((path.to_string_lossy().into_owned(), key.as_str())),
                Some(first_line) => bad_headers.push((path.to_string_lossy().into_owned(), key.as_str(), first_line)),
            }
        }
        self.conn.execute_batch(&format!("CREATE OR REPLACE TEMP TABLE {keys_table} (file_index INTEGER, path VARCHAR, key VARCHAR)"))?;
        {
            let mut app = self.conn.appender(&keys_table)?;
            let all = readable.iter().map(|(p, k)| (p, *k)).chain(bad_headers.iter().map(|(p, k, _)| (p, *k)));
            for (i, (path, key)) in all.enumerate() {
                app.append_row(duckdb::params![i as i32, path, key])?;
            }
        }
        let rejects = format!("rejects_{}", self.loads);
        let sql = VALIDATE_SQL
            .replace("{files}", &list_lit(readable.iter().map(|(p, _)| p.as_str())))
            .replace("{rejects}", &rejects)
            .replace("{ts_pattern}", &lit(TIMESTAMP_PATTERN))
            .replace("{out}", table);
        let sql = if readable.is_empty() {
            // Nothing for read_csv (it needs a file): the same relations, empty.
            self.conn.execute_batch(&format!(
                "CREATE OR REPLACE TEMP VIEW {table}_scan AS SELECT CAST(NULL AS INTEGER) AS file_index, CAST(NULL AS VARCHAR) AS symbol,
                        CAST(NULL AS VARCHAR) AS price_text, CAST(NULL AS VARCHAR) AS ts_text WHERE false;
                 CREATE OR REPLACE TEMP TABLE {rejects}_errors (scan_id UBIGINT, file_id UBIGINT, line UBIGINT, error_type VARCHAR, csv_line VARCHAR);
                 CREATE OR REPLACE TEMP TABLE {rejects}_scans (scan_id UBIGINT, file_id UBIGINT, file_path VARCHAR);"
            ))?;
            sql[sql.find("\n-- @classify\n").expect("validate.sql has the classify marker")..].to_owned()
        } else {
            sql
        };
        self.conn.execute_batch(&sql).with_context(|| format!("DuckDB could not read the raw files ({} files)", files.len()))?;
        for (i, (_, _, first_line)) in bad_headers.iter().enumerate() {
            self.conn.execute(
                &format!("INSERT INTO {table}_rejects VALUES (?, 1, 'unexpected header (expected symbol,price,timestamp)', ?)"),
                duckdb::params![(readable.len() + i) as i32, first_line],
            )?;
        }

        let mut stats = LoadStats::default();
        let mut stmt = self.conn.prepare(&format!(
            "WITH rows AS (
                 SELECT file_index,
                        count(*) AS n,
                        count(*) FILTER (quarantine_reason IS NULL AND drop_reason IS NULL) AS kept,
                        count(*) FILTER (quarantine_reason IS NOT NULL) AS quarantined,
                        min(CAST(\"timestamp\" AS DATE)) AS first_date,
                        max(CAST(\"timestamp\" AS DATE)) AS last_date
                 FROM {table} GROUP BY file_index),
             rejected AS (SELECT file_index, count(*) AS n FROM {table}_rejects GROUP BY file_index)
             SELECT k.key, coalesce(r.n, 0), coalesce(r.kept, 0), coalesce(r.quarantined, 0),
                    CAST(r.first_date AS VARCHAR), CAST(r.last_date AS VARCHAR), coalesce(x.n, 0)
             FROM {keys_table} k LEFT JOIN rows r USING (file_index) LEFT JOIN rejected x USING (file_index)"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?, r.get::<_, Option<String>>(5)?, r.get::<_, i64>(6)?))
        })?;
        for row in rows {
            let (key, n, kept, quarantined, first, last, rejects) = row?;
            stats.per_file.insert(key, FileStats {
                rows: (n + rejects) as u64,
                kept: kept as u64,
                quarantined: (quarantined + rejects) as u64,
                first_date: first,
                last_date: last,
            });
        }
        stats.dropped = self.count_by(&format!("SELECT drop_reason, count(*) FROM {table} WHERE quarantine_reason IS NULL AND drop_reason IS NOT NULL GROUP BY ALL"))?;
        stats.quarantined = self.count_by(&format!(
            "SELECT reason, count(*) FROM (SELECT quarantine_reason AS reason FROM {table} WHERE quarantine_reason IS NOT NULL
                                           UNION ALL SELECT reason FROM {table}_rejects) GROUP BY ALL"
        ))?;
        Ok(stats)
    }

    fn count_by(&self, sql: &str) -> Result<BTreeMap<String, u64>> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The run id recorded in a Parquet file's metadata, if the file has one.
    pub fn run_id_of(&self, parquet: &Path) -> Result<Option<String>> {
        let sql = format!(
            "SELECT decode(value) FROM parquet_kv_metadata({}) WHERE decode(key) = {}",
            lit(&parquet.to_string_lossy()),
            lit(RUN_ID_KEY)
        );
        match self.conn.query_row(&sql, [], |r| r.get::<_, String>(0)) {
            Ok(v) => Ok(Some(v)),
            Err(duckdb::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read Parquet metadata of {}", parquet.display())),
        }
    }

    /// Assemble `ind_input`: kept rows of the given loaded tables (optionally only some dates),
    /// committed partitions' rows, and the carry-in rows as context.
    pub fn build_input(&self, loaded: &[(&str, Option<&[String]>)], partitions: &[PathBuf], carry: Option<&Path>) -> Result<()> {
        let mut parts = vec!["SELECT CAST(NULL AS VARCHAR) AS symbol, CAST(NULL AS DOUBLE) AS price, CAST(NULL AS TIMESTAMP) AS \"timestamp\", false AS is_carry WHERE false".to_owned()];
        for (table, dates) in loaded {
            let date_filter = match dates {
                Some(d) => format!(" AND CAST(\"timestamp\" AS DATE) IN ({})", d.iter().map(|s| format!("DATE {}", lit(s))).collect::<Vec<_>>().join(", ")),
                None => String::new(),
            };
            parts.push(format!("SELECT symbol, price, \"timestamp\", false FROM {table} WHERE quarantine_reason IS NULL AND drop_reason IS NULL{date_filter}"));
        }
        if !partitions.is_empty() {
            let paths: Vec<String> = partitions.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            parts.push(format!("SELECT symbol, price, \"timestamp\", false FROM read_parquet({})", list_lit(paths.iter().map(String::as_str))));
        }
        if let Some(c) = carry {
            parts.push(format!("SELECT symbol, price, \"timestamp\", true FROM read_parquet({})", lit(&c.to_string_lossy())));
        }
        self.conn.execute_batch(&format!("CREATE OR REPLACE TEMP TABLE ind_input AS {}", parts.join(" UNION ALL ")))?;
        Ok(())
    }

    /// Compute indicators and write partitions, carry state and quarantine files to the stage.
    /// `quarantine_from` is the loaded table of this run's new raw files.
    pub fn write_outputs(&self, run_id: &str, quarantine_from: &str) -> Result<StagedOutputs> {
        indicators::compute(&self.conn).context("computing indicators")?;
        let out = self.stage.join("out");
        std::fs::create_dir_all(&out)?;
        let kv = format!("KV_METADATA {{{RUN_ID_KEY}: {}}}", lit(run_id));
        let processed_dir = out.join("processed");
        let carry_dir = out.join("carry");
        self.conn.execute_batch(&format!(
            "COPY (SELECT symbol, price, \"timestamp\", moving_avg, previous_price, price_change_pct, date
                   FROM ind_output WHERE NOT is_carry ORDER BY date, symbol, \"timestamp\", price)
             TO {} (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd, {kv});
             COPY (SELECT d.date, o.symbol, o.price, o.\"timestamp\"
                   FROM ind_output o JOIN (SELECT DISTINCT date FROM ind_output WHERE NOT is_carry) d
                     ON o.date <= d.date AND (o.carry_until IS NULL OR o.carry_until > d.date)
                   ORDER BY d.date, o.symbol, o.\"timestamp\", o.price)
             TO {} (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd, {kv});",
            lit(&processed_dir.to_string_lossy()),
            lit(&carry_dir.to_string_lossy()),
        ))?;
        let mut staged = StagedOutputs::default();
        let counts = self.count_by("SELECT CAST(date AS VARCHAR), count(*) FROM ind_output WHERE NOT is_carry GROUP BY ALL")?;
        for (date, path) in partition_files(&processed_dir)? {
            let rows = counts.get(&date).copied().unwrap_or(0);
            staged.partitions.insert(date, (path, rows));
        }
        staged.carries = partition_files(&carry_dir)?;
        staged.quarantine = self.write_quarantine(quarantine_from, &out.join("quarantine"))?;
        Ok(staged)
    }

    /// One CSV per raw file with rejected rows: source_file, line (when known), reason, record.
    fn write_quarantine(&self, table: &str, dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
        let mut files = BTreeMap::new();
        let sources = {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT k.file_index, k.key FROM {table}_keys k
                 WHERE EXISTS (SELECT 1 FROM {table} t WHERE t.file_index = k.file_index AND t.quarantine_reason IS NOT NULL)
                    OR EXISTS (SELECT 1 FROM {table}_rejects r WHERE r.file_index = k.file_index)
                 ORDER BY k.key"
            ))?;
            stmt.query_map([], |r| Ok((r.get::<_, i32>(0)?, r.get::<_, String>(1)?)))?.collect::<Result<Vec<_>, _>>()?
        };
        std::fs::create_dir_all(dir)?;
        for (index, key) in &sources {
            let dest = dir.join(format!("{index}.csv"));
            self.conn.execute_batch(&format!(
                "COPY (SELECT {key} AS source_file, line, reason, record FROM (
                         SELECT line, reason, record FROM {table}_rejects WHERE file_index = {index}
                         UNION ALL
                         SELECT NULL, quarantine_reason,
                                concat_ws(',', coalesce(symbol, ''), coalesce(price_text, ''), coalesce(ts_text, ''))
                         FROM {table} WHERE file_index = {index} AND quarantine_reason IS NOT NULL)
                       ORDER BY line NULLS LAST, reason, record)
                 TO {} (FORMAT csv, HEADER true)",
                lit(&dest.to_string_lossy()),
                key = lit(key),
            ))?;
            files.insert(key.clone(), dest);
        }
        Ok(files)
    }
}

/// The first line of a raw file if it is not the expected header (None when it is, or the file is empty).
fn header_problem(path: &Path) -> Result<Option<String>> {
    // Read as bytes: the file may not be UTF-8 (DuckDB then quarantines its bad lines).
    use std::io::{BufRead, Read};
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut first = Vec::new();
    std::io::BufReader::new(file).take(4096).read_until(b'\n', &mut first)?;
    let first = String::from_utf8_lossy(&first);
    let norm = first.trim_start_matches('\u{feff}').trim_end_matches(['\r', '\n']).replace('"', "").to_ascii_lowercase();
    Ok((!norm.is_empty() && norm != "symbol,price,timestamp").then(|| first.trim_end_matches(['\r', '\n']).to_owned()))
}

/// `dir/date=YYYY-MM-DD/<file>.parquet` as written by COPY … PARTITION_BY (date), by date.
fn partition_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(out) };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(date) = name.strip_prefix("date=") else { continue };
        let mut files: Vec<PathBuf> = std::fs::read_dir(entry.path())?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        // One file per partition is what PARTITION_BY writes for our sizes; more would mean rows
        // split across files, which the single-file-per-partition layout cannot publish atomically.
        anyhow::ensure!(files.len() == 1, "DuckDB wrote {} files for partition {date}; expected exactly one", files.len());
        out.insert(date.to_owned(), files.remove(0));
    }
    Ok(out)
}
