//! The lake on "AWS", end to end against emulator processes: simulator history → S3 → process →
//! catalog (Glue) → `query --engine athena` on ministack (Athena runs real SQL there), compared
//! with the local engine for every shipped query; and Glue partition semantics on moto (ministack
//! ignores registered partitions: it reads paths).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::emulator::{Emulator, Kind, s3_client};
use common::{Out, tickerlake};
use tickerlake::catalog::{Catalog, CatalogOptions, PartitionMode};
use tickerlake::lake::manifest::{Manifest, PartitionEntry};
use tickerlake::lake::s3::{AwsOptions, Target};

fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    common::emulator::aws_env(endpoint, "s3-compatible", 10)
}

async fn tl(lake: &str, args: &[&str], env: &[(&'static str, String)]) -> Out {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    tickerlake(lake, args, &env).await
}

/// A JSON result as comparable rows: numbers rounded to 9 significant digits (two engines may sum
/// in another order), timestamps without trailing zeros in the fraction (ministack pads to micros).
fn normalise(json: &str) -> Vec<BTreeMap<String, String>> {
    let rows: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    rows.into_iter()
        .map(|row| {
            row.into_iter()
                .map(|(k, v)| {
                    // ministack labels some DuckDB result types (BIGINT, max_by's) "varchar" where
                    // real Athena says "bigint"/"double", so numbers may arrive as strings: compare
                    // them as numbers (typing from the metadata is unit-tested in query::athena).
                    let v = match v {
                        serde_json::Value::String(s) if s.parse::<f64>().is_ok() => serde_json::json!(s.parse::<f64>().unwrap()),
                        other => other,
                    };
                    let text = match v {
                        serde_json::Value::Number(n) => format!("{:.9e}", n.as_f64().unwrap()),
                        serde_json::Value::String(s) if s.len() >= 19 && s.as_bytes()[10] == b' ' && s.contains('.') => {
                            s.trim_end_matches('0').trim_end_matches('.').to_owned()
                        }
                        other => other.to_string(),
                    };
                    (k, text)
                })
                .collect()
        })
        .collect()
}

/// A shipped query as Athena receives it: Grafana's panel, variable and alert queries expanded
/// exactly as the Athena plugin expands their dashboard's Athena variant (a range over the test
/// lake's days, `$symbol` = BTCUSDT); None for a query that has no Athena variant.
fn grafana_athena(name: &str, text: &str) -> Option<String> {
    use tickerlake::serve::grafana::{self, Flavor};
    let f = grafana::parse(name, text);
    if !f.is_for(Flavor::Athena) {
        return None;
    }
    if !text.contains('$') {
        return Some(text.to_owned());
    }
    let (from, to) = ("2025-05-08T00:00:00Z".parse().unwrap(), "2025-05-10T23:59:59Z".parse().unwrap());
    let vars = BTreeMap::from([("symbol".to_owned(), "BTCUSDT".to_owned())]);
    Some(grafana::expand(&grafana::adapt(&f.sql, Flavor::Athena), Flavor::Athena, from, to, &vars).unwrap())
}

/// Every shipped query, plus partition filters and the raw table, on both engines.
async fn assert_engines_agree(lake: &str, env: &[(&'static str, String)]) {
    let mut queries: Vec<(String, String)> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/queries"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .filter_map(|(name, text)| grafana_athena(&name, &text).map(|sql| (name, sql)))
        .collect();
    assert!(queries.len() >= 5, "the shipped queries are found");
    for (name, sql) in [
        ("date equality", "SELECT count(*) AS n, min(symbol) AS first FROM processed WHERE date = DATE '2025-05-08'"),
        (
            "date range",
            "SELECT date, count(*) AS n FROM processed WHERE date BETWEEN DATE '2025-05-08' AND DATE '2025-05-09' GROUP BY date ORDER BY date",
        ),
        ("date lower bound", "SELECT count(*) AS n FROM processed WHERE date >= DATE '2025-05-09'"),
        (
            "raw table",
            "SELECT count(*) AS n, count(price) AS priced, min(\"timestamp\") AS first_text, max(price) AS top FROM raw WHERE symbol LIKE '%USDT'",
        ),
    ] {
        queries.push((name.to_owned(), sql.to_owned()));
    }
    for (name, sql) in &queries {
        let local = tl(lake, &["query", "--format", "json", sql], env).await;
        let athena = tl(lake, &["query", "--engine", "athena", "--format", "json", sql], env).await;
        local.ok();
        athena.ok();
        assert!(athena.stderr.contains("Athena scanned"), "data scanned is reported: {}", athena.stderr);
        if sql.contains("current_timestamp") {
            // A clock-relative answer (the freshness alert): both engines ran it; values move.
            continue;
        }
        let (l, a) = (normalise(&local.stdout), normalise(&athena.stdout));
        assert!(!l.is_empty(), "{name}: no rows locally");
        assert_eq!(l, a, "{name}: the engines disagree\nlocal: {}\nathena: {}", local.stdout, athena.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_then_athena_answers_like_the_local_engine() {
    let Some(emu) = Emulator::start(Kind::Ministack) else { return };
    let env = aws_env(&emu.endpoint());
    let lake = "s3://tickerlake-athena/crypto";
    tl(lake, &["init"], &env).await.ok();
    tl(lake, &["simulate-history", "--hours", "40", "--symbols", "12", "--until", "2025-05-09T15:00:00Z"], &env).await.ok();
    // A migrated bucket: the original pipeline's Spark output for a date tickerlake writes. Left
    // there, Athena would count its rows beside tickerlake's; the run moves it aside.
    let spark = "crypto/processed/date=2025-05-08/part-00000-7d1c3b0e-2f4a-4f7e-9a43-5b0f3c1e8d21-c000.snappy.parquet";
    let client = s3_client(&emu.endpoint());
    client.put_object().bucket("tickerlake-athena").key(spark).body(spark_parquet().into()).send().await.unwrap();
    let out = tl(lake, &["process"], &env).await;
    assert!(out.ok().stdout.contains("1 foreign file(s) moved aside"), "{}", out.stdout);
    let moved = client
        .head_object()
        .bucket("tickerlake-athena")
        .key(format!("crypto/_tickerlake/foreign/{}", spark.trim_start_matches("crypto/")))
        .send()
        .await;
    assert!(moved.is_ok(), "the Spark file is kept under _tickerlake/foreign/");

    let first = tl(lake, &["catalog"], &env).await;
    first.ok();
    // Two dates in processed, their month in both rollup tables.
    assert!(
        first.stdout.contains("created table(s) processed, daily, snapshots, raw") && first.stdout.contains("4 partition(s) added"),
        "{}",
        first.stdout
    );
    let again = tl(lake, &["catalog"], &env).await;
    again.ok();
    assert!(
        again.stdout.starts_with("catalog is up to date: nothing changed (4 partition(s) checked"),
        "a re-run is a no-op: {}",
        again.stdout
    );
    assert_engines_agree(lake, &env).await;

    // A late snapshot that rewrites an old date, and a new day, processed with the catalog on:
    // the catalog stays right (the new date registered, the old one already is).
    let late = "s3://tickerlake-athena/crypto/raw/raw_crypto_prices_20250508T0130.csv";
    let body = common::csv(&[("BTCUSDT", "1.50000000", "2025-05-08 01:30:00.000000+00:00")]);
    let key = late.trim_start_matches("s3://tickerlake-athena/");
    client.put_object().bucket("tickerlake-athena").key(key).body(body.into_bytes().into()).send().await.unwrap();
    tl(lake, &["simulate-history", "--hours", "12", "--symbols", "12", "--until", "2025-05-10T03:00:00Z"], &env).await.ok();
    let out = tl(lake, &["--catalog", "glue", "process"], &env).await;
    out.ok();
    assert!(out.stdout.contains("catalog updated") && out.stdout.contains("1 partition(s) added"), "{}", out.stdout);
    assert!(tl(lake, &["catalog"], &env).await.stdout.contains("nothing changed"));
    assert_engines_agree(lake, &env).await;
}

/// A Parquet file of the processed schema, as Spark's job would have written one (one row of a
/// symbol tickerlake never sees).
fn spark_parquet() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spark.parquet");
    let conn = duckdb::Connection::open_in_memory().unwrap();
    conn.execute_batch(&format!(
        "COPY (SELECT 'SPARKUSDT' AS symbol, 1.0::DOUBLE AS price, TIMESTAMP '2025-05-08 00:00:00' AS \"timestamp\",
                      1.0::DOUBLE AS moving_avg, NULL::DOUBLE AS previous_price, NULL::DOUBLE AS price_change_pct)
         TO '{}' (FORMAT parquet)",
        path.display()
    ))
    .unwrap();
    std::fs::read(path).unwrap()
}

/// Cron mode (`run --once`) catches the catalog up: a tick whose Glue update failed leaves a note
/// in the lake, and the next tick reconciles everything even though it has nothing new to
/// process; a rebuild that empties a date deregisters it. On moto (its Glue keeps partitions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_ticks_catch_the_catalog_up_and_deregister_emptied_dates() {
    let Some(emu) = Emulator::start(Kind::Moto) else { return };
    let sim = tickerlake::simulator::Simulator::start(tickerlake::simulator::SimConfig { symbols: 8, seed: 5 }, 0).await.unwrap();
    let env = aws_env(&emu.endpoint());
    let lake = "s3://tickerlake-cron/lake";
    tl(lake, &["init"], &env).await.ok();
    tl(lake, &["simulate-history", "--hours", "30", "--symbols", "8", "--until", "2025-05-09T05:00:00Z"], &env).await.ok();
    let mut glue_down = env.clone();
    glue_down.push(("AWS_ENDPOINT_URL_GLUE", "http://127.0.0.1:9".into()));
    let tick = ["--catalog", "glue", "run", "--once", "--binance-url"];
    let failed = tl(lake, &[&tick[..], &[sim.url().as_str()]].concat(), &glue_down).await;
    failed.failed();
    assert!(failed.stderr.contains("cannot reach the Glue endpoint"), "{}", failed.stderr);
    let client = s3_client(&emu.endpoint());
    assert!(
        client.head_object().bucket("tickerlake-cron").key("lake/_tickerlake/catalog-behind").send().await.is_ok(),
        "the lake remembers"
    );

    // The next tick has nothing new to process (this hour is collected, its raw files processed)…
    let caught_up = tl(lake, &[&tick[..], &[sim.url().as_str()]].concat(), &env).await;
    caught_up.ok();
    assert!(caught_up.stderr.contains("nothing new") || caught_up.stderr.contains("0 snapshot"), "{}", caught_up.stderr);
    // …and reconciles the catalog all the same.
    let glue = aws_sdk_glue::Client::from_conf(
        aws_sdk_glue::Config::builder()
            .behavior_version(aws_sdk_glue::config::BehaviorVersion::latest())
            .region(aws_sdk_glue::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_glue::config::Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(emu.endpoint())
            .build(),
    );
    let dates = tl(lake, &["query", "--format", "csv", "SELECT count(DISTINCT date) AS n FROM processed"], &env).await;
    let n: usize = dates.ok().stdout.lines().nth(1).unwrap().parse().unwrap();
    assert!(n >= 2, "{}", dates.stdout);
    assert_eq!(glue_partitions(&glue, None).await, n, "every committed date registered");
    assert!(client.head_object().bucket("tickerlake-cron").key("lake/_tickerlake/catalog-behind").send().await.is_err(), "and forgotten");

    // Raw files of the first date removed, then a rebuild: that date is deregistered.
    for key in
        client.list_objects_v2().bucket("tickerlake-cron").prefix("lake/raw/raw_crypto_prices_20250508").send().await.unwrap().contents()
    {
        client.delete_object().bucket("tickerlake-cron").key(key.key().unwrap()).send().await.unwrap();
    }
    let rebuilt = tl(lake, &["--catalog", "glue", "process", "--full"], &env).await;
    assert!(rebuilt.ok().stdout.contains("1 removed"), "one date from processed (its month keeps others): {}", rebuilt.stdout);
    assert_eq!(glue_partitions(&glue, None).await, n - 1);
    assert_eq!(glue_partitions(&glue, Some("date = '2025-05-08'")).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_athena_query_and_an_unreachable_glue_are_one_line_errors() {
    let Some(emu) = Emulator::start(Kind::Ministack) else { return };
    let env = aws_env(&emu.endpoint());
    let lake = "s3://tickerlake-athena-errors/x";
    tl(lake, &["init"], &env).await.ok();
    tl(lake, &["simulate-history", "--hours", "3", "--symbols", "4", "--until", "2025-05-09T05:00:00Z"], &env).await.ok();
    tl(lake, &["process"], &env).await.ok();
    tl(lake, &["catalog"], &env).await.ok();
    let bad = tl(lake, &["query", "--engine", "athena", "SELECT nosuchcolumn FROM processed"], &env).await;
    bad.failed();
    let last = bad.stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("error: Athena query ") && last.contains("FAILED"), "{}", bad.stderr);

    let mut unreachable = env.clone();
    unreachable.push(("AWS_ENDPOINT_URL_GLUE", "http://127.0.0.1:9".into()));
    let out = tl(lake, &["catalog"], &unreachable).await;
    out.failed();
    let last = out.stderr.lines().last().unwrap_or("");
    assert!(last.contains("cannot reach the Glue endpoint"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().filter(|l| l.starts_with("error:")).count(), 1);

    let local = tl("./no-such-local-lake", &["catalog"], &env).await;
    assert_eq!(local.code, Some(3), "a local lake cannot be cataloged: {}", local.stderr);
    assert!(local.stderr.contains("not an S3 lake"), "{}", local.stderr);
}

fn manifest_with(dates: impl IntoIterator<Item = String>) -> Manifest {
    let mut m = Manifest::empty();
    for d in dates {
        m.insert_partition(d, PartitionEntry { run_id: "r".into(), rows: 1, published: true, rollups: true });
    }
    m
}

fn days(from: &str, n: i64) -> Vec<String> {
    let start = chrono::NaiveDate::parse_from_str(from, "%Y-%m-%d").unwrap();
    (0..n).map(|i| (start + chrono::TimeDelta::days(i)).to_string()).collect()
}

async fn glue_partitions(client: &aws_sdk_glue::Client, expression: Option<&str>) -> usize {
    let mut n = 0;
    let mut token = None;
    loop {
        let page = client
            .get_partitions()
            .database_name("dbcrypto")
            .table_name("processed")
            .set_expression(expression.map(str::to_owned))
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        n += page.partitions().len();
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return n;
        }
    }
}

/// Partition registration on moto's Glue: chunks past 100, AlreadyExists as success, removal
/// of dates the lake no longer has, projection, and a schema update that keeps partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_partition_semantics_on_moto() {
    let Some(emu) = Emulator::start(Kind::Moto) else { return };
    let aws = AwsOptions {
        target: Target::S3Compatible,
        endpoint_url: Some(emu.endpoint()),
        glue_endpoint: Some(emu.endpoint()),
        athena_endpoint: Some(emu.endpoint()),
        path_style: true,
        default_region: Some("us-east-1".into()),
        dummy_credentials: true,
        lock_ttl: None,
        attempt_timeout: Some(Duration::from_secs(10)),
    };
    let options = CatalogOptions::for_lake("s3://bucket/lake", "dbcrypto", PartitionMode::Register).unwrap();
    let catalog = Catalog::connect(&aws, options.clone()).await;
    let sdk = tickerlake::aws::sdk_config(&aws).await;
    let glue = tickerlake::aws::glue_client(&sdk, &aws);

    let all = days("2025-01-01", 150);
    let report = catalog.sync(&manifest_with(all.clone())).await.unwrap();
    assert!(report.database_created && report.tables_created == ["processed", "daily", "snapshots", "raw"], "{report:?}");
    // 150 dates in processed; their 5 months (January to May) in both rollup tables.
    assert_eq!(report.partitions_added, 150 + 2 * 5, "every date in processed, every month in both rollup tables: {report:?}");
    assert_eq!(glue_partitions(&glue, None).await, 150);
    assert_eq!(glue_partitions(&glue, Some("date >= '2025-05-01'")).await, 30, "expression filters");

    let again = catalog.sync(&manifest_with(all.clone())).await.unwrap();
    assert!(again.is_noop() && again.partitions_unchanged == 150 + 2 * 5, "{again:?}");
    // Registering dates that exist is success, not an error (BatchCreatePartition AlreadyExists).
    let mut more = all.clone();
    more.push("2025-05-31".into());
    let after = catalog.after_commit(&manifest_with(more.clone()), &["2025-05-30".into(), "2025-05-31".into()], &[]).await.unwrap();
    assert_eq!((after.partitions_added, after.partitions_unchanged), (1, 3), "a new date, in a month already there: {after:?}");

    // Dates the lake no longer has are removed (chunks of 25); January keeps its 31st, so its
    // month stays.
    let fewer: Vec<String> = more[30..].to_vec();
    let shrunk = catalog.sync(&manifest_with(fewer.clone())).await.unwrap();
    assert_eq!(shrunk.partitions_removed, 30, "{shrunk:?}");
    assert_eq!(glue_partitions(&glue, None).await, 121);
    // A month with no dates left is removed from the rollup tables.
    let spring: Vec<String> = fewer[1..].to_vec();
    let no_january = catalog.after_commit(&manifest_with(spring.clone()), &[], &["2025-01-31".into()]).await.unwrap();
    assert_eq!(no_january.partitions_removed, 3, "the date, and its month from both rollup tables: {no_january:?}");
    let months = glue.get_partitions().database_name("dbcrypto").table_name("daily").send().await.unwrap();
    let mut months: Vec<String> = months.partitions().iter().map(|p| p.values().join(",")).collect();
    months.sort();
    assert_eq!(months, ["2025-02", "2025-03", "2025-04", "2025-05"]);
    let fewer = spring;

    // A schema change (an old definition without a column) is updated in place, partitions kept.
    let table = glue.get_table().database_name("dbcrypto").name("processed").send().await.unwrap().table.unwrap();
    let mut sd = table.storage_descriptor().unwrap().clone();
    sd.columns = Some(sd.columns().iter().filter(|c| c.name() != "moving_avg").cloned().collect());
    let old = aws_sdk_glue::types::TableInput::builder()
        .name("processed")
        .table_type("EXTERNAL_TABLE")
        .set_parameters(table.parameters().cloned())
        .storage_descriptor(sd)
        .set_partition_keys(Some(table.partition_keys().to_vec()))
        .build()
        .unwrap();
    glue.update_table().database_name("dbcrypto").table_input(old).send().await.unwrap();
    let fixed = catalog.sync(&manifest_with(fewer.clone())).await.unwrap();
    assert_eq!(fixed.tables_updated, ["processed"], "{fixed:?}");
    assert_eq!(glue_partitions(&glue, None).await, 120, "partitions survive the update");
    let cols: Vec<String> = glue
        .get_table()
        .database_name("dbcrypto")
        .name("processed")
        .send()
        .await
        .unwrap()
        .table
        .unwrap()
        .storage_descriptor()
        .unwrap()
        .columns()
        .iter()
        .map(|c| format!("{}:{}", c.name(), c.r#type().unwrap_or("")))
        .collect();
    assert_eq!(
        cols,
        ["symbol:string", "price:double", "timestamp:timestamp", "moving_avg:double", "previous_price:double", "price_change_pct:double"]
    );

    // A rollup table from an older tickerlake (partitioned by date over per-date files, a date
    // registered): redefined by month, the date partition replaced by the months.
    let daily = glue.get_table().database_name("dbcrypto").name("daily").send().await.unwrap().table.unwrap();
    let mut sd = daily.storage_descriptor().unwrap().clone();
    sd.location = Some("s3://bucket/lake/rollups/daily/".into());
    let date_key = aws_sdk_glue::types::Column::builder().name("date").r#type("date").build().unwrap();
    let old = aws_sdk_glue::types::TableInput::builder()
        .name("daily")
        .table_type("EXTERNAL_TABLE")
        .set_parameters(daily.parameters().cloned())
        .storage_descriptor(sd.clone())
        .partition_keys(date_key)
        .build()
        .unwrap();
    glue.update_table().database_name("dbcrypto").table_input(old).send().await.unwrap();
    let old_partition = aws_sdk_glue::types::PartitionInput::builder().values("2025-03-07").storage_descriptor(sd).build();
    glue.create_partition().database_name("dbcrypto").table_name("daily").partition_input(old_partition).send().await.unwrap();
    let migrated = catalog.sync(&manifest_with(fewer.clone())).await.unwrap();
    assert_eq!((migrated.tables_updated.clone(), migrated.partitions_removed), (vec!["daily".to_owned()], 1), "{migrated:?}");
    let daily = glue.get_table().database_name("dbcrypto").name("daily").send().await.unwrap().table.unwrap();
    assert_eq!(daily.partition_keys().iter().map(|k| k.name()).collect::<Vec<_>>(), ["month"]);
    let months = glue.get_partitions().database_name("dbcrypto").table_name("daily").send().await.unwrap();
    assert_eq!(months.partitions().len(), 4, "February to May, and no date: {months:?}");

    // Projection: table properties only, the range starting at the first date.
    let projection = Catalog::connect(&aws, CatalogOptions { partitions: PartitionMode::Projection, ..options }).await;
    let report = projection.sync(&manifest_with(fewer)).await.unwrap();
    assert_eq!(
        (report.tables_updated.clone(), report.partitions_added),
        (vec!["processed".to_owned(), "daily".into(), "snapshots".into()], 0),
        "{report:?}"
    );
    let params =
        glue.get_table().database_name("dbcrypto").name("processed").send().await.unwrap().table.unwrap().parameters().cloned().unwrap();
    assert_eq!(params.get("projection.enabled").map(String::as_str), Some("true"));
    assert_eq!(params.get("projection.date.range").map(String::as_str), Some("2025-02-01,NOW"));
    assert_eq!(params.get("storage.location.template").map(String::as_str), Some("s3://bucket/lake/processed/date=${date}/"));
    let daily =
        glue.get_table().database_name("dbcrypto").name("daily").send().await.unwrap().table.unwrap().parameters().cloned().unwrap();
    assert_eq!(
        ["projection.month.type", "projection.month.format", "projection.month.range", "projection.month.interval.unit"]
            .map(|k| daily.get(k).map(String::as_str)),
        [Some("date"), Some("yyyy-MM"), Some("2025-02,NOW"), Some("MONTHS")]
    );
    assert_eq!(daily.get("storage.location.template").map(String::as_str), Some("s3://bucket/lake/rollups/by_month/daily/month=${month}/"));
    assert!(projection.sync(&manifest_with(days("2025-02-01", 120))).await.unwrap().is_noop());
}
