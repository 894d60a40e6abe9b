//! `tickerlake serve` by execution: psql and tokio-postgres (simple and extended protocols),
//! Grafana's specifics, read-only containment, passwords, freshness, timeouts, concurrency and a
//! clean stop.

mod common;

use std::time::{Duration, Instant};

use common::serve::{Server, lake, simple_rows, sqlstate};
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::types::Type;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_tokio_postgres_read_the_lake_and_grafana_specifics_answer() {
    let dir = lake(72, 20).await;
    let server = Server::start(dir.path(), &[], &[]).await;
    let rows = common::processed_rows(dir.path());
    let btc_latest = rows.iter().filter(|r| r.symbol == "BTCUSDT").max_by_key(|r| r.ts_us).unwrap().price;

    // psql (simple protocol, text): the health check and a query, CSV out.
    let (code, out, err) = server
        .psql(
            &[
                "-- ping",
                ";",
                "SELECT symbol, max_by(price, \"timestamp\") AS price FROM processed WHERE symbol = 'BTCUSDT' GROUP BY symbol",
            ],
            &["--csv"],
        )
        .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), format!("symbol,price\nBTCUSDT,{btc_latest}"));

    let client = server.client().await;
    // Grafana's health check (pgx `-- ping`, lib/pq `;`): an empty-query answer, no rows, no error.
    for ping in ["-- ping", ";", "  -- ping\n"] {
        let msgs = client.simple_query(ping).await.unwrap_or_else(|e| panic!("{ping:?}: {e}"));
        // tokio-postgres reports EmptyQueryResponse as a lone CommandComplete(0); a statement
        // (even one returning no rows) would come with a RowDescription first.
        assert!(matches!(msgs.as_slice(), [SimpleQueryMessage::CommandComplete(0)]), "{ping:?}: {msgs:?}");
    }
    // Wire types Grafana's pgx knows, one per DuckDB type family.
    let stmt = client
        .prepare(
            "SELECT 1::TINYINT AS i1, 1::SMALLINT AS i2, 1::INTEGER AS i4, 1::BIGINT AS i8, 1::HUGEINT AS h, 1.5::DECIMAL(10,2) AS d,
                    1.5::FLOAT AS f4, 1.5::DOUBLE AS f8, 'x'::VARCHAR AS v, true AS b, DATE '2025-05-01' AS dt,
                    TIMESTAMP '2025-05-01 01:02:03.5' AS ts, TIMESTAMPTZ '2025-05-01 01:02:03+00' AS tstz, [1, 2] AS list, {'a': 1} AS st",
        )
        .await
        .unwrap();
    let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        [
            Type::INT2,
            Type::INT2,
            Type::INT4,
            Type::INT8,
            Type::NUMERIC,
            Type::NUMERIC,
            Type::FLOAT4,
            Type::FLOAT8,
            Type::VARCHAR,
            Type::BOOL,
            Type::DATE,
            Type::TIMESTAMP,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::TEXT
        ]
    );
    // Values decode in binary (tokio-postgres) with those types.
    let row = client.query_one(&stmt, &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>("i8"), 1);
    assert_eq!(row.get::<_, f64>("f8"), 1.5);
    assert_eq!(row.get::<_, String>("v"), "x");
    assert_eq!(row.get::<_, chrono::NaiveDate>("dt"), chrono::NaiveDate::from_ymd_opt(2025, 5, 1).unwrap());
    assert_eq!(row.get::<_, chrono::NaiveDateTime>("ts").to_string(), "2025-05-01 01:02:03.500");
    assert_eq!(row.get::<_, chrono::DateTime<chrono::Utc>>("tstz").to_rfc3339(), "2025-05-01T01:02:03+00:00");
    assert_eq!(row.get::<_, String>("list"), "[1, 2]");
    // The same in the simple protocol (text), as Grafana reads panels.
    let msgs = client.simple_query("SELECT 1.5::DECIMAL(10,2) AS d, TIMESTAMP '2025-05-01 01:02:03' AS ts, true AS b").await.unwrap();
    let r = simple_rows(&msgs)[0];
    assert_eq!((r.get(0), r.get(1), r.get(2)), (Some("1.50"), Some("2025-05-01 01:02:03.000000"), Some("t")));

    // What Grafana's config page and query editor ask.
    let v = client.query_one("SELECT current_setting('server_version_num')::int/100 AS version", &[]).await.unwrap();
    assert_eq!(v.get::<_, i32>(0), 1600);
    let v = client.query_one("SELECT version()", &[]).await.unwrap();
    assert!(v.get::<_, String>(0).starts_with("PostgreSQL 16"), "{:?}", v.get::<_, String>(0));
    let tables: Vec<String> = client
        .query(
            "SELECT quote_ident(table_name) AS \"table\" FROM information_schema.tables
             WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog') AND table_schema = current_setting('search_path')
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, ["daily", "month_to_date", "monthly", "processed", "quarantine", "raw", "snapshots"]);
    let columns: Vec<(String, String)> = client
        .query(
            "SELECT quote_ident(column_name) AS \"column\", data_type AS \"type\" FROM information_schema.columns
             WHERE quote_ident(table_name) = 'processed' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        columns.contains(&("\"timestamp\"".into(), "TIMESTAMP".into())) || columns.contains(&("timestamp".into(), "TIMESTAMP".into())),
        "{columns:?}"
    );
    assert!(columns.contains(&("price".into(), "DOUBLE".into())), "{columns:?}");

    // Extended protocol with typed parameters (tokio-postgres, psycopg, JDBC).
    let since = chrono::NaiveDate::from_ymd_opt(2025, 5, 3).unwrap().and_hms_opt(0, 0, 0).unwrap();
    let rows_since = client
        .query(
            "SELECT \"timestamp\", price FROM processed WHERE symbol = $1 AND \"timestamp\" >= $2 ORDER BY \"timestamp\" LIMIT $3",
            &[&"BTCUSDT", &since, &100_i64],
        )
        .await
        .unwrap();
    assert_eq!(rows_since.len(), 24);
    assert_eq!(rows_since.last().unwrap().get::<_, f64>("price"), btc_latest);
    // Transactions (psycopg's implicit BEGIN) are accepted as no-ops.
    client.batch_execute("BEGIN").await.unwrap();
    client.batch_execute("COMMIT").await.unwrap();
}

