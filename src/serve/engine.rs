//! The DuckDB side of `serve`: one read-only, contained database per committed state of the lake
//! (a [`Snapshot`]), and the statement check every query passes before it runs, which binds the
//! statement that then runs ([`super::bound`]).
//!
//! Containment is DuckDB's own: a snapshot's database is built (views over exactly the committed
//! partition files, the raw and quarantine files, PostgreSQL-compatibility macros), then
//! `enable_external_access = false` with `allowed_paths`/`allowed_directories` naming only those
//! files, and `lock_configuration = true`, after which no statement can change a setting back. On
//! top of that, [`check`] prepares every statement on its own connection and lets only `SELECT`
//! (and no-op transaction statements) through, judged by DuckDB's parser, not by matching text.
//! A new commit never changes a snapshot: the next one is built beside it and swapped in.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Arc;

use duckdb::Connection;
use duckdb::ffi;

use super::ServeError;
use super::bound::{Bound, Prepared, RawConn, Slot, c_text};
use crate::sql::lit;

/// The PostgreSQL version `serve` presents (Grafana and drivers read it; 16 is current).
pub const PG_VERSION: &str = "16.6";
/// `server_version_num` for [`PG_VERSION`].
pub const PG_VERSION_NUM: &str = "160006";

/// The files one snapshot reads, as local paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFiles {
    /// Committed processed partitions (hive `date=` paths).
    pub processed: Vec<String>,
    /// Their daily rollups (hive `date=` paths).
    pub daily: Vec<String>,
    /// Their per-snapshot rollups (hive `date=` paths).
    pub snapshots: Vec<String>,
    /// Raw CSV snapshots.
    pub raw: Vec<String>,
    /// Quarantine CSVs.
    pub quarantine: Vec<String>,
    /// Directories a client may also read (raw and quarantine directories, a download cache).
    pub allowed_directories: Vec<String>,
    /// Load the rollups and the quarantine into tables when the snapshot is built (a local lake,
    /// whose files are all at hand) rather than read their files at each query (a remote lake
    /// fetches lazily).
    pub load_small_tables: bool,
}

/// How every snapshot's database is configured.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// DuckDB threads per snapshot (None: DuckDB's default, the core count).
    pub threads: Option<usize>,
    /// DuckDB's memory limit per snapshot (`--memory-limit`, DuckDB syntax: 512MB, 2GB).
    pub memory_limit: String,
    /// The directory under which each snapshot spills into a directory of its own.
    pub spill_root: PathBuf,
    /// Log file-system operations (a remote lake's probe database, see `cache`).
    pub log_file_access: bool,
}

/// An owned DuckDB database handle and its spill directory; closed when the last holder drops
/// it, then the directory goes.
struct RawDb {
    db: ffi::duckdb_database,
    _spill: Option<tempfile::TempDir>,
}

// The C handle is thread-safe (DuckDB databases are shared by connections on many threads).
unsafe impl Send for RawDb {}
unsafe impl Sync for RawDb {}

impl Drop for RawDb {
    fn drop(&mut self) {
        unsafe { ffi::duckdb_close(&mut self.db) };
    }
}

/// One committed state of the lake, ready to query.
pub struct Snapshot {
    db: Arc<RawDb>,
    /// Counts snapshots built since start (logs, tests).
    pub generation: u64,
    /// Committed partitions it reads.
    pub partitions: usize,
}

/// A connection to a snapshot; keeps the database alive while it exists.
pub struct SnapshotConn {
    // Field order matters: the connection closes before the database handle is released.
    pub(crate) conn: Connection,
    _db: Arc<RawDb>,
}

