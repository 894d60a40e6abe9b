//! The DuckDB side of `serve`: one read-only, contained database per committed state of the lake
//! (a [`Snapshot`]), the statement check every query passes before it runs, and execution with a
//! timeout that interrupts DuckDB.
//!
//! Containment is DuckDB's own: a snapshot's database is built (views over exactly the committed
//! partition files, the raw and quarantine files, PostgreSQL-compatibility macros), then
//! `enable_external_access = false` with `allowed_paths`/`allowed_directories` naming only those
//! files, and `lock_configuration = true`, after which no statement can change a setting back. On
//! top of that, [`check`] prepares every statement on its own connection and lets only `SELECT`
//! (and no-op transaction statements) through, judged by DuckDB's parser, not by matching text.
//! A new commit never changes a snapshot: the next one is built beside it and swapped in.

use std::ffi::{CStr, CString};
use std::sync::Arc;

use duckdb::Connection;
use duckdb::ffi;

use super::ServeError;
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
    /// Raw CSV snapshots.
    pub raw: Vec<String>,
    /// Quarantine CSVs.
    pub quarantine: Vec<String>,
    /// Directories a client may also read (raw and quarantine directories, a download cache).
    pub allowed_directories: Vec<String>,
}

/// An owned DuckDB database handle; closed when the last holder drops it.
struct RawDb(ffi::duckdb_database);

// The C handle is thread-safe (DuckDB databases are shared by connections on many threads).
unsafe impl Send for RawDb {}
unsafe impl Sync for RawDb {}

impl Drop for RawDb {
    fn drop(&mut self) {
        unsafe { ffi::duckdb_close(&mut self.0) };
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

/// The compatibility layer: functions PostgreSQL clients call that DuckDB lacks or answers
/// differently. Macros in `main` shadow DuckDB's built-ins of the same name.
const COMPAT_MACROS: &str = r#"
CREATE MACRO version() AS 'PostgreSQL 16.6 (tickerlake serve over DuckDB; read-only)';
CREATE MACRO current_setting(name) AS CASE lower(name)
    WHEN 'server_version_num' THEN '160006'
    WHEN 'server_version' THEN '16.6'
    WHEN 'search_path' THEN 'main'
    WHEN 'timezone' THEN 'UTC'
    WHEN 'datestyle' THEN 'ISO, MDY'
    WHEN 'client_encoding' THEN 'UTF8'
    WHEN 'server_encoding' THEN 'UTF8'
    WHEN 'standard_conforming_strings' THEN 'on'
    WHEN 'transaction_read_only' THEN 'on'
    WHEN 'default_transaction_read_only' THEN 'on'
    WHEN 'max_identifier_length' THEN '63'
    ELSE NULL END;
CREATE MACRO quote_ident(s) AS CASE WHEN regexp_full_match(s, '[a-z_][a-z0-9_]*') THEN s ELSE '"' || replace(s, '"', '""') || '"' END;
CREATE MACRO pg_is_in_recovery() AS false;
CREATE MACRO current_database() AS 'tickerlake';
CREATE MACRO current_schema() AS 'main';
"#;

impl Snapshot {
    /// Build a contained database over `files` (blocking: call from a blocking thread).
    pub fn build(files: &SnapshotFiles, generation: u64, threads: Option<usize>) -> Result<Self, ServeError> {
        let mut raw: ffi::duckdb_database = std::ptr::null_mut();
        let path = CString::new(":memory:").expect("no NUL");
        if unsafe { ffi::duckdb_open(path.as_ptr(), &mut raw) } != ffi::DuckDBSuccess {
            return Err(ServeError::Engine("DuckDB could not open an in-memory database".into()));
        }
        let db = Arc::new(RawDb(raw));
        let snapshot = Self { db, generation, partitions: files.processed.len() };
        let setup = snapshot.connect()?;
        let lits = |v: &[String]| v.iter().map(|p| lit(p)).collect::<Vec<_>>();
        crate::query::define_views(&setup.conn, &lits(&files.processed), &lits(&files.raw), &lits(&files.quarantine)).map_err(engine)?;
        let mut sql = String::from(COMPAT_MACROS);
        // The containment: only the snapshot's files are readable, then nothing can change it.
        let mut allowed_paths: Vec<String> = files.processed.iter().chain(&files.raw).chain(&files.quarantine).cloned().collect();
        allowed_paths.sort();
        allowed_paths.dedup();
        let dirs: Vec<String> =
            files.allowed_directories.iter().map(|d| if d.ends_with('/') { d.clone() } else { format!("{d}/") }).collect();
        if let Some(t) = threads {
            sql.push_str(&format!("SET threads = {t};"));
        }
        sql.push_str(&format!(
            "SET allowed_paths = [{}]; SET allowed_directories = [{}];
             SET GLOBAL integer_division = true; SET autoinstall_known_extensions = false; SET autoload_known_extensions = false;
             SET enable_external_access = false; SET lock_configuration = true;",
            allowed_paths.iter().map(|p| lit(p)).collect::<Vec<_>>().join(", "),
            dirs.iter().map(|p| lit(p)).collect::<Vec<_>>().join(", "),
        ));
        setup.conn.execute_batch(&sql).map_err(engine)?;
        Ok(snapshot)
    }

    /// A new connection to this snapshot.
    pub fn connect(&self) -> Result<SnapshotConn, ServeError> {
        let conn = unsafe { Connection::open_from_raw(self.db.0) }.map_err(engine)?;
        Ok(SnapshotConn { conn, _db: self.db.clone() })
    }
}

fn engine(e: duckdb::Error) -> ServeError {
    ServeError::Engine(crate::report::one_line(&e))
}

/// What a statement is, as DuckDB's parser sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A query: runs.
    Select,
    /// BEGIN/COMMIT/ROLLBACK: answered without running (every query reads one snapshot).
    Transaction,
}

/// A checked statement: what it is, its parameters' and result columns' DuckDB types.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The SQL as the client sent it.
    pub sql: String,
    /// Select or transaction.
    pub kind: Kind,
    /// DuckDB type ids of the `$n` parameters (ANY/INVALID when DuckDB cannot infer one).
    pub params: Vec<ffi::duckdb_type>,
    /// Result column names and DuckDB type ids.
    pub columns: Vec<(String, ffi::duckdb_type)>,
}

