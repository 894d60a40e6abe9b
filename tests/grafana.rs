//! Grafana as code, by execution (no Grafana server here): the committed provisioning is what the
//! generator makes and its references resolve; every panel, variable and alert query of the
//! PostgreSQL variant, expanded exactly as that datasource expands it, runs through `tickerlake
//! serve` (tokio-postgres's simple protocol like Grafana's pgx, psql for one) with the wire types
//! and values each panel needs; the Athena variant, expanded as the Athena plugin does, answers
//! the same on the local engine (and on ministack's Athena in tests/athena_e2e.rs).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use common::serve::{Server, simple_rows};
use serde_json::Value;
use tickerlake::serve::grafana::{self, ATHENA_UID, Flavor, PG_UID, QueryFile};
use tokio_postgres::types::Type;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn queries() -> Vec<QueryFile> {
    grafana::load(&Path::new(ROOT).join("queries")).unwrap()
}

fn provisioning() -> std::path::PathBuf {
    Path::new(ROOT).join("grafana/provisioning")
}

#[test]
fn committed_provisioning_is_what_the_generator_makes() {
    grafana::write(&Path::new(ROOT).join("queries"), &provisioning(), true)
        .unwrap_or_else(|e| panic!("{e}\n(run `./dev grafana` and commit grafana/provisioning)"));
    // The check can fail: a hand-edited dashboard is reported.
    let copy = tempfile::tempdir().unwrap();
    common::copy_dir(&provisioning(), copy.path());
    let board = copy.path().join("dashboards/postgres/crypto-summary.json");
    let text = std::fs::read_to_string(&board).unwrap().replace("Current price", "Price now");
    std::fs::write(&board, text).unwrap();
    let err = grafana::write(&Path::new(ROOT).join("queries"), copy.path(), true).unwrap_err();
    assert!(err.to_string().contains("crypto-summary.json differs") && err.to_string().contains("./dev grafana"), "{err}");
    // And the command the developer runs says the same.
    let out = std::process::Command::new(common::BIN)
        .args(["grafana-provisioning", "--check", "--out"])
        .arg(copy.path())
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is stale"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `uid → type` of the provisioned datasources (the YAML is hand-written: read its `uid:`/`type:`).
fn datasources() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(provisioning().join("datasources/tickerlake.yaml")).unwrap();
    let mut out = BTreeMap::new();
    let mut kind = None;
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix("type: ") {
            kind = Some(t.to_owned());
        }
        if let Some(u) = line.strip_prefix("uid: ") {
            out.insert(u.to_owned(), kind.take().expect("type before uid"));
        }
    }
    assert!(text.contains("postgresVersion: 1600") && text.contains("database: tickerlake"), "{text}");
    for key in ["defaultRegion:", "catalog: AwsDataCatalog", "database: $TICKERLAKE_GLUE_DATABASE", "workgroup:", "outputLocation:"] {
        assert!(text.contains(key), "the Athena datasource needs {key}");
    }
    out
}