impl Snapshot {
    /// Build a contained database over `files` (blocking: call from a blocking thread).
    pub fn build(files: &SnapshotFiles, generation: u64, config: &EngineConfig) -> Result<Self, ServeError> {
        let spill = tempfile::Builder::new()
            .prefix(&format!("spill-{generation}-"))
            .tempdir_in(&config.spill_root)
            .map_err(|e| ServeError::Engine(format!("cannot create a spill directory under {}: {e}", config.spill_root.display())))?;
        let mut raw: ffi::duckdb_database = std::ptr::null_mut();
        let path = CString::new(":memory:").expect("no NUL");
        if unsafe { ffi::duckdb_open(path.as_ptr(), &mut raw) } != ffi::DuckDBSuccess {
            return Err(ServeError::Engine("DuckDB could not open an in-memory database".into()));
        }
        let spill_path = spill.path().to_string_lossy().into_owned();
        let db = Arc::new(RawDb { db: raw, _spill: Some(spill) });
        let snapshot = Self { db, generation, partitions: files.processed.len() };
        let setup = snapshot.connect()?;
        // Bounded memory first: beyond the limit DuckDB spills into the snapshot's own directory.
        setup
            .conn
            .execute_batch(&format!("SET memory_limit = {}", lit(&config.memory_limit)))
            .map_err(|e| ServeError::MemoryLimit { value: config.memory_limit.clone(), reason: crate::report::one_line(&e) })?;
        let mut sql = format!("SET temp_directory = {};", lit(&spill_path));
        if config.log_file_access {
            sql.push_str("SET logging_level = 'trace'; SET enabled_log_types = 'FileSystem'; SET enable_logging = true;");
        }
        setup.conn.execute_batch(&sql).map_err(engine)?;
        crate::query::define_views(&setup.conn, &files.processed, &files.raw, &files.quarantine).map_err(engine)?;
        crate::query::define_rollup_views(&setup.conn, &files.daily, &files.snapshots).map_err(engine)?;
        if files.load_small_tables {
            setup.conn.execute_batch(include_str!("loaded_tables.sql")).map_err(engine)?;
        }
        // Queries' threads, set once the tables are loaded (which uses every core).
        if let Some(t) = config.threads {
            setup.conn.execute_batch(&format!("SET threads = {t};")).map_err(engine)?;
        }
        setup.conn.execute_batch(&super::compat::schema_sql()).map_err(engine)?;
        // The containment: only the snapshot's files are readable, then nothing can change it.
        let mut allowed_paths: Vec<String> = files
            .processed
            .iter()
            .chain(&files.daily)
            .chain(&files.snapshots)
            .chain(&files.raw)
            .chain(&files.quarantine)
            .cloned()
            .collect();
        allowed_paths.sort();
        allowed_paths.dedup();
        let dirs: Vec<String> =
            files.allowed_directories.iter().map(|d| if d.ends_with('/') { d.clone() } else { format!("{d}/") }).collect();
        setup
            .conn
            .execute_batch(&format!(
                "SET allowed_paths = [{}]; SET allowed_directories = [{}];
                 SET GLOBAL integer_division = true; SET autoinstall_known_extensions = false; SET autoload_known_extensions = false;
                 SET enable_external_access = false; SET lock_configuration = true;",
                allowed_paths.iter().map(|p| lit(p)).collect::<Vec<_>>().join(", "),
                dirs.iter().map(|p| lit(p)).collect::<Vec<_>>().join(", "),
            ))
            .map_err(engine)?;
        Ok(snapshot)
    }

    /// A new connection to this snapshot.
    pub fn connect(&self) -> Result<SnapshotConn, ServeError> {
        let conn = unsafe { Connection::open_from_raw(self.db.db) }.map_err(engine)?;
        Ok(SnapshotConn { conn, _db: self.db.clone() })
    }
}

fn engine(e: duckdb::Error) -> ServeError {
    ServeError::Engine(crate::report::one_line(&e))
}

/// A checked query: its parameters' and result columns' DuckDB types.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The SQL to run (as rewritten by `compat::rewrite`).
    pub sql: String,
    /// DuckDB type ids of the `$n` parameters (ANY/INVALID when DuckDB cannot infer one).
    pub params: Vec<ffi::duckdb_type>,
    /// Result column names and DuckDB type ids.
    pub columns: Vec<(String, ffi::duckdb_type)>,
    /// The statement as the check bound it, for the run on the same snapshot.
    pub bound: Slot,
}

/// Why a statement may not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// More than one statement in one query string.
    #[error("send one statement per query (this one holds {0}); tickerlake serve runs exactly one SELECT at a time")]
    Multiple(usize),
    /// Not a reading statement.
    #[error("tickerlake serve is read-only: {0} statements are refused; only SELECT queries run")]
    NotReading(String),
    /// DuckDB could not parse or bind it.
    #[error("{0}")]
    Invalid(String),
}

fn kind_name(t: ffi::duckdb_statement_type) -> &'static str {
    match t {
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_INSERT => "INSERT",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE => "UPDATE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DELETE => "DELETE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPLAIN => "EXPLAIN",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_PREPARE => "PREPARE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE => "CREATE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXECUTE => "EXECUTE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ALTER => "ALTER",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY => "COPY",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ANALYZE => "ANALYZE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VARIABLE_SET | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SET => "SET",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE_FUNC => "CREATE FUNCTION",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DROP => "DROP",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPORT => "EXPORT",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_PRAGMA => "PRAGMA",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VACUUM => "VACUUM",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CALL => "CALL",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_LOAD => "LOAD/INSTALL",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXTENSION => "extension",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ATTACH => "ATTACH",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DETACH => "DETACH",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY_DATABASE => "COPY DATABASE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE_EXTENSIONS => "UPDATE EXTENSIONS",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_MERGE_INTO => "MERGE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_TRANSACTION => "transaction",
        _ => "this kind of",
    }
}

