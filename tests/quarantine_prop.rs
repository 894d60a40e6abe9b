//! Property test of quarantine line numbers through the real `process` run: raw files mixing good
//! rows, malformed ones, structurally broken ones, records spanning lines, blank lines, duplicate
//! symbols and any line ends; every quarantined row must name the line (as an editor numbers
//! them) its record starts on, with the right reason, and every other row must be kept.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use proptest::prelude::*;
use tickerlake::lake::{Lake, local::LocalStore};
use tickerlake::process::{ProcessOptions, process};

static RT: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap());

const TS: &str = "2025-05-08 03:00:16+00:00";

/// How a row writes its symbol: as it is, in quotes, or in quotes with spaces around them
/// (which the CSV reader skips: one space before the opening quote, any after the closing one:
/// ` "AUSDT"  ,…` is `AUSDT`).
#[derive(Debug, Clone, Copy)]
enum Symbol {
    Plain,
    Quoted,
    /// Spaces before the opening quote (0 or 1) and after the closing one.
    Spaced(u8, u8),
}

impl Symbol {
    fn write(self, sym: &str) -> String {
        match self {
            Symbol::Plain => sym.to_owned(),
            Symbol::Quoted => format!("\"{sym}\""),
            Symbol::Spaced(before, after) => format!("{}\"{sym}\"{}", " ".repeat(before.into()), " ".repeat(after.into())),
        }
    }
}

fn symbol() -> impl Strategy<Value = Symbol> {
    prop_oneof![
        3 => Just(Symbol::Plain),
        1 => Just(Symbol::Quoted),
        2 => (0u8..2, 0u8..3).prop_map(|(a, b)| Symbol::Spaced(a, b)),
    ]
}

#[derive(Debug, Clone)]
enum Row {
    Good(Symbol),
    /// A well-formed row of a pair quoted in another asset: dropped, not quarantined.
    OtherQuote(Symbol),
    /// Same symbol as the `n`th well-formed row back (if any), written as given: a duplicate.
    Again(usize, Symbol),
    NonNumeric,
    TruncatedTimestamp,
    TooFew,
    TooMany,
    /// A quoted price with a line break inside: the record spans two lines (non-numeric).
    TwoLines,
    Blank,
}

fn row() -> impl Strategy<Value = Row> {
    prop_oneof![
        4 => symbol().prop_map(Row::Good),
        2 => symbol().prop_map(Row::OtherQuote),
        2 => (1usize..4, symbol()).prop_map(|(n, s)| Row::Again(n, s)),
        1 => Just(Row::NonNumeric),
        1 => Just(Row::TruncatedTimestamp),
        1 => Just(Row::TooFew),
        1 => Just(Row::TooMany),
        1 => Just(Row::TwoLines),
        1 => Just(Row::Blank),
    ]
}

/// A file's line ends: LF, CRLF or a mix of both per line, or CR only.
#[derive(Debug, Clone, Copy)]
enum Ends {
    Lf,
    CrLf,
    Mixed,
    Cr,
}

fn ends() -> impl Strategy<Value = Ends> {
    prop_oneof![Just(Ends::Lf), Just(Ends::CrLf), Just(Ends::Mixed), Just(Ends::Cr)]
}

