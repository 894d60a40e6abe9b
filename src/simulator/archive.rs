//! The simulator's copy of Binance's public data archive (data.binance.vision): monthly and daily
//! 1h kline zips under `data/spot/{monthly,daily}/klines/<SYM>/1h/`, each with its `.CHECKSUM`
//! sibling (`<sha256>  <name>`), built from the market model when asked for.
//!
//! Like the real archive: one headerless 12-column CSV per zip, open/close times in milliseconds
//! before 2025 and in microseconds from 2025-01-01 on, no file for a period without klines, a file
//! only once its period is over (plus the scenario's lag), and the scenario's missing files 404.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use chrono::{Months, NaiveDate, TimeDelta};
use sha2::{Digest, Sha256};

use super::market::{HOUR_MS, MICROS_FROM_HOUR, Market, Period};

/// What an archive path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArchivePath {
    pub(crate) symbol: String,
    pub(crate) period: Period,
    /// The file's name (`BTCUSDT-1h-2024-03.zip`), without `.CHECKSUM`.
    pub(crate) zip_name: String,
    /// Whether the `.CHECKSUM` sibling is asked for.
    pub(crate) checksum: bool,
}

/// Parse `<monthly|daily>/klines/<SYM>/1h/<SYM>-1h-<date>.zip[.CHECKSUM]`'s variable parts.
pub(crate) fn parse(kind: &str, symbol: &str, interval: &str, file: &str) -> Option<ArchivePath> {
    if interval != "1h" {
        return None;
    }
    let (zip_name, checksum) = match file.strip_suffix(".CHECKSUM") {
        Some(z) => (z, true),
        None => (file, false),
    };
    let date = zip_name.strip_suffix(".zip")?.strip_prefix(symbol)?.strip_prefix("-1h-")?;
    let period = match kind {
        "monthly" if date.len() == 7 => Period::Month(NaiveDate::parse_from_str(&format!("{date}-01"), "%Y-%m-%d").ok()?),
        "daily" if date.len() == 10 => Period::Day(NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?),
        _ => return None,
    };
    Some(ArchivePath { symbol: symbol.to_owned(), period, zip_name: zip_name.to_owned(), checksum })
}

/// Whether the archive has published files of `period` by `today`.
pub(crate) fn published(period: Period, today: NaiveDate, lag_days: i64) -> bool {
    let over = match period {
        Period::Month(first) => first.checked_add_months(Months::new(1)).expect("a month later exists"),
        Period::Day(day) => day + TimeDelta::days(1),
    };
    today >= over + TimeDelta::days(lag_days)
}

/// The CSV inside the zip of symbol `i` for `period`, or `None` if it has no kline then.
pub(crate) fn csv(market: &Market, i: usize, period: Period) -> Option<String> {
    use std::fmt::Write as _;
    let (start, end) = period.hours();
    let (first, last) = market.lifetime(i);
    let mut out = String::with_capacity(((end - start) as usize) * 130);
    if market.symbols[i].header {
        out.push_str("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\n");
    }
    let (from, to) = (start.max(first), end.min(last.saturating_add(1)));
    if from >= to {
        return None;
    }
    let prices = market.prices(i, from, to);
    let mut any = false;
    for h in from..to {
        if !market.has_kline(i, h) {
            continue;
        }
        any = true;
        let k = market.kline_at(i, h, prices[(h - from) as usize], prices[(h - from + 1) as usize]);
        // Binance switched its spot archive to microseconds on 2025-01-01.
        let (open_t, close_t) =
            if h >= MICROS_FROM_HOUR { (h * HOUR_MS * 1000, (h + 1) * HOUR_MS * 1000 - 1) } else { (h * HOUR_MS, (h + 1) * HOUR_MS - 1) };
        let _ = writeln!(
            out,
            "{open_t},{},{},{},{},{},{close_t},{},{},{},{},0",
            k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.trades, k.taker_base, k.taker_quote
        );
    }
    any.then_some(out)
}

/// A zip holding `csv` as `<zip name minus .zip>.csv`, deflated, with fixed metadata so the same
/// file always has the same bytes (and so the same checksum).
pub(crate) fn zip(zip_name: &str, csv: &str) -> Bytes {
    use std::io::Write as _;
    let entry = format!("{}.csv", zip_name.trim_end_matches(".zip"));
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::with_capacity(csv.len() / 2)));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    // Writing into memory cannot fail.
    w.start_file(entry, options).expect("in-memory zip");
    w.write_all(csv.as_bytes()).expect("in-memory zip");
    Bytes::from(w.finish().expect("in-memory zip").into_inner())
}