/// Extracted statements, freed on drop.
struct Extracted(ffi::duckdb_extracted_statements);
impl Drop for Extracted {
    fn drop(&mut self) {
        unsafe { ffi::duckdb_destroy_extracted(&mut self.0) };
    }
}

/// Parse and bind `sql` on a connection of its own and say whether it may run (blocking): the
/// statement stays bound in the result, for the run on the same snapshot to take.
pub fn check(snapshot: &Snapshot, sql: &str) -> Result<Checked, Refusal> {
    let bound = prepare(snapshot, sql)?;
    let st = bound.st.0;
    let params = (1..=unsafe { ffi::duckdb_nparams(st) }).map(|i| unsafe { ffi::duckdb_param_type(st, i) }).collect();
    let columns = (0..unsafe { ffi::duckdb_prepared_statement_column_count(st) })
        .map(|i| unsafe {
            let name_ptr = ffi::duckdb_prepared_statement_column_name(st, i);
            let name = c_text(name_ptr);
            if !name_ptr.is_null() {
                ffi::duckdb_free(name_ptr as *mut std::ffi::c_void);
            }
            (name, ffi::duckdb_prepared_statement_column_type(st, i))
        })
        .collect();
    Ok(Checked { sql: sql.to_owned(), params, columns, bound: Slot::holding(bound) })
}

