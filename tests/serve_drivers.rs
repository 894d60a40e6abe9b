//! `tickerlake serve` with the PostgreSQL clients people use, for real: psycopg 3, SQLAlchemy +
//! pandas (`pandas.read_sql`), asyncpg (extended protocol, binary results, cancel) from PyPI in a
//! cached virtualenv, and pgJDBC (DBeaver, Metabase, Tableau, JetBrains) from Debian's
//! `libpostgresql-jdbc-java` with the installed JDK, including `DatabaseMetaData`. Each connects
//! (also over TLS with `verify-full`), runs a parameterised query with a timestamp parameter, gets
//! typed timestamps and doubles, and lists the views; the answers are compared with the lake.
//!
//! The clients come from `./dev drivers` (`./dev test` runs it). A missing one fails the test
//! with the command to run; TICKERLAKE_SKIP_DRIVERS=1 skips loudly, except in CI.

mod common;

use std::path::{Path, PathBuf};

use common::serve::{Server, lake};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The pgJDBC jar: TICKERLAKE_PGJDBC_JAR, else where Debian's libpostgresql-jdbc-java puts it.
fn pgjdbc() -> String {
    std::env::var("TICKERLAKE_PGJDBC_JAR").unwrap_or_else(|_| "/usr/share/java/postgresql.jar".to_owned())
}
/// The first hour the parameterised query asks for.
const SINCE: &str = "2025-05-02 05:00:00";

fn venv_python() -> PathBuf {
    std::env::var_os("TICKERLAKE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tickerlake-venv"))
        .join("drivers/bin/python")
}