/// Every statement class that writes, escapes the lake or changes settings, and what it gets.
const REFUSED: &[(&str, &str)] = &[
    ("CREATE TABLE t AS SELECT 1", "25006"),
    ("CREATE VIEW v AS SELECT 1", "25006"),
    ("CREATE MACRO m() AS 1", "25006"),
    ("DROP VIEW processed", "25006"),
    ("ALTER VIEW raw RENAME TO raw2", "25006"),
    ("INSERT INTO processed SELECT * FROM processed", "*"),
    ("DELETE FROM raw", "*"),
    ("ATTACH ':memory:' AS other", "25006"),
    ("ATTACH '/tmp/tickerlake-serve-attack.db' AS other", "*"),
    ("DETACH memory", "25006"),
    ("INSTALL httpfs", "*"),
    ("LOAD httpfs", "*"),
    ("SET enable_external_access = true", "25006"),
    ("SET lock_configuration = false", "25006"),
    ("RESET lock_configuration", "25006"),
    ("SET GLOBAL allowed_directories = ['/']", "25006"),
    ("PRAGMA enable_external_access = true", "*"),
    ("SELECT * FROM read_csv('/etc/passwd')", "42501"),
    ("SELECT * FROM read_text('/etc/hostname')", "42501"),
    ("SELECT * FROM read_blob('/etc/hostname')", "42501"),
    ("SELECT * FROM glob('/etc/*')", "42501"),
    ("SELECT * FROM read_parquet('/tmp/*.parquet')", "42501"),
    // The views' own form of a file list: DuckDB takes struct entries without checking them at
    // bind, so the containment must hold when the file is opened.
    ("SELECT * FROM read_csv([{'filename': '/etc/passwd'}])", "42501"),
    ("SELECT * FROM read_csv(CAST('[{filename: /etc/passwd}]' AS STRUCT(filename VARCHAR)[]))", "42501"),
    ("COPY (SELECT 1) TO '/tmp/tickerlake-serve-attack.csv'", "*"),
    ("COPY processed TO '/tmp/tickerlake-serve-attack.csv'", "*"),
    ("EXPORT DATABASE '/tmp/tickerlake-serve-attack'", "*"),
    ("CALL pragma_version()", "*"),
    ("SELECT 1; DROP VIEW processed", "0A000"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_writing_escaping_or_setting_statement_is_refused_and_cannot_be_reenabled() {
    let dir = lake(24, 5).await;
    let before = common::tree(dir.path());
    let server = Server::start(dir.path(), &[], &[]).await;
    let client = server.client().await;
    let lake_dir = dir.path().to_string_lossy().into_owned();
    // Inside the lake but not committed / not a file a view reads: refused too.
    let staged = format!("SELECT * FROM read_csv('{lake_dir}/_tickerlake/manifest.json')");
    let overwrite = format!("COPY (SELECT 1 AS x) TO '{lake_dir}/processed/date=2025-05-03/part-00000.parquet'");
    let mut cases: Vec<(String, &str)> = REFUSED.iter().map(|(s, c)| (s.to_string(), *c)).collect();
    cases.push((staged, "42501"));
    cases.push((overwrite, "*"));
    for (sql, code) in &cases {
        // Simple protocol (Grafana, psql) and extended (drivers) alike.
        let simple = client.simple_query(sql).await.expect_err(sql);
        let extended = client.query(sql.as_str(), &[]).await.expect_err(sql);
        for err in [&simple, &extended] {
            let (got, message) = sqlstate(err);
            if *code == "*" {
                // Refused by type, by the file rules, or already by DuckDB's binder (INSERT into a view).
                assert!(["25006", "42501", "42000"].contains(&got.as_str()), "{sql}: {got} {message}");
            } else {
                assert_eq!(&got, code, "{sql}: {message}");
            }
            assert!(!message.is_empty());
        }
    }
    let (_, message) = sqlstate(&client.simple_query("DROP VIEW processed").await.unwrap_err());
    assert_eq!(message, "tickerlake serve is read-only: DROP statements are refused; only SELECT queries run");
    // psql too, with a one-line error.
    let (code, _, err) = server.psql(&["SET enable_external_access = true"], &[]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("read-only: SET enable_external_access is refused"), "{err}");
    // Still serving, nothing written anywhere.
    let n: i64 = client.query_one("SELECT count(*) FROM processed", &[]).await.unwrap().get(0);
    assert_eq!(n, common::processed_rows(dir.path()).len() as i64);
    assert!(!std::path::Path::new("/tmp/tickerlake-serve-attack.csv").exists());
    assert!(!std::path::Path::new("/tmp/tickerlake-serve-attack").exists());
    assert_eq!(common::tree(dir.path()), before, "the lake changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_use_scram_and_open_addresses_need_one() {
    let dir = lake(24, 3).await;
    // Non-loopback without a password: refused at start, configuration exit status.
    let out =
        common::tickerlake(dir.path().to_str().unwrap(), &["serve", "--listen", "0.0.0.0:0"], &[("TICKERLAKE_SERVE_PASSWORD", "")]).await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr.contains("refusing to listen on 0.0.0.0:0 without a password") && out.stderr.contains("TICKERLAKE_SERVE_PASSWORD"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.trim().lines().filter(|l| l.starts_with("error:")).count(), 1);

    let server = Server::start(dir.path(), &[], &[("TICKERLAKE_SERVE_PASSWORD", "s3cret")]).await;
    let err = server.client_as("grafana", Some("wrong")).await.expect_err("a wrong password must fail");
    assert!(err.to_string().contains("password") || err.as_db_error().is_some(), "{err}");
    assert!(server.client_as("grafana", None).await.is_err(), "no password must fail");
    let client = server.client_as("anyone", Some("s3cret")).await.expect("SCRAM with the right password");
    let n: i64 = client.query_one("SELECT count(*) FROM processed", &[]).await.unwrap().get(0);
    assert_eq!(n, common::processed_rows(dir.path()).len() as i64);
    // psql authenticates with SCRAM-SHA-256 too.
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "u", "-d", "d", "-tAc", "SELECT count(*) FROM raw"])
        .env("PGPASSWORD", "s3cret")
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), raw_rows(dir.path()).to_string(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_commits_are_seen_without_restart_and_uncommitted_files_never() {
    let dir = lake(24, 4).await;
    let lake_path = dir.path().to_str().unwrap().to_owned();
    let server = Server::start(dir.path(), &[], &[]).await;
    let client = server.client().await;
    async fn dates(c: &tokio_postgres::Client) -> tokio_postgres::Row {
        c.query_one("SELECT count(DISTINCT \"date\") AS d, count(*) AS n FROM processed", &[]).await.unwrap()
    }
    let first = dates(&client).await;
    assert_eq!((first.get::<_, i64>(0), first.get::<_, i64>(1)), (1, common::processed_rows(dir.path()).len() as i64));

    // A partition file that no manifest names (a crashed run's leftover, a copy by hand).
    let planted = dir.path().join("processed/date=2099-01-01");
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::copy(dir.path().join("processed/date=2025-05-03/part-00000.parquet"), planted.join("part-00000.parquet")).unwrap();
    // More history, committed by a normal run.
    common::tickerlake(&lake_path, &["simulate-history", "--hours", "48", "--symbols", "4", "--until", "2025-05-05T23:00:00Z"], &[])
        .await
        .ok();
    common::tickerlake(&lake_path, &["process"], &[]).await.ok();
    std::fs::remove_dir_all(&planted).unwrap();
    let committed = common::processed_rows(dir.path()).len() as i64;
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::copy(dir.path().join("processed/date=2025-05-03/part-00000.parquet"), planted.join("part-00000.parquet")).unwrap();
    assert!(committed > first.get::<_, i64>(1));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = dates(&client).await;
        if now.get::<_, i64>(1) == committed {
            assert_eq!(now.get::<_, i64>(0), 3, "only the committed dates");
            break;
        }
        assert!(Instant::now() < deadline, "the new commit was not seen: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let max: chrono::NaiveDate = client.query_one("SELECT max(\"date\") FROM processed", &[]).await.unwrap().get(0);
    assert_eq!(max.to_string(), "2025-05-05");
    // Reading the planted file directly is refused as well.
    let sql = format!("SELECT count(*) FROM read_parquet('{}')", planted.join("part-00000.parquet").display());
    assert_eq!(sqlstate(&client.simple_query(&sql).await.unwrap_err()).0, "42501");
    // New raw snapshots show in `raw` too.
    let n: i64 = client.query_one("SELECT count(*) FROM raw", &[]).await.unwrap().get(0);
    assert_eq!(n, raw_rows(dir.path()));
}

/// Data lines of every raw CSV of a local lake.
fn raw_rows(lake: &std::path::Path) -> i64 {
    std::fs::read_dir(lake.join("raw"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap().lines().skip(1).filter(|l| !l.is_empty()).count() as i64)
        .sum()
}

/// A query that runs for minutes on this machine unless interrupted.
const SLOW: &str = "SELECT count(*) FROM range(100000000) a(x), range(100000) b(y) WHERE (x * y) % 7 = 3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_query_neither_stalls_other_clients_nor_outlives_its_timeout() {
    let dir = lake(24, 5).await;
    let server = Server::start(dir.path(), &["--query-timeout", "4"], &[]).await;
    let slow_client = server.client().await;
    let started = Instant::now();
    let slow = tokio::spawn(async move { slow_client.simple_query(SLOW).await.map(|_| ()).unwrap_err() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Meanwhile a second (and third) client get answers, quickly.
    let other = server.client().await;
    for _ in 0..5 {
        let t = Instant::now();
        let n: i64 = other.query_one("SELECT count(*) FROM processed WHERE symbol = 'BTCUSDT'", &[]).await.unwrap().get(0);
        assert_eq!(n, 24);
        assert!(t.elapsed() < Duration::from_secs(2), "a second client waited {:?}", t.elapsed());
    }
    let (code, out, err) = server.psql(&["SELECT count(DISTINCT symbol) FROM processed"], &["-tA"]).await;
    let symbols = common::processed_rows(dir.path()).iter().map(|r| r.symbol.clone()).collect::<std::collections::BTreeSet<_>>().len();
    assert_eq!((code, out.trim()), (Some(0), symbols.to_string().as_str()), "{err}");
    assert!(!slow.is_finished(), "the slow query should still be running");
    let err = slow.await.unwrap();
    let elapsed = started.elapsed();
    let (code, message) = sqlstate(&err);
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("--query-timeout (4 s)"), "{message}");
    assert!(elapsed >= Duration::from_secs(4) && elapsed < Duration::from_secs(9), "timed out after {elapsed:?}");
    // The interrupted query left the server healthy.
    let n: i64 = other.query_one("SELECT count(*) FROM processed", &[]).await.unwrap().get(0);
    assert_eq!(n, common::processed_rows(dir.path()).len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly_even_during_a_query() {
    let dir = lake(24, 3).await;
    let mut server = Server::start(dir.path(), &[], &[]).await;
    let client = server.client().await;
    let running = tokio::spawn(async move { client.simple_query(SLOW).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.child.id().unwrap();
    let t = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait()).await.expect("serve did not stop within 10 s").unwrap();
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "stopping took {:?}", t.elapsed());
    // The client's connection was closed (an error, not a hang).
    assert!(tokio::time::timeout(Duration::from_secs(5), running).await.expect("client hung").unwrap().is_err());
    // The port is free again.
    assert!(std::net::TcpListener::bind(("127.0.0.1", server.port)).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_read_from_staging_keeps_answering_once_published_and_cleaned_up() {
    // A run paused right after its commit: the manifest names its partition in the run's staging
    // area (not yet published). serve reads it there; the run then publishes and deletes the
    // staging area, and serve, which would not look again for an hour, must still answer.
    let dir = lake(24, 3).await;
    let lake_path = dir.path().to_str().unwrap().to_owned();
    common::tickerlake(&lake_path, &["simulate-history", "--hours", "24", "--symbols", "3", "--until", "2025-05-04T23:00:00Z"], &[])
        .await
        .ok();
    let run = common::PausedRun::start_at(&lake_path, &[], "after-commit", 4).await;
    let server = Server::start(dir.path(), &["--refresh-secs", "3600"], &[]).await;
    let client = server.client().await;
    let during: i64 = client.query_one("SELECT count(DISTINCT \"date\") FROM processed", &[]).await.unwrap().get(0);
    assert_eq!(during, 2, "the committed (staged) partition is served");
    let (status, stderr) = run.finish().await;
    assert!(status.success(), "{stderr}");
    assert!(!dir.path().join("_tickerlake/runs").read_dir().is_ok_and(|mut d| d.next().is_some()), "staging was cleaned up");
    for sql in ["SELECT count(*) FROM processed WHERE \"date\" = DATE '2025-05-04'", "SELECT count(*) FROM processed"] {
        let simple = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let extended: i64 = client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0);
        assert!(extended > 0 && simple_rows(&simple)[0].get(0).unwrap().parse::<i64>().unwrap() == extended);
    }
}

/// A CA, and a certificate it signed for `localhost` and 127.0.0.1, written as PEM files.
struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    fn new(name: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Self { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

/// psql with a libpq connection string; (exit code, stdout, stderr).
async fn psql_conninfo(conninfo: &str, commands: &[&str], password: Option<&str>) -> (Option<i32>, String, String) {
    let mut cmd = tokio::process::Command::new("psql");
    cmd.args(["-X", "-tA", "-v", "ON_ERROR_STOP=1", conninfo]);
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    cmd.env("PGCONNECT_TIMEOUT", "10").env_remove("PGPASSWORD").env_remove("PGSSLMODE");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().await.expect("psql is installed");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_servers_ca_passes_verify_full_and_cleartext_off_loopback_is_warned() {
    let dir = lake(24, 3).await;
    let ca = TestCa::new("tickerlake test CA");
    let other = TestCa::new("another CA");
    let server = Server::start(
        dir.path(),
        &["--tls-cert", &ca.path("server.pem")],
        &[("TICKERLAKE_SERVE_TLS_KEY", &ca.path("server.key")), ("TICKERLAKE_SERVE_PASSWORD", "s3cret")],
    )
    .await;
    let n = common::processed_rows(dir.path()).len();
    for host in ["localhost", "127.0.0.1"] {
        let conninfo = format!(
            "host={host} port={} user=grafana dbname=tickerlake sslmode=verify-full sslrootcert={}",
            server.port,
            ca.path("ca.pem")
        );
        let (code, out, err) = psql_conninfo(&conninfo, &["SELECT count(*) FROM processed", "\\conninfo"], Some("s3cret")).await;
        assert_eq!(code, Some(0), "{host}: {err}");
        assert!(out.starts_with(&format!("{n}\n")), "{out}");
        assert!(out.contains("SSL connection (protocol: TLSv1.3"), "the session is encrypted: {out}");
    }
    // Another CA's client refuses the server; so does a client insisting on TLS to a server without it.
    let conninfo = format!(
        "host=localhost port={} user=grafana dbname=tickerlake sslmode=verify-full sslrootcert={}",
        server.port,
        other.path("ca.pem")
    );
    let (code, _, err) = psql_conninfo(&conninfo, &["SELECT 1"], Some("s3cret")).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("certificate verify failed"), "{err}");
    let plain = Server::start(dir.path(), &[], &[]).await;
    let (code, _, err) =
        psql_conninfo(&format!("host=127.0.0.1 port={} user=u dbname=d sslmode=require", plain.port), &["SELECT 1"], None).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("server does not support SSL"), "{err}");
    // Half a configuration is a setting to fix (exit status 3), with one line saying which half.
    let out = common::tickerlake(dir.path().to_str().unwrap(), &["serve", "--tls-cert", &ca.path("server.pem")], &[]).await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr.contains("TLS needs both --tls-cert and --tls-key") && out.stderr.contains("--tls-key is missing"),
        "{}",
        out.stderr
    );
    let out = common::tickerlake(
        dir.path().to_str().unwrap(),
        &["serve", "--tls-cert", &ca.path("ca.pem.missing"), "--tls-key", &ca.path("server.key")],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("ca.pem.missing") && out.stderr.contains("--tls-cert"), "{}", out.stderr);

    // Off the loopback without TLS: a warning at start that says what it exposes; with TLS, none.
    for (tls, warned) in [(false, true), (true, false)] {
        let mut args = vec!["--listen", "0.0.0.0:0"];
        let (cert, key) = (ca.path("server.pem"), ca.path("server.key"));
        if tls {
            args.extend(["--tls-cert", &cert, "--tls-key", &key]);
        }
        let s = Server::start_logged(dir.path().to_str().unwrap(), &args, &[("TICKERLAKE_SERVE_PASSWORD", "s3cret")]).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            let lines = s.log.as_ref().unwrap().lock().unwrap().join("\n");
            if lines.contains("PostgreSQL endpoint on") || Instant::now() > deadline {
                break lines;
            }
            drop(lines);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(seen.contains("without TLS: query results and the SCRAM exchange"), warned, "tls={tls}: {seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_stop_the_query_within_a_second_with_57014() {
    let dir = lake(24, 3).await;
    let server = Server::start(dir.path(), &["--query-timeout", "120"], &[]).await;
    let client = server.client().await;
    // A cancel with nothing running changes nothing for the next query (PostgreSQL ignores it too).
    client.cancel_token().cancel_query(tokio_postgres::NoTls).await.unwrap();
    let n: i64 = client.query_one("SELECT count(*) FROM processed", &[]).await.unwrap().get(0);
    assert_eq!(n, common::processed_rows(dir.path()).len() as i64);
    let token = client.cancel_token();
    for protocol in ["simple", "extended"] {
        let c = server.client().await;
        let token_c = c.cancel_token();
        let running = tokio::spawn(async move {
            if protocol == "simple" { c.simple_query(SLOW).await.map(|_| ()) } else { c.query(SLOW, &[]).await.map(|_| ()) }
                .map(|()| c)
                .map_err(|e| sqlstate(&e))
        });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!running.is_finished(), "the query is running");
        let sent = Instant::now();
        token_c.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let (code, message) = tokio::time::timeout(Duration::from_secs(10), running).await.expect("cancel ignored").unwrap().err().unwrap();
        let took = sent.elapsed();
        assert_eq!((code.as_str(), message.as_str()), ("57014", "canceling statement due to user request"), "{protocol}");
        assert!(took < Duration::from_secs(1), "{protocol}: the query stopped {took:?} after the CancelRequest");
    }
    // The other connection was not touched, and still works.
    drop(token);
    let n: i64 = client.query_one("SELECT count(*) FROM processed", &[]).await.unwrap().get(0);
    assert!(n > 0);
    // psql's Ctrl-C: SIGINT makes psql send a CancelRequest; the statement ends at once.
    let mut psql = tokio::process::Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "u", "-d", "d", "-c", SLOW])
        .env("PGCONNECT_TIMEOUT", "10")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = Instant::now();
    assert!(std::process::Command::new("kill").args(["-INT", &psql.id().unwrap().to_string()]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), psql.wait()).await.expect("psql's Ctrl-C was ignored").unwrap();
    let took = sent.elapsed();
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(psql.stderr.as_mut().unwrap(), &mut err).await.unwrap();
    assert!(!status.success());
    assert!(err.contains("canceling statement due to user request"), "{err}");
    assert!(took < Duration::from_secs(2), "psql got its answer {took:?} after Ctrl-C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_streams_in_bounded_memory_and_the_next_client_is_answered_at_once() {
    let dir = lake(24, 3).await;
    let server = Server::start(dir.path(), &["--query-timeout", "600"], &[]).await;
    let before = server.peak_rss();
    // About 1.5 GB as text: 15 M rows of a number and 96 characters.
    const ROWS: i64 = 15_000_000;
    let big = format!("SELECT i, repeat('x', 96) || CAST(i AS VARCHAR) AS pad FROM range({ROWS}) t(i)");
    let client = server.client().await;
    let stmt = client.prepare(&big).await.unwrap();
    let rows = client.query_raw(&stmt, Vec::<i64>::new()).await.unwrap();
    futures::pin_mut!(rows);
    let mut seen = 0_i64;
    let mut bytes = 0_u64;
    let other = server.client().await;
    while let Some(row) = futures::StreamExt::next(&mut rows).await {
        let row = row.unwrap();
        bytes += row.get::<_, &str>(1).len() as u64 + 8;
        seen += 1;
        if seen == 1000 {
            // The reader pauses: DuckDB must wait rather than buffer the rest; another client is
            // answered meanwhile.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let t = Instant::now();
            let n: i64 = other.query_one("SELECT count(*) FROM processed", &[]).await.unwrap().get(0);
            assert!(n > 0);
            assert!(t.elapsed() < Duration::from_secs(3), "the next client waited {:?}", t.elapsed());
            assert!(server.peak_rss() < before + (256 << 20), "paused, the server holds {} MB more", (server.peak_rss() - before) >> 20);
        }
    }
    assert_eq!(seen, ROWS);
    assert!(bytes > 1_500_000_000, "{bytes} bytes of results");
    let peak = server.peak_rss();
    eprintln!("serve peak RSS over a {} MB result: {} MB", bytes >> 20, peak >> 20);
    assert!(peak < 1 << 30, "peak RSS {} MB", peak >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_on_whole_range_dashboard_queries_share_the_memory_limit() {
    use tickerlake::serve::grafana::{self, Flavor};
    let dir = lake(24 * 14, 200).await;
    let limit: u64 = 128 << 20;
    let server = Server::start(dir.path(), &["--memory-limit", "128MB", "--query-timeout", "600"], &[]).await;
    let files = grafana::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries")).unwrap();
    let from: chrono::DateTime<chrono::Utc> = "2025-04-01T00:00:00Z".parse().unwrap();
    let to: chrono::DateTime<chrono::Utc> = "2025-05-04T00:00:00Z".parse().unwrap();
    let vars = std::collections::BTreeMap::from([("symbol".to_owned(), "BTCUSDT".to_owned())]);
    let sqls: Vec<String> = files
        .iter()
        .filter(|f| f.get("dashboard").is_some() && f.is_for(Flavor::Postgres))
        .map(|f| grafana::expand(&f.sql, Flavor::Postgres, from, to, &vars).unwrap())
        .collect();
    let port = server.port;
    let mut tasks = Vec::new();
    for c in 0..20 {
        let sqls = sqls.clone();
        tasks.push(tokio::spawn(async move {
            let (client, conn) =
                tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=c{c} dbname=d"), tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            for sql in sqls.iter().cycle().skip(c).take(sqls.len()) {
                let msgs = client.simple_query(sql).await.unwrap_or_else(|e| panic!("client {c}: {e}\n{sql}"));
                // This lake quarantined nothing; every other panel has rows.
                assert!(!simple_rows(&msgs).is_empty() || sql.contains("FROM quarantine"), "{sql}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let peak = server.peak_rss();
    eprintln!("serve peak RSS with 20 clients, --memory-limit 128MB: {} MB", peak >> 20);
    // DuckDB's buffers stay under the limit; the process adds its code, Arrow batches in flight
    // and the allocator's slack.
    assert!(peak < limit + (256 << 20), "peak RSS {} MB", peak >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_53300_and_cancel_requests_still_pass() {
    let dir = lake(24, 3).await;
    let server = Server::start(dir.path(), &["--max-connections", "2", "--query-timeout", "120"], &[]).await;
    let a = server.client().await;
    let b = server.client().await;
    let err = server.client_as("c", None).await.expect_err("a third connection is refused");
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(db.code().code(), "53300", "{}", db.message());
    assert!(db.message().contains("too many clients") && db.message().contains("--max-connections"), "{}", db.message());
    // At the cap, a CancelRequest (a connection of its own) still reaches its query.
    let token = b.cancel_token();
    let running = tokio::spawn(async move { b.simple_query(SLOW).await.map(|_| ()).map_err(|e| sqlstate(&e).0) });
    tokio::time::sleep(Duration::from_millis(800)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap(), Err("57014".to_owned()));
    drop(a);
    // A closed connection frees its place.
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = loop {
        match server.client_as("c", None).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    };
    let n: i64 = c.query_one("SELECT count(*) FROM raw", &[]).await.unwrap().get(0);
    assert_eq!(n, raw_rows(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_session_statements_are_per_connection_and_catalog_functions_answer_as_postgresql() {
    let dir = lake(24, 3).await;
    let server = Server::start(dir.path(), &[], &[]).await;
    let a = server.client().await;
    let b = server.client().await;
    // What drivers send at connect, in both protocols.
    for sql in [
        "SET extra_float_digits = 3",
        "SET application_name = 'PostgreSQL JDBC Driver'",
        "SET SESSION TIME ZONE 'UTC'",
        "SET DateStyle = ISO, MDY",
        "SET search_path TO main",
        "SET statement_timeout = '1s'",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        "SAVEPOINT _pg3_1",
        "RELEASE SAVEPOINT _pg3_1",
    ] {
        a.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        a.execute(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let one = |rows: Vec<tokio_postgres::SimpleQueryMessage>| simple_rows(&rows)[0].get(0).unwrap().to_owned();
    assert_eq!(one(a.simple_query("SHOW application_name").await.unwrap()), "PostgreSQL JDBC Driver");
    assert_eq!(one(a.simple_query("SHOW extra_float_digits").await.unwrap()), "3");
    assert_eq!(a.query_one("SHOW TimeZone", &[]).await.unwrap().get::<_, String>(0), "UTC");
    assert_eq!(one(a.simple_query("SHOW transaction isolation level").await.unwrap()), "read committed");
    assert_eq!(one(a.simple_query("SHOW standard_conforming_strings").await.unwrap()), "on");
    // Per connection: the other one still has the defaults.
    assert_eq!(one(b.simple_query("SHOW application_name").await.unwrap()), "");
    assert_eq!(one(b.simple_query("SHOW extra_float_digits").await.unwrap()), "1");
    let all = b.simple_query("SHOW ALL").await.unwrap();
    assert!(simple_rows(&all).iter().any(|r| r.get(0) == Some("TimeZone") && r.get(1) == Some("UTC")));
    // statement_timeout applies to that connection only.
    let (code, message) = sqlstate(&a.simple_query(SLOW).await.unwrap_err());
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("statement timeout"), "{message}");
    a.simple_query("RESET statement_timeout").await.unwrap();
    // As PostgreSQL answers them.
    let (code, message) = sqlstate(&a.simple_query("SHOW no_such_setting").await.unwrap_err());
    assert_eq!((code.as_str(), message.as_str()), ("42704", "unrecognized configuration parameter \"no_such_setting\""));
    assert_eq!(sqlstate(&a.simple_query("SET server_version = '1'").await.unwrap_err()).0, "55P02");
    assert_eq!(sqlstate(&a.simple_query("SET client_encoding = 'LATIN1'").await.unwrap_err()).0, "22023");
    // None of it reopens file access, and DuckDB's own settings stay refused.
    for sql in ["SET enable_external_access = true", "SET lock_configuration = false", "RESET lock_configuration", "SET GLOBAL threads = 1"]
    {
        assert_eq!(sqlstate(&a.simple_query(sql).await.unwrap_err()).0, "25006", "{sql}");
    }
    assert_eq!(sqlstate(&a.simple_query("SELECT * FROM read_text('/etc/hostname')").await.unwrap_err()).0, "42501");
    // The functions and catalogs drivers read at connect.
    let v: String = a.query_one("select pg_catalog.version()", &[]).await.unwrap().get(0);
    assert!(v.starts_with("PostgreSQL 16.6"), "{v}");
    let s: String = a.query_one("select current_schema()", &[]).await.unwrap().get(0);
    assert_eq!(s, "main");
    let s: String = a.query_one("select pg_catalog.current_schema()", &[]).await.unwrap().get(0);
    assert_eq!(s, "main");
    let views: Vec<String> = a
        .query(
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = ANY (ARRAY['v']) AND pg_catalog.pg_table_is_visible(c.oid) AND n.nspname != 'pg_catalog' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(views, ["daily", "month_to_date", "monthly", "processed", "quarantine", "raw", "snapshots"]);
    let types: Vec<(String, i64, String)> = a
        .query(
            "SELECT a.attname, a.atttypid, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = 'processed'::regclass AND a.attnum > 0 ORDER BY a.attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(types.contains(&("timestamp".into(), 1114, "timestamp without time zone".into())), "{types:?}");
    assert!(types.contains(&("price".into(), 701, "double precision".into())), "{types:?}");
    let regtype: String = a.query_one("SELECT 1114::regtype::text", &[]).await.unwrap().get(0);
    assert_eq!(regtype, "timestamp without time zone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_hold_no_host_paths() {
    let dir = lake(24, 3).await;
    let server = Server::start(dir.path(), &[], &[]).await;
    let client = server.client().await;
    // Run one query that spills, so temporary files exist while we look.
    let lake_path = std::fs::canonicalize(dir.path()).unwrap().to_string_lossy().into_owned();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let tmp = std::env::temp_dir().to_string_lossy().trim_end_matches('/').to_owned();
    let forbidden = [lake_path.as_str(), dir.path().to_str().unwrap(), home.as_str(), tmp.as_str(), "tickerlake-serve-"];
    // Every DuckDB setting through current_setting, and every table function without arguments.
    let local = duckdb::Connection::open_in_memory().unwrap();
    let names = |sql: &str| -> Vec<String> {
        let mut st = local.prepare(sql).unwrap();
        st.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
    };
    let mut queries: Vec<String> = names("SELECT name FROM duckdb_settings()")
        .into_iter()
        .flat_map(|n| [format!("SELECT current_setting('{n}')"), format!("SELECT system.main.current_setting('{n}')")])
        .collect();
    queries.extend(
        names(
            // Every table function, called without arguments (those that need some just fail),
            // but the ones that change state.
            "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'table'
             AND NOT regexp_matches(function_name, 'test|checkpoint|logging|profil|truncate|clear|reset|enable|disable')",
        )
        .into_iter()
        // Every column as text (some are of types the wire does not carry as such, e.g. VARIANT).
        .flat_map(|f| [format!("SELECT COLUMNS(*)::VARCHAR FROM {f}()"), format!("SELECT COLUMNS(*)::VARCHAR FROM system.main.{f}()")]),
    );
    queries.extend(
        [
            "SELECT * FROM information_schema.views",
            "SELECT * FROM pg_catalog.pg_views",
            "SELECT * FROM duckdb_views",
            "SELECT * FROM pg_catalog.pg_settings",
            "SELECT * FROM duckdb_settings() WHERE name = 'temp_directory'",
        ]
        .map(String::from),
    );
    // These must answer (not merely fail): they are where the paths are.
    let must: Vec<String> = [
        "SELECT COLUMNS(*)::VARCHAR FROM duckdb_settings()",
        "SELECT COLUMNS(*)::VARCHAR FROM system.main.duckdb_settings()",
        "SELECT COLUMNS(*)::VARCHAR FROM duckdb_views()",
        "SELECT current_setting('temp_directory')",
        "SELECT system.main.current_setting('allowed_paths')",
        "SELECT * FROM information_schema.views",
    ]
    .map(String::from)
    .to_vec();
    queries.extend(must.iter().cloned());
    let mut checked = 0;
    for sql in &queries {
        let msgs = match client.simple_query(sql).await {
            Ok(m) => m,
            Err(e) => {
                assert!(!must.contains(sql), "{sql}: {e}");
                continue;
            }
        };
        checked += 1;
        for row in simple_rows(&msgs) {
            for i in 0..row.len() {
                let v = row.get(i).unwrap_or("");
                for f in forbidden {
                    assert!(!v.contains(f), "{sql} answers {v:?}, which holds {f:?}");
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} of {} queries ran", queries.len());
    let temp: Vec<String> = simple_rows(&client.simple_query("SELECT current_setting('temp_directory')").await.unwrap())
        .iter()
        .map(|r| r.get(0).unwrap_or("").to_owned())
        .collect();
    assert_eq!(temp, [""], "current_setting('temp_directory') has no value to show");
}

/// What `serve` logged of its S3 requests and cache so far: (requests, cached files, cached
/// bytes, downloads).
fn s3_stats(server: &Server) -> (u64, u64, u64, u64) {
    (server.stat("requests"), server.stat("files"), server.stat("bytes"), server.stat("downloads"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_lake_is_read_lazily_with_a_bounded_cache_and_conditional_refreshes() {
    use common::emulator::{Emulator, Kind};
    let Some(emu) = Emulator::start(Kind::Ministack) else { return };
    let endpoint = emu.endpoint();
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("TICKERLAKE_ENDPOINT_URL", endpoint.as_str()),
        ("TICKERLAKE_TARGET", "s3-compatible"),
    ];
    let lake = "s3://tickerlake-serve/lake";
    common::tickerlake(lake, &["init"], &env).await.ok();
    common::tickerlake(lake, &["simulate-history", "--hours", "120", "--symbols", "5", "--until", "2025-05-05T23:00:00Z"], &env).await.ok();
    common::tickerlake(lake, &["process"], &env).await.ok();
    let mut logged = env.to_vec();
    logged.push(("RUST_LOG", "tickerlake::serve=debug"));
    let server = Server::start_logged(lake, &["--refresh-secs", "0.5"], &logged).await;
    // Nothing downloaded at start: the manifest only.
    let (requests, files, _, downloads) = s3_stats(&server);
    assert_eq!((files, downloads), (0, 0));
    assert!(requests <= 2, "{requests} requests to start");
    let client = server.client().await;
    let count = |sql: &'static str| {
        let c = &client;
        async move { c.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get::<_, i64>(0) }
    };
    // What the local engine (`tickerlake query`, which downloads the views it reads) answers.
    let want = |sql: &'static str| {
        let env = env.to_vec();
        async move {
            let out = common::tickerlake(lake, &["query", "--format", "csv", sql], &env).await;
            out.ok().stdout.lines().nth(1).unwrap().parse::<i64>().unwrap()
        }
    };
    let one_day = "SELECT count(*) FROM processed WHERE \"date\" = DATE '2025-05-04'";
    let per_day = want(one_day).await;
    assert!(per_day > 0);
    assert_eq!(count(one_day).await, per_day);
    let (_, files, bytes, downloads) = s3_stats(&server);
    assert_eq!((files, downloads), (1, 1), "one partition fetched for a one-day query");
    assert!(bytes > 0);
    // Grafana's shape of filter prunes as well.
    let two_days = "SELECT count(*) FROM processed WHERE \"timestamp\" BETWEEN '2025-05-04T00:00:00Z' AND '2025-05-05T23:59:59Z' AND \"date\" BETWEEN CAST('2025-05-04T00:00:00Z' AS DATE) AND CAST('2025-05-05T23:59:59Z' AS DATE)";
    assert_eq!(count(two_days).await, want(two_days).await);
    assert_eq!(s3_stats(&server).3, 2, "only the next day's partition more");
    // Nothing changed: a refresh is one conditional GET of the manifest, nothing else.
    let before = s3_stats(&server).0;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(count(one_day).await, per_day);
    assert_eq!(s3_stats(&server).0 - before, 1, "one request per refresh while the lake is unchanged");
    // A new hourly commit is seen on the next refresh; a whole-range query then fetches each
    // partition not fetched yet, once.
    let hour = |until: &'static str| {
        let env = env.to_vec();
        async move {
            common::tickerlake(lake, &["simulate-history", "--hours", "1", "--symbols", "5", "--until", until], &env).await.ok();
            common::tickerlake(lake, &["process"], &env).await.ok();
        }
    };
    hour("2025-05-06T00:00:00Z").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(count("SELECT count(*) FROM processed").await, want("SELECT count(*) FROM processed").await);
    let (_, files, _, downloads) = s3_stats(&server);
    assert_eq!(files, 6, "every partition once: 2025-05-01..06");
    assert_eq!(downloads, 6, "the two fetched before were still named; the four others fetched once");
    // The next hour rewrites 2025-05-06: the version no manifest names leaves the cache.
    hour("2025-05-06T01:00:00Z").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let last_day = "SELECT count(*) FROM processed WHERE \"date\" = DATE '2025-05-06'";
    assert_eq!(count(last_day).await, want(last_day).await);
    let (_, files, _, downloads) = s3_stats(&server);
    assert_eq!((files, downloads), (6, 7), "the new version replaced the old one");
    // raw and quarantine are read whole when a query names them.
    assert_eq!(count("SELECT count(*) FROM raw").await, want("SELECT count(*) FROM raw").await);
    // A bounded cache: a second server allowed about two partitions' bytes keeps at most that,
    // evicting the least recently used; a query needing more is refused, saying what to do.
    let per_partition = bytes;
    let budget = (per_partition * 5 / 2).to_string();
    let small = Server::start_logged(lake, &["--cache-size", &budget], &logged).await;
    let c = small.client().await;
    for day in ["2025-05-01", "2025-05-02", "2025-05-03", "2025-05-04"] {
        let n: i64 = c.query_one(&format!("SELECT count(*) FROM processed WHERE \"date\" = DATE '{day}'"), &[]).await.unwrap().get(0);
        assert_eq!(n, per_day);
        let (_, files, bytes, _) = s3_stats(&small);
        assert!(files <= 2 && bytes <= per_partition * 5 / 2, "{files} files, {bytes} bytes cached");
    }
    let err = c.query_one("SELECT count(*) FROM processed", &[]).await.unwrap_err();
    let (code, message) = sqlstate(&err);
    assert_eq!(code, "53000", "{message}");
    assert!(message.contains("--cache-size"), "{message}");
}