/// The `.CHECKSUM` text of a zip, as the archive writes it.
pub(crate) fn checksum(zip_name: &str, zip: &[u8]) -> String {
    format!("{:x}  {zip_name}\n", Sha256::digest(zip))
}

/// Recently built zips, so a `.CHECKSUM` and then its zip are built once; bounded by count.
pub(crate) struct Cache {
    inner: Mutex<(HashMap<String, Bytes>, VecDeque<String>)>,
}

const CACHE_ENTRIES: usize = 1024;

impl Cache {
    pub(crate) fn new() -> Self {
        Self { inner: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    pub(crate) fn get_or_build(&self, key: &str, build: impl FnOnce() -> Option<Bytes>) -> Option<Bytes> {
        if let Some(b) = self.inner.lock().unwrap().0.get(key) {
            return Some(b.clone());
        }
        let built = build()?;
        let mut guard = self.inner.lock().unwrap();
        let (map, order) = &mut *guard;
        if map.insert(key.to_owned(), built.clone()).is_none() {
            order.push_back(key.to_owned());
        }
        while order.len() > CACHE_ENTRIES {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        Some(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::market::Scenario;

    // Here rather than beside the reader: the simulator sits above `source` (no import cycle).
    #[test]
    fn a_zip_from_the_simulator_reads_back() {
        let zip = zip("X-1h-2024-01.zip", "1704067200000,1,1,1,2.5,1,1,1,1,1,1,0\n");
        let k = crate::source::archive::unzip_klines(&zip).unwrap();
        assert_eq!((k[0].open_ms, &*k[0].close), (1_704_067_200_000, "2.5"));
        assert!(crate::source::archive::unzip_klines(b"PK not a zip").unwrap_err().starts_with("not a readable zip"));
    }

    #[test]
    fn paths_parse_and_reject_what_the_archive_does_not_have() {
        let p = parse("monthly", "BTCUSDT", "1h", "BTCUSDT-1h-2024-03.zip.CHECKSUM").unwrap();
        assert_eq!(
            (p.period, p.zip_name.as_str(), p.checksum),
            (Period::Month(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()), "BTCUSDT-1h-2024-03.zip", true)
        );
        let p = parse("daily", "BTCUSDT", "1h", "BTCUSDT-1h-2024-03-05.zip").unwrap();
        assert_eq!((p.period, p.checksum), (Period::Day(NaiveDate::from_ymd_opt(2024, 3, 5).unwrap()), false));
        assert!(parse("daily", "BTCUSDT", "1h", "BTCUSDT-1h-2024-03.zip").is_none());
        assert!(parse("monthly", "BTCUSDT", "1m", "BTCUSDT-1m-2024-03.zip").is_none());
        assert!(parse("monthly", "BTCUSDT", "1h", "ETHUSDT-1h-2024-03.zip").is_none());
    }

    #[test]
    fn times_switch_to_microseconds_in_2025() {
        let m = Market::new(4, 1, Scenario::default());
        let dec = csv(&m, 0, Period::Day(NaiveDate::from_ymd_opt(2024, 12, 31).unwrap())).unwrap();
        let jan = csv(&m, 0, Period::Day(NaiveDate::from_ymd_opt(2025, 1, 1).unwrap())).unwrap();
        assert!(dec.lines().next().unwrap().starts_with("1735603200000,"), "{dec}");
        assert!(jan.lines().next().unwrap().starts_with("1735689600000000,"), "{jan}");
        assert_eq!(jan.lines().count(), 24);
        assert!(jan.lines().all(|l| l.split(',').count() == 12));
    }

    #[test]
    fn the_same_file_has_the_same_bytes_and_checksum() {
        let a = zip("X-1h-2024-01.zip", "1,2,3\n");
        assert_eq!(a, zip("X-1h-2024-01.zip", "1,2,3\n"));
        assert!(checksum("X-1h-2024-01.zip", &a).ends_with("  X-1h-2024-01.zip\n"));
        assert_eq!(checksum("X-1h-2024-01.zip", &a).split_whitespace().next().unwrap().len(), 64);
    }
}