/// Whether the clients are installed; if not, fail with what to run (or skip where allowed).
fn clients_installed() -> bool {
    let mut missing = Vec::new();
    if !venv_python().exists() {
        missing.push(format!("the Python clients ({})", venv_python().display()));
    }
    if !Path::new(&pgjdbc()).exists() {
        missing.push(format!("pgJDBC ({}, Debian's libpostgresql-jdbc-java; or set TICKERLAKE_PGJDBC_JAR)", pgjdbc()));
    }
    for tool in ["java", "javac"] {
        if std::process::Command::new(tool).arg("-version").output().is_err() {
            missing.push(format!("the JDK's {tool}"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing {}: run `./dev drivers` (or `./dev test`, which does)", missing.join(", "));
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !ci && std::env::var("TICKERLAKE_SKIP_DRIVERS").is_ok_and(|v| v == "1") {
        eprintln!("\n*** SKIPPED client-library test: {msg} ***\n");
        return false;
    }
    panic!("{msg}");
}

/// The rows the query must return: BTCUSDT from SINCE, the first five, as (microseconds since
/// the epoch, price).
fn expected(lake: &Path) -> Vec<(i64, f64)> {
    let since = chrono::NaiveDateTime::parse_from_str(SINCE, "%Y-%m-%d %H:%M:%S").unwrap().and_utc().timestamp_micros();
    common::processed_rows(lake)
        .into_iter()
        .filter(|r| r.symbol == "BTCUSDT" && r.ts_us >= since)
        .take(5)
        .map(|r| (r.ts_us, r.price))
        .collect()
}

fn rows_of(v: &Value) -> Vec<(i64, f64)> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            // Python prints 2025-05-02 05:00:16.801000; Java 2025-05-02 05:00:16.801, and drops
            // zero seconds (2025-05-02 05:00).
            let t = r[0].as_str().unwrap();
            let t = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M"))
                .unwrap_or_else(|e| panic!("{t}: {e}"));
            (t.and_utc().timestamp_micros(), r[1].as_f64().unwrap())
        })
        .collect()
}

async fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_remove("PGPASSWORD").env_remove("PGSSLMODE").env_remove("PGSSLROOTCERT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{} {args:?} failed:\n{}\n{}", program.display(), stdout, String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

async fn python(client: &str, port: u16, env: &[(&str, &str)]) -> Value {
    let script = Path::new(ROOT).join("tests/drivers/clients.py");
    run(&venv_python(), &[script.to_str().unwrap(), client, "127.0.0.1", &port.to_string(), SINCE], env).await
}

/// Compile the JDBC client once per test run.
async fn jdbc_classes() -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let status = tokio::process::Command::new("javac")
        .args(["-d", out.path().to_str().unwrap(), "-cp", &pgjdbc()])
        .arg(Path::new(ROOT).join("tests/drivers/JdbcClient.java"))
        .status()
        .await
        .unwrap();
    assert!(status.success(), "javac failed");
    out
}

async fn jdbc(classes: &Path, port: u16, env: &[(&str, &str)]) -> Value {
    let cp = format!("{}:{}", pgjdbc(), classes.display());
    run(Path::new("java"), &["-cp", &cp, "JdbcClient", "127.0.0.1", &port.to_string(), SINCE], env).await
}

const VIEWS: [&str; 7] = ["daily", "month_to_date", "monthly", "processed", "quarantine", "raw", "snapshots"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_sqlalchemy_pandas_asyncpg_and_pgjdbc_read_the_lake() {
    if !clients_installed() {
        return;
    }
    let dir = lake(72, 5).await;
    let want = expected(dir.path());
    assert_eq!(want.len(), 5);
    let server = Server::start(dir.path(), &[], &[]).await;
    let views: Vec<Value> = VIEWS.iter().map(|v| Value::from(*v)).collect();

    let v = python("psycopg", server.port, &[]).await;
    assert_eq!(rows_of(&v), want, "psycopg: {v}");
    assert_eq!(v["types"], serde_json::json!(["datetime", "float"]), "psycopg: {v}");
    assert_eq!(v["binary_equal"], true, "psycopg's binary results equal its text ones: {v}");
    assert_eq!(v["server_version"], 160006, "{v}");
    assert_eq!(v["views"].as_array().unwrap(), &views, "{v}");

    let v = python("sqlalchemy", server.port, &[]).await;
    assert_eq!(rows_of(&v), want, "pandas.read_sql: {v}");
    assert_eq!(v["dtypes"], serde_json::json!(["datetime64[us]", "float64"]), "{v}");
    assert_eq!(v["views"].as_array().unwrap(), &views, "SQLAlchemy's inspector: {v}");

    // asyncpg reads every column in binary; its timeout sends a CancelRequest.
    let slow = "SELECT count(*) FROM range(100000000) a(x), range(100000) b(y) WHERE (x * y) % 7 = 3";
    let v = python("asyncpg", server.port, &[("TL_SLEEP_QUERY", slow)]).await;
    assert_eq!(rows_of(&v), want, "asyncpg: {v}");
    assert_eq!(v["types"], serde_json::json!(["datetime", "float"]), "{v}");
    assert_eq!(v["views"].as_array().unwrap(), &views, "{v}");
    assert_eq!(v["cancel"], "timeout", "{v}");
    assert_eq!(v["after_cancel"].as_i64(), Some(common::processed_rows(dir.path()).len() as i64), "usable after the cancel: {v}");
    assert!(v["cancel_secs"].as_f64().unwrap() < 3.0, "asyncpg's cancelled query returned after {}s", v["cancel_secs"]);

    let classes = jdbc_classes().await;
    let v = jdbc(classes.path(), server.port, &[]).await;
    assert_eq!(rows_of(&v), want, "pgJDBC: {v}");
    assert_eq!(v["types"], serde_json::json!(["Timestamp", "Double"]), "{v}");
    assert_eq!(v["views"].as_array().unwrap(), &views, "DatabaseMetaData.getTables: {v}");
    let columns: Vec<(String, String, i64)> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_str().unwrap().to_owned(), c[1].as_str().unwrap().to_owned(), c[2].as_i64().unwrap()))
        .collect();
    let want_columns: Vec<(String, String, i64)> = [
        ("symbol", "varchar", 12),
        ("price", "float8", 8),
        ("timestamp", "timestamp", 93),
        ("moving_avg", "float8", 8),
        ("previous_price", "float8", 8),
        ("price_change_pct", "float8", 8),
        ("date", "date", 91),
    ]
    .iter()
    .map(|(n, t, s)| (n.to_string(), t.to_string(), *s))
    .collect();
    assert_eq!(columns, want_columns, "DatabaseMetaData.getColumns: {v}");
    assert!(v["product"].as_str().unwrap().starts_with("PostgreSQL 16.6"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_pgjdbc_verify_the_servers_certificate() {
    if !clients_installed() {
        return;
    }
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let certs = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "tickerlake drivers test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let path = |n: &str| certs.path().join(n).to_string_lossy().into_owned();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("server.pem"), cert.pem()).unwrap();
    std::fs::write(path("server.key"), key.serialize_pem()).unwrap();

    let dir = lake(24, 3).await;
    let want = expected(dir.path());
    let server = Server::start(
        dir.path(),
        &["--tls-cert", &path("server.pem"), "--tls-key", &path("server.key")],
        &[("TICKERLAKE_SERVE_PASSWORD", "pw-over-tls")],
    )
    .await;
    let ca_pem = path("ca.pem");
    let env = [("PGPASSWORD", "pw-over-tls"), ("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", ca_pem.as_str())];
    let v = python("psycopg", server.port, &env).await;
    assert_eq!(v["ssl"], true, "{v}");
    assert_eq!(rows_of(&v), want);
    let classes = jdbc_classes().await;
    let ssl = format!("verify-full,{ca_pem}");
    let v = jdbc(classes.path(), server.port, &[("PGPASSWORD", "pw-over-tls"), ("TL_JDBC_SSL", &ssl)]).await;
    assert_eq!(rows_of(&v), want, "pgJDBC over TLS: {v}");
}