/// Why a statement may not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// More than one statement in one query string.
    #[error("send one statement per query (this one holds {0}); tickerlake serve runs exactly one SELECT at a time")]
    Multiple(usize),
    /// Not a reading statement.
    #[error("tickerlake serve is read-only: {0} statements are refused; only SELECT queries run")]
    NotReading(&'static str),
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
        _ => "this kind of",
    }
}

/// A raw connection, prepared statements and extracted statements, all freed on drop.
struct RawConn(ffi::duckdb_connection);
impl Drop for RawConn {
    fn drop(&mut self) {
        unsafe { ffi::duckdb_disconnect(&mut self.0) };
    }
}
struct Extracted(ffi::duckdb_extracted_statements);
impl Drop for Extracted {
    fn drop(&mut self) {
        unsafe { ffi::duckdb_destroy_extracted(&mut self.0) };
    }
}
struct Prepared(ffi::duckdb_prepared_statement);
impl Drop for Prepared {
    fn drop(&mut self) {
        unsafe { ffi::duckdb_destroy_prepare(&mut self.0) };
    }
}

fn c_text(p: *const std::os::raw::c_char) -> String {
    if p.is_null() { String::new() } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().trim_end().replace("\n\n", "\n") }
}

/// Parse and bind `sql` on a connection of its own, and say whether it may run (blocking).
pub fn check(snapshot: &Snapshot, sql: &str) -> Result<Checked, Refusal> {
    let c_sql = CString::new(sql).map_err(|_| Refusal::Invalid("the query contains a NUL byte".into()))?;
    let mut con: ffi::duckdb_connection = std::ptr::null_mut();
    if unsafe { ffi::duckdb_connect(snapshot.db.0, &mut con) } != ffi::DuckDBSuccess {
        return Err(Refusal::Invalid("DuckDB could not open a connection".into()));
    }
    let con = RawConn(con);
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
    let kind = match unsafe { ffi::duckdb_prepared_statement_type(st.0) } {
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SELECT => Kind::Select,
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_TRANSACTION => Kind::Transaction,
        other => return Err(Refusal::NotReading(kind_name(other))),
    };
    let params = (1..=unsafe { ffi::duckdb_nparams(st.0) }).map(|i| unsafe { ffi::duckdb_param_type(st.0, i) }).collect();
    let columns = (0..unsafe { ffi::duckdb_prepared_statement_column_count(st.0) })
        .map(|i| unsafe {
            let name_ptr = ffi::duckdb_prepared_statement_column_name(st.0, i);
            let name = c_text(name_ptr);
            if !name_ptr.is_null() {
                ffi::duckdb_free(name_ptr as *mut std::ffi::c_void);
            }
            (name, ffi::duckdb_prepared_statement_column_type(st.0, i))
        })
        .collect();
    Ok(Checked { sql: sql.to_owned(), kind, params, columns })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(dir: &std::path::Path) -> Snapshot {
        let csv = dir.join("raw.csv");
        std::fs::write(&csv, "symbol,price,timestamp\nBTCUSDT,1.5,2025-05-01 00:00:00+00:00\n").unwrap();
        let files = SnapshotFiles { raw: vec![csv.to_string_lossy().into_owned()], ..Default::default() };
        Snapshot::build(&files, 1, None).unwrap()
    }

    #[test]
    fn only_reading_statements_pass_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let s = snapshot(dir.path());
        assert_eq!(check(&s, "SELECT * FROM raw").unwrap().kind, Kind::Select);
        assert_eq!(check(&s, "WITH x AS (SELECT 1 AS a) SELECT a FROM x").unwrap().columns[0].0, "a");
        assert_eq!(check(&s, "BEGIN").unwrap().kind, Kind::Transaction);
        // DuckDB rewrites reading PRAGMAs into SELECTs: they run, and change nothing.
        assert_eq!(check(&s, "PRAGMA version").unwrap().kind, Kind::Select);
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
        let v: String = c.conn.query_row("SELECT current_setting('server_version_num')", [], |r| r.get(0)).unwrap();
        assert_eq!(v, PG_VERSION_NUM);
        // PostgreSQL's (and Athena's) integer division, on every connection.
        let v: i64 = c.conn.query_row("SELECT current_setting('server_version_num')::int/100", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 1600);
    }
}