/// What must become of a raw file: the symbols kept, and by line the reason and the symbol of
/// each quarantined record.
#[derive(Debug, Default)]
struct Want {
    kept: Vec<String>,
    /// Records in the file, and those dropped as other quotes' rows.
    records: u64,
    other_quote: u64,
    quarantined: BTreeMap<u64, (&'static str, String)>,
}

fn build(rows: &[Row], ends: Ends, seed: u64, final_newline: bool) -> (String, Want) {
    let mut text = String::new();
    let mut line = 1u64;
    let mut bits = seed;
    let mut end = |text: &mut String, line: &mut u64| {
        bits = bits.rotate_left(1);
        text.push_str(match ends {
            Ends::Lf => "\n",
            Ends::CrLf => "\r\n",
            Ends::Cr => "\r",
            Ends::Mixed if bits & 1 == 0 => "\n",
            Ends::Mixed => "\r\n",
        });
        *line += 1;
    };
    text.push_str("symbol,price,timestamp");
    end(&mut text, &mut line);
    let mut want = Want::default();
    // Symbols of the well-formed rows so far (kept or other quote): what a duplicate repeats.
    let mut firsts: Vec<String> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let sym = format!("S{i}USDT");
        let at = line;
        match r {
            Row::Good(how) => {
                text.push_str(&format!("{},1.5,{TS}", how.write(&sym)));
                want.kept.push(sym.clone());
                firsts.push(sym);
            }
            Row::OtherQuote(how) => {
                let sym = format!("S{i}BTC");
                text.push_str(&format!("{},1.5,{TS}", how.write(&sym)));
                want.other_quote += 1;
                firsts.push(sym);
            }
            Row::Again(back, how) if *back <= firsts.len() => {
                let first = firsts[firsts.len() - back].clone();
                text.push_str(&format!("{},2.5,{TS}", how.write(&first)));
                want.quarantined.insert(at, ("duplicate symbol in snapshot", first));
            }
            Row::Again(..) | Row::Blank => {}
            Row::NonNumeric => {
                text.push_str(&format!("{sym},abc,{TS}"));
                want.quarantined.insert(at, ("non-numeric price", sym));
            }
            Row::TruncatedTimestamp => {
                text.push_str(&format!("{sym},1.5,2025-05-08 03:00:"));
                want.quarantined.insert(at, ("unparsable timestamp", sym));
            }
            Row::TooFew => {
                text.push_str(&format!("{sym},1.5"));
                want.quarantined.insert(at, ("wrong field count", sym));
            }
            Row::TooMany => {
                text.push_str(&format!("{sym},1.5,{TS},x"));
                want.quarantined.insert(at, ("wrong field count", sym));
            }
            Row::TwoLines => {
                text.push_str(&format!("{sym},\"1."));
                end(&mut text, &mut line);
                text.push_str(&format!("5\",{TS}"));
                want.quarantined.insert(at, ("non-numeric price", sym));
            }
        }
        if !matches!(r, Row::Blank | Row::Again(..)) || want.quarantined.contains_key(&at) {
            want.records += 1;
        }
        end(&mut text, &mut line);
    }
    if !final_newline {
        // Drop the last line end (a CRLF keeps its CR, still a line end).
        text.pop();
    }
    want.kept.sort();
    (text, want)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn quarantined_rows_name_the_line_their_record_starts_on(
        rows in prop::collection::vec(row(), 1..25), ends in ends(), seed in any::<u64>(), final_newline in any::<bool>(),
    ) {
        let (text, want) = build(&rows, ends, seed, final_newline);
        let dir = tempfile::tempdir().unwrap();
        let lake: Lake = Arc::new(LocalStore::open(dir.path()).unwrap());
        common::write_raw(dir.path(), "raw_crypto_prices_20250508T0300.csv", &text);
        let summary = RT.block_on(process(&lake, &ProcessOptions::default())).unwrap();
        prop_assert_eq!(summary.rows_read, want.records, "every record is counted once: {:?}", text);
        prop_assert_eq!(summary.dropped.get("other quote").copied().unwrap_or(0), want.other_quote, "{:?}", text);

        let kept: Vec<String> = common::processed_rows(dir.path()).into_iter().map(|r| r.symbol).collect();
        prop_assert_eq!(kept, want.kept, "{:?}", text);
        let mut quarantined = BTreeMap::new();
        let q = dir.path().join("quarantine/raw_crypto_prices_20250508T0300.csv");
        if q.exists() {
            for rec in csv::Reader::from_path(&q).unwrap().records() {
                let rec = rec.unwrap();
                prop_assert_eq!(&rec[0], "raw/raw_crypto_prices_20250508T0300.csv");
                let line: u64 = rec[1].parse().unwrap();
                // The record is the one on that line: it names the symbol written there.
                let symbol = rec[3].split(',').next().unwrap().to_owned();
                prop_assert!(quarantined.insert(line, (rec[2].to_owned(), symbol)).is_none(), "line {} twice: {:?}", line, text);
            }
        }
        let want_quarantined: BTreeMap<u64, (String, String)> = want.quarantined.into_iter().map(|(l, (r, s))| (l, (r.to_owned(), s))).collect();
        prop_assert_eq!(quarantined, want_quarantined, "{:?}", text);
    }
}
