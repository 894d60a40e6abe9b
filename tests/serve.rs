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
    assert_eq!(tables, ["processed", "quarantine", "raw"]);
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
    assert!(err.contains("read-only: SET statements are refused"), "{err}");
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