/// Parse and bind `sql` on a connection of its own (blocking), refusing all but one SELECT.
pub fn prepare(snapshot: &Snapshot, sql: &str) -> Result<Bound, Refusal> {
    let c_sql = CString::new(sql).map_err(|_| Refusal::Invalid("the query contains a NUL byte".into()))?;
    let mut con: ffi::duckdb_connection = std::ptr::null_mut();
    if unsafe { ffi::duckdb_connect(snapshot.db.db, &mut con) } != ffi::DuckDBSuccess {
        return Err(Refusal::Invalid("DuckDB could not open a connection".into()));
    }
    let con = Arc::new(RawConn(con));
    let mut ex = Extracted(std::ptr::null_mut());
    let n = unsafe { ffi::duckdb_extract_statements(con.0, c_sql.as_ptr(), &mut ex.0) } as usize;
    if n == 0 {
        return Err(Refusal::Invalid(c_text(unsafe { ffi::duckdb_extract_statements_error(ex.0) })));
    }
    if n > 1 {
        return Err(Refusal::Multiple(n));
    }
    let mut st = Prepared(std::ptr::null_mut());
    if unsafe { ffi::duckdb_prepare_extracted_statement(con.0, ex.0, 0, &mut st.0) } != ffi::DuckDBSuccess {
        // A transaction statement binds fine; anything else failing to prepare is the client's SQL.
        return Err(Refusal::Invalid(c_text(unsafe { ffi::duckdb_prepare_error(st.0) })));
    }
    // Session and transaction statements are answered by the handler (compat::classify) and
    // never reach DuckDB; anything but a SELECT that does is refused.
    match unsafe { ffi::duckdb_prepared_statement_type(st.0) } {
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SELECT => {}
        other => return Err(Refusal::NotReading(kind_name(other).to_owned())),
    }
    Ok(Bound { st, con, _db: snapshot.db.clone(), generation: snapshot.generation })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(dir: &std::path::Path) -> Snapshot {
        let csv = dir.join("raw.csv");
        std::fs::write(&csv, "symbol,price,timestamp\nBTCUSDT,1.5,2025-05-01 00:00:00+00:00\n").unwrap();
        let files = SnapshotFiles { raw: vec![csv.to_string_lossy().into_owned()], ..Default::default() };
        let config = EngineConfig { threads: Some(1), memory_limit: "256MB".into(), spill_root: dir.to_path_buf(), log_file_access: false };
        Snapshot::build(&files, 1, &config).unwrap()
    }

    #[test]
    fn only_reading_statements_pass_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let s = snapshot(dir.path());
        assert_eq!(check(&s, "SELECT * FROM raw").unwrap().columns.len(), 3);
        assert_eq!(check(&s, "WITH x AS (SELECT 1 AS a) SELECT a FROM x").unwrap().columns[0].0, "a");
        // DuckDB rewrites reading PRAGMAs into SELECTs: they run, and change nothing.
        assert!(check(&s, "PRAGMA version").is_ok());
        let csv = dir.path().join("raw.csv").to_string_lossy().into_owned();
        // Overwriting a file the snapshot may read: allowed by the file rules, refused by type.
        let copy = format!("COPY (SELECT 1) TO '{csv}'");
        for (sql, what) in [
            ("CREATE TABLE t AS SELECT 1", "CREATE"),
            (copy.as_str(), "COPY"),
            ("SET threads = 1", "SET"),
            ("ATTACH ':memory:' AS other", "ATTACH"),
            ("SET VARIABLE x = 1", "SET"),
            ("RESET lock_configuration", "SET"),
            ("DROP VIEW raw", "DROP"),
            ("INSTALL httpfs", "LOAD/INSTALL"),
            ("LOAD httpfs", "LOAD/INSTALL"),
            ("BEGIN", "transaction"),
        ] {
            match check(&s, sql) {
                Err(Refusal::NotReading(k)) => assert_eq!(k, what, "{sql}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
        assert_eq!(check(&s, "SELECT 1; DROP VIEW raw").unwrap_err(), Refusal::Multiple(2));
        // The settings are locked: even a statement that slipped through could not re-enable access.
        let c = s.connect().unwrap();
        let err = c.conn.execute_batch("SET enable_external_access = true").unwrap_err().to_string();
        assert!(err.contains("locked"), "{err}");
        let err = c.conn.prepare("SELECT * FROM read_text('/etc/hostname')").and_then(|mut st| st.query_arrow([]).map(|_| ())).unwrap_err();
        assert!(err.to_string().contains("Permission Error"), "{err}");
        let n: i64 = c.conn.query_row("SELECT count(*) FROM raw", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        let v: String = c.conn.query_row("SELECT pg_compat.current_setting('server_version_num')", [], |r| r.get(0)).unwrap();
        assert_eq!(v, PG_VERSION_NUM);
        // PostgreSQL's (and Athena's) integer division, on every connection.
        let v: i64 = c.conn.query_row("SELECT pg_compat.current_setting('server_version_num')::int/100", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 1600);
        // The memory limit is the configured one.
        let v: String = c.conn.query_row("SELECT current_setting('memory_limit')", [], |r| r.get(0)).unwrap();
        assert!(v.starts_with("244") || v.contains("MiB") || v.contains("MB"), "{v}");
    }

    #[test]
    fn a_checked_statement_runs_as_bound_once_on_its_own_snapshot() {
        use duckdb::arrow::array::{Array, Float64Array};
        let dir = tempfile::tempdir().unwrap();
        let s = snapshot(dir.path());
        let run = |mut bound: Bound, params: &[duckdb::types::Value]| -> Result<Vec<f64>, String> {
            bound.bind(params)?;
            let mut rows = bound.execute()?;
            assert_eq!(rows.schema().field(0).name(), "answer");
            let mut out = Vec::new();
            while let Some(batch) = rows.next_batch()? {
                let col = batch.column(0).as_any().downcast_ref::<Float64Array>().expect("DOUBLE");
                out.extend((0..col.len()).map(|i| col.value(i)));
            }
            Ok(out)
        };
        let checked = check(&s, "SELECT price + $1 AS answer FROM raw").unwrap();
        // Taken once, by a run on the snapshot it was bound on; then gone.
        let bound = checked.bound.take(s.generation).expect("bound by the check");
        assert!(checked.clone().bound.take(s.generation).is_none(), "a bound statement runs once");
        assert_eq!(run(bound, &[duckdb::types::Value::Double(40.5)]).unwrap(), vec![42.0]);
        // A run on another snapshot never uses it (the files it bound may be gone), and drops it.
        let checked = check(&s, "SELECT price + $1 AS answer FROM raw").unwrap();
        assert!(checked.bound.take(s.generation + 1).is_none());
        assert!(checked.bound.take(s.generation).is_none());
        // Bound anew, it runs the same; a parameter DuckDB cannot cast fails as DuckDB says.
        assert_eq!(run(prepare(&s, &checked.sql).unwrap(), &[duckdb::types::Value::Int(1)]).unwrap(), vec![2.5]);
        let err = run(prepare(&s, &checked.sql).unwrap(), &[duckdb::types::Value::Text("x".into())]).unwrap_err();
        assert!(err.contains("Conversion Error") || err.contains("Could not convert"), "{err}");
        // Contained as any query on the snapshot.
        let err = match prepare(&s, "SELECT length(content)::DOUBLE AS answer FROM read_text('/etc/hostname')") {
            Ok(bound) => run(bound, &[]).unwrap_err(),
            Err(refusal) => refusal.to_string(),
        };
        assert!(err.contains("Permission Error"), "{err}");
    }

    #[test]
    fn a_bad_memory_limit_is_a_setting_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            EngineConfig { threads: Some(1), memory_limit: "lots".into(), spill_root: dir.path().to_path_buf(), log_file_access: false };
        let err = Snapshot::build(&SnapshotFiles::default(), 1, &config).err().expect("refused");
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("--memory-limit \"lots\""), "{err}");
    }
}