/// Variables a query uses (`$name`, `${name}`, `${name:fmt}`; macros `$__x` excluded).
fn used_variables(sql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in sql.match_indices('$') {
        let rest = &sql[i + 1..];
        let rest = rest.strip_prefix('{').unwrap_or(rest);
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() && !name.starts_with("__") {
            out.insert(name);
        }
    }
    out
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for flavor in ["postgres", "athena"] {
        let dir = provisioning().join("dashboards").join(flavor);
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            out.push((
                format!("{flavor}/{}", p.file_name().unwrap().to_string_lossy()),
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn provisioning_references_resolve() {
    let ds = datasources();
    assert_eq!(ds.get(PG_UID).map(String::as_str), Some("grafana-postgresql-datasource"));
    assert_eq!(ds.get(ATHENA_UID).map(String::as_str), Some("grafana-athena-datasource"));
    let provider = std::fs::read_to_string(provisioning().join("dashboards/tickerlake.yaml")).unwrap();
    for key in ["apiVersion: 1", "type: file", "foldersFromFilesStructure: true", "path: /etc/grafana/provisioning/dashboards"] {
        assert!(provider.contains(key), "provider lacks {key}");
    }

    let boards = dashboards();
    let titles: BTreeSet<String> = boards.iter().map(|(_, b)| b["title"].as_str().unwrap().to_owned()).collect();
    for t in ["Crypto Summary", "Crypto Volatility", "Pipeline health"] {
        assert!(titles.contains(t) && titles.contains(&format!("{t} (Athena)")), "{titles:?}");
    }
    let mut uids = BTreeSet::new();
    for (file, board) in &boards {
        assert!(uids.insert(board["uid"].as_str().unwrap().to_owned()), "{file}: duplicate uid");
        assert!(board["uid"].as_str().unwrap().len() <= 40);
        let flavor_uid = if file.starts_with("postgres/") { PG_UID } else { ATHENA_UID };
        let defined: BTreeSet<String> =
            board["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap().to_owned()).collect();
        for v in board["templating"]["list"].as_array().unwrap() {
            assert_eq!(v["datasource"]["uid"], flavor_uid, "{file}: variable datasource");
        }
        let panels = board["panels"].as_array().unwrap();
        assert!(!panels.is_empty(), "{file}");
        for p in panels {
            let title = p["title"].as_str().unwrap();
            assert!(["gauge", "stat", "barchart", "timeseries"].contains(&p["type"].as_str().unwrap()), "{file}: {title}");
            assert_eq!(p["datasource"]["uid"], flavor_uid, "{file}: {title}");
            for t in p["targets"].as_array().unwrap() {
                let uid = t["datasource"]["uid"].as_str().unwrap();
                assert!(ds.contains_key(uid), "{file}: {title} uses datasource {uid}, which is not provisioned");
                let sql = t["rawSql"].as_str().or(t["rawSQL"].as_str()).unwrap();
                let used = used_variables(sql);
                assert!(used.is_subset(&defined), "{file}: {title} uses {used:?}, the dashboard defines {defined:?}");
                let ts = t["format"] == "time_series" || t["format"] == 0;
                if ts {
                    // The time column: aliased, or the snapshots rollup's own `time`.
                    assert!(
                        (sql.contains("AS \"time\"") || sql.contains("SELECT \"time\"")) && sql.contains("ORDER BY \"time\""),
                        "{file}: {title} is a time series without an ordered time column"
                    );
                }
                if file.starts_with("athena/") {
                    assert!(
                        !sql.contains("$__timeFilter") && !sql.contains(":sqlstring"),
                        "{file}: {title}: the Athena variant must not use them: {sql}"
                    );
                    assert!(t["format"].is_number());
                } else {
                    assert!(sql.contains("$__timeFilter(") || sql.contains("quarantine"), "{file}: {title} filters time");
                }
                // Every date partition read is pruned to the range: with BETWEEN, or (panels on a
                // rollup) whole days inside the range and its first and last day.
                let whole_days = sql.contains("\"date\" > CAST($__timeFrom() AS DATE) AND \"date\" < CAST($__timeTo() AS DATE)")
                    && sql.contains("\"date\" IN (CAST($__timeFrom() AS DATE), CAST($__timeTo() AS DATE))");
                assert!(
                    sql.contains("\"date\" BETWEEN CAST($__timeFrom() AS DATE)") || sql.contains("day BETWEEN") || whole_days,
                    "{file}: {title} prunes by date"
                );
            }
        }
    }
    let summary = &boards.iter().find(|(f, _)| f == "postgres/crypto-summary.json").unwrap().1;
    let kinds: Vec<(&str, &str)> =
        summary["panels"].as_array().unwrap().iter().map(|p| (p["type"].as_str().unwrap(), p["title"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        [
            ("gauge", "Current price"),
            ("stat", "Max price"),
            ("stat", "Min price"),
            ("stat", "Variation"),
            ("timeseries", "Price and moving average"),
            ("barchart", "Volatility per day (standard deviation of the hourly % change)")
        ]
    );
    assert_eq!(summary["templating"]["list"][0]["name"], "symbol");

    // Alert rules: one group per datasource; conditions and expressions refer to real queries.
    let rules = grafana::alert_rules(&queries()).unwrap();
    let groups = rules["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let mut rule_uids = BTreeSet::new();
    for g in groups {
        let rules = g["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2, "price move and freshness on each datasource");
        for r in rules {
            let uid = r["uid"].as_str().unwrap();
            assert!(uid.len() <= 40 && rule_uids.insert(uid.to_owned()), "{uid}");
            let refs: BTreeSet<&str> = r["data"].as_array().unwrap().iter().map(|d| d["refId"].as_str().unwrap()).collect();
            assert!(refs.contains(r["condition"].as_str().unwrap()), "{uid}: condition refers to no query");
            for d in r["data"].as_array().unwrap() {
                let dsuid = d["datasourceUid"].as_str().unwrap();
                assert!(dsuid == "__expr__" || ds.contains_key(dsuid), "{uid}: {dsuid}");
                if let Some(e) = d["model"]["expression"].as_str() {
                    assert!(refs.contains(e), "{uid}: expression {e} refers to no query");
                }
                if dsuid != "__expr__" {
                    let sql = d["model"]["rawSql"].as_str().or(d["model"]["rawSQL"].as_str()).unwrap();
                    assert!(used_variables(sql).is_empty(), "{uid}: alert queries cannot use dashboard variables");
                    assert!(d["relativeTimeRange"]["from"].as_u64().unwrap() > 0);
                }
            }
            let threshold = r["data"].as_array().unwrap().iter().find(|d| d["model"]["type"] == "threshold").unwrap();
            assert!(["gt", "lt"].contains(&threshold["model"]["conditions"][0]["evaluator"]["type"].as_str().unwrap()));
            assert!(
                !r["annotations"]["summary"].as_str().unwrap().replace("$$", "").contains('$'),
                "{uid}: a single $ would be env-expanded"
            );
        }
    }
    // The committed YAML parses as YAML (when python3-yaml is around to say so).
    for f in ["alerting/tickerlake-rules.yaml", "datasources/tickerlake.yaml", "dashboards/tickerlake.yaml"] {
        let path = provisioning().join(f);
        if let Ok(out) =
            std::process::Command::new("python3").args(["-c", "import sys, yaml; yaml.safe_load(open(sys.argv[1]))"]).arg(&path).output()
            && !String::from_utf8_lossy(&out.stderr).contains("No module named 'yaml'")
        {
            assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// The lake the execution tests serve: 72 hours of 20 simulated symbols, and one raw snapshot
/// with a row `process` quarantines.
async fn lake() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().to_str().unwrap();
    common::tickerlake(lake, &["simulate-history", "--hours", "72", "--symbols", "20", "--until", common::serve::UNTIL], &[]).await.ok();
    common::write_raw(
        dir.path(),
        "raw_crypto_prices_20250502T0530.csv",
        &common::csv(&[
            ("BTCUSDT", "not-a-price", "2025-05-02 05:30:00.000000+00:00"),
            ("ETHUSDT", "1.5", "2025-05-02 05:30:00.000000+00:00"),
        ]),
    );
    common::tickerlake(lake, &["process"], &[]).await.ok();
    dir
}

fn range() -> (DateTime<Utc>, DateTime<Utc>) {
    ("2025-05-01T00:00:00Z".parse().unwrap(), "2025-05-03T23:59:59.999Z".parse().unwrap())
}

fn vars() -> BTreeMap<String, String> {
    BTreeMap::from([("symbol".to_owned(), "BTCUSDT".to_owned())])
}

/// The time range Grafana gives a query: the dashboard's, or an alert rule's relative one.
fn range_for(f: &QueryFile) -> (DateTime<Utc>, DateTime<Utc>) {
    let (from, to) = range();
    match f.get("range") {
        Some(secs) if f.get("alert").is_some() => (to - chrono::TimeDelta::seconds(secs.parse().unwrap()), to),
        _ => (from, to),
    }
}

/// The Grafana queries (panels, variables, alerts) of one datasource variant.
fn grafana_queries(flavor: Flavor) -> Vec<QueryFile> {
    queries().into_iter().filter(|f| (f.get("dashboard").is_some() || f.get("alert").is_some()) && f.is_for(flavor)).collect()
}

const KNOWN: [Type; 12] = [
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::NUMERIC,
    Type::TEXT,
    Type::VARCHAR,
    Type::BOOL,
    Type::DATE,
    Type::TIMESTAMP,
    Type::TIMESTAMPTZ,
];

fn num(s: Option<&str>) -> f64 {
    s.unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgres_panel_variable_and_alert_runs_through_serve() {
    let dir = lake().await;
    let rows = common::processed_rows(dir.path());
    let (from, to) = range();
    let in_range: Vec<&common::Row> =
        rows.iter().filter(|r| r.ts_us >= from.timestamp_micros() && r.ts_us <= to.timestamp_micros()).collect();
    let btc: Vec<&&common::Row> = in_range.iter().filter(|r| r.symbol == "BTCUSDT").collect();
    let server = Server::start(dir.path(), &[], &[]).await;
    let client = server.client().await;
    let files = grafana_queries(Flavor::Postgres);
    assert!(files.len() >= 12, "panels, the variable and the alerts: {}", files.len());
    for f in &files {
        let (from, to) = range_for(f);
        let sql = grafana::expand(&grafana::adapt(&f.sql, Flavor::Postgres), Flavor::Postgres, from, to, &vars()).unwrap();
        // Grafana's pgx sends panel queries in the simple protocol and reads text.
        let msgs = client.simple_query(&sql).await.unwrap_or_else(|e| panic!("{}: {e}\n{sql}", f.name));
        let got = simple_rows(&msgs);
        assert!(!got.is_empty(), "{}: no rows\n{sql}", f.name);
        // The wire types: all known to pgx (one unknown OID fails the whole panel).
        let stmt = client.prepare(&sql).await.unwrap();
        for c in stmt.columns() {
            assert!(KNOWN.contains(c.type_()), "{}: column {} has type {}", f.name, c.name(), c.type_());
        }
        let col =
            |name: &str| stmt.columns().iter().position(|c| c.name() == name).unwrap_or_else(|| panic!("{}: no column {name}", f.name));
        if f.get("format") == Some("time_series") {
            let t = col("time");
            assert!([Type::TIMESTAMP, Type::TIMESTAMPTZ].contains(stmt.columns()[t].type_()), "{}", f.name);
            let times: Vec<&str> = got.iter().map(|r| r.get(t).unwrap()).collect();
            assert!(times.windows(2).all(|w| w[0] < w[1]), "{}: time must ascend: {times:?}", f.name);
        }
        let latest_btc = btc.iter().max_by_key(|r| r.ts_us).unwrap();
        match f.name.as_str() {
            "summary_current_price.sql" => {
                assert_eq!(got.len(), 1);
                assert_eq!(num(got[0].get(col("price"))), latest_btc.price, "the gauge shows the latest price");
                // psql reads the same.
                let (code, out, err) = server.psql(&[&sql], &["-tA"]).await;
                assert_eq!((code, out.trim().parse::<f64>().unwrap()), (Some(0), latest_btc.price), "{err}");
            }
            "summary_max_price.sql" => assert_eq!(num(got[0].get(0)), btc.iter().map(|r| r.price).fold(f64::MIN, f64::max)),
            "summary_min_price.sql" => assert_eq!(num(got[0].get(0)), btc.iter().map(|r| r.price).fold(f64::MAX, f64::min)),
            "summary_percent_change.sql" => {
                // From the first to the last price of the range, in %.
                let first = btc.iter().min_by_key(|r| r.ts_us).unwrap().price;
                let want = (latest_btc.price - first) / first * 100.0;
                assert_eq!(got.len(), 1);
                let v = num(got[0].get(col("variation")));
                assert!((v - want).abs() <= want.abs() * 1e-12, "variation {v}, want {want}");
                assert!(want != 0.0, "the simulated walk moved over the range");
            }
            "summary_price_moving_average.sql" => {
                assert_eq!(got.len(), btc.len());
                assert_eq!(num(got.last().unwrap().get(col("moving_avg"))), latest_btc.moving_avg);
            }
            "summary_volatility.sql" => {
                assert_eq!(got.iter().map(|r| r.get(0).unwrap()).collect::<Vec<_>>(), ["2025-05-01", "2025-05-02", "2025-05-03"])
            }
            "symbols.sql" => {
                let want: BTreeSet<&str> = rows.iter().map(|r| r.symbol.as_str()).collect();
                assert_eq!(got.iter().map(|r| r.get(0).unwrap()).collect::<Vec<_>>(), want.into_iter().collect::<Vec<_>>());
            }
            "volatility_top10.sql" => {
                let mut changes: BTreeMap<&str, usize> = BTreeMap::new();
                for r in in_range.iter().filter(|r| r.price_change_pct.is_some()) {
                    *changes.entry(r.symbol.as_str()).or_default() += 1;
                }
                assert_eq!(got.len(), changes.values().filter(|n| **n > 1).count().min(10));
                let v: Vec<f64> = got.iter().map(|r| num(r.get(1))).collect();
                assert!(v.windows(2).all(|w| w[0] >= w[1]), "{v:?}");
            }
            "health_latest_snapshot.sql" => assert!(got[0].get(0).unwrap().starts_with("2025-05-03 23:00:"), "{:?}", got[0].get(0)),
            "health_snapshots_per_day.sql" => {
                // 72 hourly snapshots and the one at 05:30, over three days.
                let per_day: Vec<f64> = got.iter().map(|r| num(r.get(1))).collect();
                assert_eq!(per_day, [24.0, 25.0, 24.0]);
            }
            "health_symbols_per_snapshot.sql" => {
                // One point per snapshot: the 72 hourly ones and the 05:30 one (one kept row).
                assert_eq!(got.len(), 73);
                let mut per_snapshot: BTreeMap<i64, f64> = BTreeMap::new();
                for r in &in_range {
                    *per_snapshot.entry(r.ts_us).or_default() += 1.0;
                }
                let want: Vec<f64> = per_snapshot.values().copied().collect();
                assert_eq!(got.iter().map(|r| num(r.get(1))).collect::<Vec<_>>(), want);
                assert!(got.iter().any(|r| r.get(0).unwrap().starts_with("2025-05-02 05:30:00") && num(r.get(1)) == 1.0));
            }
            "health_quarantined_per_day.sql" => {
                assert_eq!(got.len(), 1, "one day had quarantined rows");
                assert!(got[0].get(0).unwrap().starts_with("2025-05-02 00:00:00"), "{:?}", got[0].get(0));
                assert!(num(got[0].get(1)) >= 1.0);
            }
            "alert_price_move.sql" => {
                let symbols: BTreeSet<&str> = got.iter().map(|r| r.get(0).unwrap()).collect();
                assert_eq!(symbols.len(), got.len(), "one row per symbol (a series per label)");
                assert!(got.iter().all(|r| r.get(1).is_none_or(|v| v.parse::<f64>().unwrap() >= 0.0)));
            }
            "alert_freshness.sql" => assert!(num(got[0].get(0)) > 120.0, "data from 2025 is stale"),
            other => panic!("{other}: a new Grafana query needs its assertions here"),
        }
    }
}

/// Comparable text of a value: numbers to 9 significant digits, timestamps without trailing zeros.
fn norm(v: &str) -> String {
    if let Ok(n) = v.parse::<f64>() {
        return format!("{n:.9e}");
    }
    if v.len() >= 19 && v.as_bytes()[10] == b' ' && v.contains('.') {
        return v.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    v.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_athena_variant_answers_like_the_postgres_one() {
    // The Athena plugin's expansion (TIMESTAMP literals, '$symbol' quoting), run by the local
    // engine; tests/athena_e2e.rs runs the same expansion on ministack's Athena.
    let dir = lake().await;
    let lake = dir.path().to_str().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    let client = server.client().await;
    let files = grafana_queries(Flavor::Athena);
    assert!(files.iter().all(|f| f.name != "health_quarantined_per_day.sql"), "Glue has no quarantine table");
    for f in files.iter().filter(|f| !f.sql.contains("current_timestamp")) {
        let (from, to) = range_for(f);
        let athena_sql = grafana::expand(&grafana::adapt(&f.sql, Flavor::Athena), Flavor::Athena, from, to, &vars()).unwrap();
        assert!(!athena_sql.contains('$'), "{}: {athena_sql}", f.name);
        // The hourly rows filter "timestamp", the snapshots rollup its "time".
        assert!(
            !f.sql.contains("$__timeFilter")
                || athena_sql.contains("\"timestamp\" BETWEEN TIMESTAMP '2025-05-0")
                || athena_sql.contains("\"time\" BETWEEN TIMESTAMP '2025-05-0"),
            "{}: {athena_sql}",
            f.name
        );
        let out = common::tickerlake(lake, &["query", "--format", "csv", &athena_sql], &[]).await;
        out.ok();
        let mut lines = out.stdout.lines();
        lines.next();
        let local: Vec<Vec<String>> = lines.map(|l| l.split(',').map(norm).collect()).collect();
        let pg_sql = grafana::expand(&f.sql, Flavor::Postgres, from, to, &vars()).unwrap();
        let msgs = client.simple_query(&pg_sql).await.unwrap();
        let pg: Vec<Vec<String>> =
            simple_rows(&msgs).iter().map(|r| (0..r.len()).map(|i| norm(r.get(i).unwrap_or(""))).collect()).collect();
        assert!(!pg.is_empty(), "{}", f.name);
        assert_eq!(local, pg, "{}: the variants disagree\nathena: {athena_sql}\npostgres: {pg_sql}", f.name);
    }
}
