//! Property test of the raw timestamp rule through the real `process` run: a timestamp is valid
//! only when complete, `YYYY-MM-DD HH:MM:SS` ('T' also accepted as the separator) with an optional
//! fraction of 1–9 digits and an optional offset `Z`, `±HH`, `±HHMM` or `±HH:MM` (none = UTC).
//! Generated timestamps and every strict prefix of them go through the engine; each must be kept
//! with the instant a plain-Rust parser computes, or quarantined when that parser refuses it.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, NaiveDate, NaiveTime};
use proptest::prelude::*;
use tickerlake::lake::{Lake, local::LocalStore};
use tickerlake::process::{ProcessOptions, process};

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap());

/// The rule, written plainly: the instant in µs since the epoch (fraction truncated to µs, as
/// the lake stores it) if `s` is a complete, calendar-valid timestamp, None otherwise.
fn reference(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = b.get(from..from + len)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b" T") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0u32;
    if sep(at, b".") {
        let digits = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        nanos = num(at + 1, digits)? * 10u32.pow(9 - digits as u32);
        at += 1 + digits;
    }
    let offset_secs = match &b[at..] {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest.len() {
                2 => (num(at + 1, 2)?, 0),
                4 => (num(at + 1, 2)?, num(at + 3, 2)?),
                5 if rest[2] == b':' => (num(at + 1, 2)?, num(at + 4, 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = NaiveTime::from_hms_opt(hour, minute, second)?;
    Some(date.and_time(time).and_utc().timestamp_micros() + i64::from(nanos / 1000) - offset_secs * 1_000_000)
}

/// Complete timestamps in every accepted form; a few days past the month's end (refused by both).
fn timestamp() -> impl Strategy<Value = String> {
    let offset = prop_oneof![
        2 => Just(String::new()),
        1 => Just("Z".to_owned()),
        1 => (prop::bool::ANY, 0u32..24).prop_map(|(neg, h)| format!("{}{h:02}", if neg { '-' } else { '+' })),
        1 => (prop::bool::ANY, 0u32..24, 0u32..60).prop_map(|(neg, h, m)| format!("{}{h:02}{m:02}", if neg { '-' } else { '+' })),
        3 => (prop::bool::ANY, 0u32..24, 0u32..60).prop_map(|(neg, h, m)| format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' })),
    ];
    let day = prop_oneof![9 => 1u32..=28, 1 => 29u32..=31];
    let sep = prop_oneof![3 => Just(' '), 1 => Just('T')];
    (1900u32..2200, 1u32..=12, day, sep, 0u32..24, 0u32..60, 0u32..60, "[0-9]{0,9}", offset).prop_map(
        |(y, mo, d, sep, h, mi, s, frac, off)| {
            let frac = if frac.is_empty() { frac } else { format!(".{frac}") };
            format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{off}")
        },
    )
}

/// What the lake says about each row's timestamp text, by the row's unique symbol.
#[derive(Debug, PartialEq)]
enum Outcome {
    Kept { ts_us: i64, date: String },
    Quarantined(String),
}

/// Process one raw file of `timestamps` (one row each, symbol `R<i>USDT`) on a fresh local lake.
fn run(timestamps: &[String]) -> BTreeMap<String, Outcome> {
    let dir = tempfile::tempdir().unwrap();
    let lake: Lake = Arc::new(LocalStore::open(dir.path()).unwrap());
    let rows: Vec<(String, &str)> = timestamps.iter().enumerate().map(|(i, ts)| (format!("R{i}USDT"), ts.as_str())).collect();
    let csv = common::csv(&rows.iter().map(|(s, ts)| (s.as_str(), "1.5", *ts)).collect::<Vec<_>>());
    common::write_raw(dir.path(), "raw_crypto_prices_20250508T0300.csv", &csv);
    RT.block_on(process(&lake, &ProcessOptions { full: true, ..ProcessOptions::default() })).unwrap();
    let mut out = BTreeMap::new();
    for r in common::processed_rows(dir.path()) {
        assert!(out.insert(r.symbol.clone(), Outcome::Kept { ts_us: r.ts_us, date: r.date }).is_none(), "{} kept twice", r.symbol);
    }
    let q = dir.path().join("quarantine/raw_crypto_prices_20250508T0300.csv");
    if q.exists() {
        for rec in csv::Reader::from_path(&q).unwrap().records() {
            let rec = rec.unwrap();
            let symbol = rec[3].split(',').next().unwrap().to_owned();
            assert!(out.insert(symbol.clone(), Outcome::Quarantined(rec[2].to_owned())).is_none(), "{symbol} kept and quarantined");
        }
    }
    out
}

fn expected(ts: &str) -> Outcome {
    match reference(ts) {
        Some(us) => Outcome::Kept { ts_us: us, date: DateTime::from_timestamp_micros(us).unwrap().format("%Y-%m-%d").to_string() },
        None if ts.is_empty() => Outcome::Quarantined("missing timestamp".to_owned()),
        None => Outcome::Quarantined("unparsable timestamp".to_owned()),
    }
}

/// Every row is kept or quarantined exactly as the reference says.
fn check(timestamps: &[String]) -> Result<(), TestCaseError> {
    let got = run(timestamps);
    prop_assert_eq!(got.len(), timestamps.len(), "every row is accounted for once");
    for (i, ts) in timestamps.iter().enumerate() {
        prop_assert_eq!(&got[&format!("R{i}USDT")], &expected(ts), "timestamp {:?}", ts);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn complete_timestamps_are_kept_and_their_prefixes_follow_the_rule(stamps in prop::collection::vec(timestamp(), 1..4)) {
        let mut texts = Vec::new();
        for ts in &stamps {
            // The reference is not vacuous: a complete timestamp on a real date parses, and no
            // prefix short of the seconds does.
            let real_date = NaiveDate::from_ymd_opt(ts[0..4].parse().unwrap(), ts[5..7].parse().unwrap(), ts[8..10].parse().unwrap()).is_some();
            prop_assert_eq!(reference(ts).is_some(), real_date, "{:?}", ts);
            for len in 0..ts.len() {
                prop_assert!(len >= 19 || reference(&ts[..len]).is_none(), "{:?}", &ts[..len]);
                texts.push(ts[..len].to_owned());
            }
            texts.push(ts.clone());
        }
        check(&texts)?;
    }
}

/// Fixed points: the truncations from the issue, out-of-range fields, and the accepted forms.
#[test]
fn examples() {
    let cases: &[(&str, Option<&str>)] = &[
        ("2025-01-03 18:01:", None),
        ("2025-01-01 04:07", None),
        ("2025-01-03 17:08:00.", None),
        ("2025-01-03 10", None),
        ("2025-01-03", None),
        ("2025-02-30 18:01:00", None),
        ("2025-01-03 24:00:00", None),
        ("2025-01-03 23:59:60", None),
        ("2025-01-03 18:01:00+05:60", None),
        ("2025-01-03 18:01:00+24:00", None),
        ("2025-01-03 18:01:00+05:3", None),
        ("2025-01-03 18:01:00z", None),
        ("2025-01-03 18:01:00 ", None),
        (" 2025-01-03 18:01:00", None),
        ("2025-01-03 18:01:00 UTC", None),
        ("2025-01-03t18:01:00", None),
        ("2025-05-08 03:16:32.801588+00:00", Some("2025-05-08T03:16:32.801588Z")),
        ("2025-05-08 03:16:32", Some("2025-05-08T03:16:32Z")),
        ("2025-05-08T03:16:32Z", Some("2025-05-08T03:16:32Z")),
        ("2025-05-08 06:16:30+02", Some("2025-05-08T04:16:30Z")),
        ("2025-05-08 00:16:30-0530", Some("2025-05-08T05:46:30Z")),
        ("2025-05-08 01:00:00+02:00", Some("2025-05-07T23:00:00Z")),
        ("2024-02-29 12:00:00.123456789", Some("2024-02-29T12:00:00.123456Z")),
    ];
    for (ts, want) in cases {
        let want_us = want.map(|w| DateTime::parse_from_rfc3339(w).unwrap().timestamp_micros());
        assert_eq!(reference(ts), want_us, "the reference parser on {ts:?}");
    }
    let texts: Vec<String> = cases.iter().map(|(ts, _)| (*ts).to_owned()).collect();
    check(&texts).unwrap();
}
