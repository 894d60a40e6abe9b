//! The dashboards read the rollups, and answer as they did when every panel read the hourly rows:
//! each panel query of `queries/`, expanded as each datasource it is for expands it, against the
//! hourly definition it replaced, over ranges that start and end mid-day, inside one day, on day
//! boundaries, across whole months (the monthly rollup) and on month boundaries, and over the
//! whole lake; numbers to 9 significant digits (the rollups sum in
//! another order). The price series switches to one point per day beyond 7 days: checked as such.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use tickerlake::serve::grafana::{self, Flavor};

/// The top 10 as it was: the reference of both its variants (PostgreSQL's reads `monthly`, Athena's
/// `daily`).
const TOP10_HOURLY: &str = "SELECT symbol, stddev(price_change_pct) AS volatility FROM processed WHERE $__timeFilter(\"timestamp\")
     AND \"date\" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
   GROUP BY symbol HAVING count(price_change_pct) > 1 ORDER BY volatility DESC, symbol LIMIT 10";

/// Each panel's SQL as it was, reading the hourly rows (`processed`): the reference.
const HOURLY: [(&str, &str); 11] = [
    (
        "summary_percent_change.sql",
        "SELECT (max_by(price, \"timestamp\") - min_by(price, \"timestamp\")) / NULLIF(min_by(price, \"timestamp\"), 0) * 100 AS variation
         FROM processed WHERE symbol = ${symbol:sqlstring} AND $__timeFilter(\"timestamp\")
           AND \"date\" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)",
    ),
    (
        "summary_max_price.sql",
        "SELECT max(price) AS max_price FROM processed WHERE symbol = ${symbol:sqlstring} AND $__timeFilter(\"timestamp\")
           AND \"date\" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)",
    ),
    (
        "summary_min_price.sql",
        "SELECT min(price) AS min_price FROM processed WHERE symbol = ${symbol:sqlstring} AND $__timeFilter(\"timestamp\")
           AND \"date\" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)",
    ),
    (
        "summary_current_price.sql",
        "SELECT max_by(price, \"timestamp\") AS price FROM processed WHERE symbol = ${symbol:sqlstring} AND $__timeFilter(\"timestamp\")
           AND \"date\" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)",
    ),
    (
        "summary_volatility.sql",
        "SELECT CAST(\"date\" AS VARCHAR) AS day, stddev(price_change_pct) AS volatility FROM processed
         WHERE symbol = ${symbol:sqlstring} AND $__timeFilter(\"timestamp\")
           AND \"date\" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
         GROUP BY \"date\" ORDER BY \"date\"",
    ),
    (
        "summary_price_moving_average.sql",
        "SELECT \"timestamp\" AS \"time\", price, moving_avg FROM processed WHERE symbol = ${symbol:sqlstring} AND $__timeFilter(\"timestamp\")
           AND \"date\" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE) ORDER BY \"time\"",
    ),
    ("volatility_top10.sql", TOP10_HOURLY),
    ("volatility_top10.athena.sql", TOP10_HOURLY),
    (
        "health_latest_snapshot.sql",
        "SELECT max(\"timestamp\") AS latest_snapshot FROM processed WHERE $__timeFilter(\"timestamp\")
           AND \"date\" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)",
    ),
    (
        "health_snapshots_per_day.sql",
        "SELECT CAST(\"date\" AS TIMESTAMP) AS \"time\", count(DISTINCT \"timestamp\") AS snapshots FROM processed
         WHERE $__timeFilter(\"timestamp\") AND \"date\" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
         GROUP BY \"date\" ORDER BY \"time\"",
    ),
    (
        "health_symbols_per_snapshot.sql",
        "SELECT \"timestamp\" AS \"time\", count(*) AS symbols FROM processed WHERE $__timeFilter(\"timestamp\")
           AND \"date\" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE) GROUP BY \"timestamp\" ORDER BY \"time\"",
    ),
];

/// Rows of a JSON result, numbers to 9 significant digits, timestamps as printed.
fn rows(json: &str) -> Vec<BTreeMap<String, String>> {
    let rows: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    rows.into_iter()
        .map(|row| {
            row.into_iter()
                .map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::Number(n) => format!("{:.9e}", n.as_f64().unwrap()),
                        other => other.to_string(),
                    };
                    (k, text)
                })
                .collect()
        })
        .collect()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_panels_answer_as_the_hourly_ones() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().to_str().unwrap().to_owned();
    // From 2025-03-04 12:00: March in part, April whole, May in part.
    common::tickerlake(&lake, &["simulate-history", "--hours", "1500", "--symbols", "16", "--until", "2025-05-05T23:00:00Z"], &[])
        .await
        .ok();
    // As real history has them: ETHUSDT delisted on 2025-04-20 at 12:00 (no rows after), SOLUSDT
    // not trading from 2025-04-05 to 2025-04-08 (a gap of whole days inside a month).
    let gone = |symbol: &str, ts: &str| {
        (symbol == "ETHUSDT" && ts >= "2025-04-20 12") || (symbol == "SOLUSDT" && ("2025-04-05".."2025-04-09").contains(&ts))
    };
    let mut dropped = 0;
    for entry in std::fs::read_dir(dir.path().join("raw")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                !gone(fields[0], fields.get(2).copied().unwrap_or(""))
            })
            .collect();
        dropped += text.lines().count() - kept.len();
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    }
    assert!(dropped > 24 * 15, "{dropped} rows dropped");
    common::tickerlake(&lake, &["process"], &[]).await.ok();
    let queries = grafana::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("queries")).unwrap();
    let ranges = [
        ("mid-day to mid-day", at("2025-05-01T05:17:00Z"), at("2025-05-04T19:42:30Z")),
        ("inside one day", at("2025-05-02T03:00:00Z"), at("2025-05-02T20:00:00Z")),
        ("day boundaries", at("2025-05-02T00:00:00Z"), at("2025-05-04T00:00:00Z")),
        ("a whole month and parts of two", at("2025-03-10T05:17:00Z"), at("2025-05-03T19:42:30Z")),
        ("month boundaries", at("2025-04-01T00:00:00Z"), at("2025-05-01T00:00:00Z")),
        ("from a month's last day", at("2025-03-31T12:00:00Z"), at("2025-05-01T00:00:00Z")),
        // Parts of two months and no whole one (month_to_date on both sides); the first part
        // starts before the first snapshot (the lookup's day has no rows of its own).
        ("two months' parts", at("2025-03-01T10:00:00Z"), at("2025-04-10T05:00:00Z")),
        // From inside SOLUSDT's gap, and from before and after ETHUSDT's last day.
        ("from inside a gap", at("2025-04-06T10:00:00Z"), at("2025-05-02T05:00:00Z")),
        ("across a delisting", at("2025-04-15T12:00:00Z"), at("2025-05-03T19:00:00Z")),
        ("after a delisting", at("2025-04-22T12:00:00Z"), at("2025-05-03T19:00:00Z")),
        ("the whole lake, and more", at("2025-02-20T00:00:00Z"), at("2025-05-09T00:00:00Z")),
    ];
    let vars = BTreeMap::from([("symbol".to_owned(), "BTCUSDT".to_owned())]);
    let mut compared = 0;
    for (name, hourly) in HOURLY {
        let file = queries.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("{name} is not in queries/"));
        assert!(["FROM daily", "FROM monthly", "FROM snapshots"].iter().any(|t| file.sql.contains(t)), "{name} reads a rollup");
        for flavor in Flavor::ALL.into_iter().filter(|f| file.is_for(*f)) {
            for (label, from, to) in ranges {
                let expand = |sql: &str| grafana::expand(&grafana::adapt(sql, flavor), flavor, from, to, &vars).unwrap();
                let new = common::tickerlake(&lake, &["query", "--format", "json", &expand(&file.sql)], &[]).await;
                let old = common::tickerlake(&lake, &["query", "--format", "json", &expand(hourly)], &[]).await;
                let (new, old) = (rows(&new.ok().stdout), rows(&old.ok().stdout));
                if name == "summary_price_moving_average.sql" && (to - from).num_days() > 7 {
                    // One point per day: each day's last hourly point.
                    let days: std::collections::BTreeSet<String> = old.iter().map(|r| r["time"][1..11].to_owned()).collect();
                    assert_eq!(new.len(), days.len(), "{name} {flavor:?} {label}: one point per day");
                    for point in &new {
                        let last = old.iter().rfind(|r| r["time"][1..11] == point["time"][1..11]).unwrap();
                        assert_eq!(point, last, "{name} {flavor:?} {label}: the day's last point");
                    }
                } else {
                    assert!(!old.is_empty() || label == "the whole lake, and more", "{name} {label}: the reference has rows");
                    assert_eq!(new, old, "{name} {flavor:?} {label}");
                }
                compared += 1;
            }
        }
    }
    // Every file for both datasources but the two variants of the top 10, each for one.
    assert_eq!(compared, (HOURLY.len() * 2 - 2) * ranges.len());
}
