//! The simulated market's history: its symbols, their deterministic hourly klines, and the
//! [`Scenario`] of irregularities real history has (late listings, delistings, maintenance gaps,
//! zero-trade hours, holes in the public archive).
//!
//! REST klines and archive files are two views of this one model, so a backfill from either must
//! give the same snapshots, and [`Market::expected_snapshot`] says which: the tests' oracle.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};

use crate::source::binance::TickerPrice;

/// One hour in milliseconds.
pub(crate) const HOUR_MS: i64 = 3_600_000;
/// The first hour whose archive timestamps are in microseconds (2025-01-01T00:00Z), as Binance's.
pub(crate) const MICROS_FROM_HOUR: i64 = 1_735_689_600 / 3600;

/// Irregularities of the simulated history and archive; `Scenario::default()` is a clean history
/// with an archive that publishes every complete day and month at once.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Pairs listed late: no kline opens before this hour.
    pub listings: Vec<(String, DateTime<Utc>)>,
    /// Pairs delisted: the last kline opens at this hour; `BREAK` in exchangeInfo.
    pub delistings: Vec<(String, DateTime<Utc>)>,
    /// Exchange maintenance: no pair has a kline opening in `[start, end)`.
    pub maintenance: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// Hours without trades: the pair's klines opening in `[start, end)` have volume 0 and
    /// open = high = low = close = the last close before them.
    pub zero_trade: Vec<(String, DateTime<Utc>, DateTime<Utc>)>,
    /// Monthly archive files that are missing (404): the pair and the month's first day.
    pub missing_monthly: Vec<(String, NaiveDate)>,
    /// Daily archive files that are missing (404), though REST has those days.
    pub missing_daily: Vec<(String, NaiveDate)>,
    /// Pairs whose archive files start with a header line (the archive normally has none).
    pub headers: Vec<String>,
    /// Complete days the archive is behind: a daily file appears `1 + archive_lag_days` days after
    /// its day starts, a monthly file `archive_lag_days` days after its month ends (a stall).
    pub archive_lag_days: i64,
    /// REST request weight allowed per window (Binance: 6000 per minute); beyond it, HTTP 429.
    pub weight_limit: u32,
    /// The weight window in seconds (Binance: 60); the header is `X-MBX-USED-WEIGHT-<n><S|M>`.
    pub weight_window_secs: u32,
    /// Most klines one `/api/v3/klines` answer holds, whatever `limit` asks (Binance: 1000).
    pub klines_page_limit: usize,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            listings: Vec::new(),
            delistings: Vec::new(),
            maintenance: Vec::new(),
            zero_trade: Vec::new(),
            missing_monthly: Vec::new(),
            missing_daily: Vec::new(),
            headers: Vec::new(),
            archive_lag_days: 0,
            weight_limit: 6000,
            weight_window_secs: 60,
            klines_page_limit: 1000,
        }
    }
}

impl Scenario {
    /// Every irregularity once, around `anchor` (the demo's and the tests' history), on the first
    /// USDT pairs of a universe of `symbols` (at least 12): one listed 17 days before the anchor,
    /// one delisted 9 days after it, a 3-hour maintenance 3 days after it, 6 zero-trade hours 5 days
    /// before it, the monthly file of the month before the anchor's missing for one pair with two
    /// of its daily files missing as well, headers in another pair's files, and an archive two
    /// days behind.
    pub fn standard(symbols: usize, anchor: DateTime<Utc>) -> Self {
        assert!(symbols >= 12, "the standard scenario needs at least 12 symbols (6 USDT pairs)");
        let names = universe_names(symbols);
        // Even indices are the USDT pairs; index 12 is priced zero, so pairs 2..10 are used.
        let usdt = |k: usize| names[2 * k].clone();
        let anchor = crate::source::snapshot::hour_slot(anchor);
        let day = anchor.date_naive();
        let prev_month = first_of_month(first_of_month(day) - TimeDelta::days(1));
        Self {
            listings: vec![(usdt(1), anchor - TimeDelta::days(17) + TimeDelta::hours(5))],
            delistings: vec![(usdt(2), anchor + TimeDelta::days(9) + TimeDelta::hours(13))],
            maintenance: vec![(anchor + TimeDelta::days(3) + TimeDelta::hours(2), anchor + TimeDelta::days(3) + TimeDelta::hours(5))],
            zero_trade: vec![(usdt(3), anchor - TimeDelta::days(5), anchor - TimeDelta::days(5) + TimeDelta::hours(6))],
            missing_monthly: vec![(usdt(4), prev_month)],
            missing_daily: vec![(usdt(4), prev_month + TimeDelta::days(23)), (usdt(4), prev_month + TimeDelta::days(24))],
            headers: vec![usdt(5)],
            archive_lag_days: 2,
            ..Self::default()
        }
    }
}

/// The first day of `day`'s month.
pub(crate) fn first_of_month(day: NaiveDate) -> NaiveDate {
    day.with_day(1).expect("day 1 exists")
}

pub(crate) struct Symbol {
    pub(crate) name: String,
    pub(crate) base: String,
    pub(crate) quote: &'static str,
    start_price: f64,
    /// Delisted-like symbols answer "0.00000000", as Binance does for some pairs.
    pub(crate) zero: bool,
    /// First and last hours (since the epoch) at which a kline opens.
    first_h: i64,
    last_h: i64,
    zero_trade: Vec<(i64, i64)>,
    pub(crate) header: bool,
}

impl Symbol {
    /// Status in exchangeInfo: `BREAK` for zero-priced and delisted pairs.
    pub(crate) fn status(&self) -> &'static str {
        if self.zero || self.last_h != i64::MAX { "BREAK" } else { "TRADING" }
    }
}

const BASES: &[&str] =
    &["BTC", "ETH", "BNB", "SOL", "XRP", "ADA", "DOGE", "TRX", "DOT", "LINK", "LTC", "AVAX", "ATOM", "UNI", "XLM", "NEAR"];
const OTHER_QUOTES: &[&str] = &["BTC", "ETH", "FDUSD"];

/// splitmix64: a tiny, stable hash, so the walks never change with a dependency upgrade.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub(crate) fn unit(x: u64) -> f64 {
    (mix(x) >> 11) as f64 / (1u64 << 53) as f64
}

/// Base and quote of symbol `i`: even indices are USDT pairs, odd ones the same base against
/// another quote.
fn base_quote(i: usize) -> (String, &'static str) {
    let base = match BASES.get(i / 2) {
        Some(b) => (*b).to_owned(),
        None => format!("C{:04}", i / 2),
    };
    let quote = match (i % 2, OTHER_QUOTES[(i / 2) % OTHER_QUOTES.len()]) {
        (0, _) => "USDT",
        (_, q) if q == base => "FDUSD",
        (_, q) => q,
    };
    (base, quote)
}

/// The USDT pairs of a universe of `symbols`, with their indices.
pub(crate) fn usdt_pairs(symbols: usize) -> impl Iterator<Item = (usize, String)> {
    (0..symbols).map(|i| (i, base_quote(i))).filter(|(_, (_, q))| *q == "USDT").map(|(i, (b, q))| (i, format!("{b}{q}")))
}

fn universe_names(symbols: usize) -> Vec<String> {
    (0..symbols).map(base_quote).map(|(b, q)| format!("{b}{q}")).collect()
}

fn hour_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(3600)
}

/// The simulated market: symbols and scenario, compiled for lookups by hour.
pub(crate) struct Market {
    pub(crate) seed: u64,
    pub(crate) symbols: Vec<Symbol>,
    maintenance: Vec<(i64, i64)>,
    missing_monthly: HashSet<(usize, NaiveDate)>,
    missing_daily: HashSet<(usize, NaiveDate)>,
    pub(crate) scenario: Scenario,
}

impl Market {
    /// The market of `symbols` symbols (every 13th priced zero) with this seed and scenario.
    /// Panics if the scenario names a symbol the universe does not have (a test's mistake).
    pub(crate) fn new(symbols: usize, seed: u64, scenario: Scenario) -> Self {
        let mut list: Vec<Symbol> = (0..symbols)
            .map(|i| {
                let (base, quote) = base_quote(i);
                let h = seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
                Symbol {
                    name: format!("{base}{quote}"),
                    base,
                    quote,
                    start_price: 10f64.powf(unit(h) * 8.0 - 3.0), // 0.001 .. 100k
                    zero: i % 13 == 12,
                    first_h: i64::MIN,
                    last_h: i64::MAX,
                    zero_trade: Vec::new(),
                    header: false,
                }
            })
            .collect();
        let names: Vec<String> = list.iter().map(|s| s.name.clone()).collect();
        let index = |name: &str| {
            names.iter().position(|n| n == name).unwrap_or_else(|| panic!("the scenario names {name}, not among the {symbols} symbols"))
        };
        let mut missing_monthly = HashSet::new();
        let mut missing_daily = HashSet::new();
        for (name, t) in &scenario.listings {
            let i = index(name);
            list[i].first_h = hour_of(*t);
        }
        for (name, t) in &scenario.delistings {
            let i = index(name);
            list[i].last_h = hour_of(*t);
        }
        for (name, a, b) in &scenario.zero_trade {
            let i = index(name);
            list[i].zero_trade.push((hour_of(*a), hour_of(*b)));
        }
        for name in &scenario.headers {
            let i = index(name);
            list[i].header = true;
        }
        for (name, month) in &scenario.missing_monthly {
            missing_monthly.insert((index(name), first_of_month(*month)));
        }
        for (name, day) in &scenario.missing_daily {
            missing_daily.insert((index(name), *day));
        }
        let maintenance = scenario.maintenance.iter().map(|(a, b)| (hour_of(*a), hour_of(*b))).collect();
        Self { seed, symbols: list, maintenance, missing_monthly, missing_daily, scenario }
    }

    /// Price of symbol `i` at the start of hour `hour` (hours since the Unix epoch): a log-walk of
    /// ±1% hourly steps. Each 64-hour block starts from its own hashed level, so any hour costs at
    /// most 64 steps with no cache; neighbouring hours differ by one step (except at block edges).
    fn walk(&self, i: usize, hour: i64) -> f64 {
        self.symbols[i].start_price * self.walk_level(i, hour).exp()
    }

    fn walk_key(&self, i: usize) -> u64 {
        self.seed ^ ((i as u64) << 40)
    }

    /// The step from hour `h` to `h + 1` of a walk.
    fn step(key: u64, h: i64) -> f64 {
        (unit(key ^ (h as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)) - 0.5) * 0.02
    }

    fn walk_level(&self, i: usize, hour: i64) -> f64 {
        let key = self.walk_key(i);
        let block = hour.div_euclid(64);
        let mut level = (unit(key ^ (block as u64).wrapping_mul(0x9E37)) - 0.5) * 0.4;
        for h in block * 64..hour {
            level += Self::step(key, h);
        }
        level
    }

    /// `price_at_hour` for every hour of `from..=to` in one pass (the same values: the same
    /// additions in the same order), for archive files of hundreds of hours.
    pub(crate) fn prices(&self, i: usize, from: i64, to: i64) -> Vec<f64> {
        let s = &self.symbols[i];
        if s.zero {
            return vec![0.0; (to - from + 1).max(0) as usize];
        }
        let key = self.walk_key(i);
        let mut out = Vec::with_capacity((to - from + 1).max(0) as usize);
        let mut level = None;
        for h in from..=to {
            let l = match level {
                Some(l) if h.rem_euclid(64) != 0 => l + Self::step(key, h - 1),
                _ => self.walk_level(i, h),
            };
            level = Some(l);
            out.push(s.start_price * l.exp());
        }
        for &(a, b) in &s.zero_trade {
            let held = self.walk(i, a);
            for h in a.max(from)..=b.min(to) {
                out[(h - from) as usize] = held;
            }
        }
        out
    }

    /// The price at the start of `hour`: the walk, held flat through zero-trade hours (the kline
    /// before them closes where they all open and close).
    pub(crate) fn price_at_hour(&self, i: usize, hour: i64) -> f64 {
        if self.symbols[i].zero {
            return 0.0;
        }
        let held = self.symbols[i].zero_trade.iter().find(|(a, b)| (*a..=*b).contains(&hour));
        self.walk(i, held.map_or(hour, |(a, _)| *a))
    }

    /// The current price of a symbol trading now (with a per-minute wiggle), `None` for one
    /// priced zero or delisted, and not listed at all (`Err`) before its listing.
    pub(crate) fn price_now(&self, i: usize, now: DateTime<Utc>) -> Result<Option<f64>, ()> {
        let s = &self.symbols[i];
        let hour = hour_of(now);
        if hour < s.first_h {
            return Err(());
        }
        if s.zero || hour > s.last_h {
            return Ok(None);
        }
        let minute = now.timestamp().div_euclid(60) as u64;
        let wiggle = 1.0 + (unit(self.seed ^ minute ^ ((i as u64) << 32)) - 0.5) * 0.002;
        Ok(Some(self.price_at_hour(i, hour) * wiggle))
    }

    /// The ticker: every listed symbol's current price text.
    pub(crate) fn ticker(&self, now: DateTime<Utc>) -> Vec<TickerPrice> {
        (0..self.symbols.len())
            .filter_map(|i| self.price_now(i, now).ok().map(|p| TickerPrice { symbol: self.symbols[i].name.clone(), price: fmt_price(p) }))
            .collect()
    }

    /// Whether symbol `i` has a kline opening at `hour`.
    pub(crate) fn has_kline(&self, i: usize, hour: i64) -> bool {
        let s = &self.symbols[i];
        (s.first_h..=s.last_h).contains(&hour) && !self.maintenance.iter().any(|(a, b)| (*a..*b).contains(&hour))
    }

    /// First and last hours at which symbol `i` can have a kline.
    pub(crate) fn lifetime(&self, i: usize) -> (i64, i64) {
        (self.symbols[i].first_h, self.symbols[i].last_h)
    }

    /// The kline of symbol `i` opening at `hour` (which must exist), Binance's 12 fields as text.
    pub(crate) fn kline(&self, i: usize, hour: i64) -> Kline {
        self.kline_at(i, hour, self.price_at_hour(i, hour), self.price_at_hour(i, hour + 1))
    }

    /// The kline of symbol `i` opening at `hour`, given the prices at its open and close.
    pub(crate) fn kline_at(&self, i: usize, hour: i64, open: f64, close: f64) -> Kline {
        let idle = self.symbols[i].zero_trade.iter().any(|(a, b)| (*a..*b).contains(&hour));
        let volume = if idle || self.symbols[i].zero { 0.0 } else { 1000.0 + unit(hour as u64 ^ i as u64) * 9000.0 };
        let (high, low) = if idle { (open, open) } else { (open.max(close) * 1.002, open.min(close) * 0.998) };
        Kline {
            open_h: hour,
            open: fmt_price(Some(open)),
            high: fmt_price(Some(high)),
            low: fmt_price(Some(low)),
            close: fmt_price(Some(close)),
            volume: format!("{volume:.8}"),
            quote_volume: format!("{:.8}", volume * close),
            trades: if volume == 0.0 { 0 } else { 100 },
            taker_base: format!("{:.8}", volume / 2.0),
            taker_quote: format!("{:.8}", volume * close / 2.0),
        }
    }

    /// Up to `limit` klines of symbol `i` as `/api/v3/klines` answers: opening in
    /// `[start_h, end_h]`, the first ones when a start is given, else the last ones before `end_h`.
    pub(crate) fn klines(&self, i: usize, start_h: Option<i64>, end_h: i64, limit: usize) -> Vec<Kline> {
        let (first, last) = self.lifetime(i);
        let end_h = end_h.min(last);
        match start_h {
            Some(start) => (start.max(first)..=end_h).filter(|h| self.has_kline(i, *h)).take(limit).map(|h| self.kline(i, h)).collect(),
            None => {
                let mut out: Vec<Kline> = (first.max(end_h - 10 * limit as i64)..=end_h)
                    .rev()
                    .filter(|h| self.has_kline(i, *h))
                    .take(limit)
                    .map(|h| self.kline(i, h))
                    .collect();
                out.reverse();
                out
            }
        }
    }

    /// Whether the archive lacks this file although its period has klines.
    pub(crate) fn archive_file_missing(&self, i: usize, period: Period) -> bool {
        match period {
            Period::Month(first) => self.missing_monthly.contains(&(i, first)),
            Period::Day(day) => self.missing_daily.contains(&(i, day)),
        }
    }

    /// The snapshot a backfill must write for `slot` from `quote` pairs: each pair with a kline
    /// opening an hour before, at that kline's close, in name order, stamped at the slot; `None`
    /// when no pair has such a kline.
    pub(crate) fn expected_snapshot(&self, slot: DateTime<Utc>, quote: &str) -> Option<bytes::Bytes> {
        let h = hour_of(slot) - 1;
        let mut prices: Vec<TickerPrice> = (0..self.symbols.len())
            .filter(|i| self.symbols[*i].quote == quote && self.has_kline(*i, h))
            .map(|i| TickerPrice { symbol: self.symbols[i].name.clone(), price: self.kline(i, h).close })
            .collect();
        if prices.is_empty() {
            return None;
        }
        prices.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        Some(crate::source::snapshot::encode(&prices, slot))
    }
}

/// A period an archive file covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Period {
    /// A calendar month, by its first day.
    Month(NaiveDate),
    /// A day.
    Day(NaiveDate),
}

impl Period {
    /// First hour (since the epoch) and the hour after the last.
    pub(crate) fn hours(self) -> (i64, i64) {
        let (start, end) = match self {
            Period::Month(first) => (first, first.checked_add_months(chrono::Months::new(1)).expect("a month later exists")),
            Period::Day(day) => (day, day + TimeDelta::days(1)),
        };
        let h = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp() / 3600;
        (h(start), h(end))
    }
}

/// One kline's fields as Binance writes them.
pub(crate) struct Kline {
    pub(crate) open_h: i64,
    pub(crate) open: String,
    pub(crate) high: String,
    pub(crate) low: String,
    pub(crate) close: String,
    pub(crate) volume: String,
    pub(crate) quote_volume: String,
    pub(crate) trades: u32,
    pub(crate) taker_base: String,
    pub(crate) taker_quote: String,
}

pub(crate) fn fmt_price(p: Option<f64>) -> String {
    format!("{:.8}", p.unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_standard_scenario_shapes_klines_as_it_says() {
        let anchor = t("2025-01-01T00:00:00Z");
        let m = Market::new(24, 7, Scenario::standard(24, anchor));
        let idx = |n: &str| m.symbols.iter().position(|s| s.name == n).unwrap();
        let (listed, delisted, idle) = (idx("ETHUSDT"), idx("BNBUSDT"), idx("SOLUSDT"));
        let h = hour_of(anchor);
        assert!(!m.has_kline(listed, h - 17 * 24 + 4) && m.has_kline(listed, h - 17 * 24 + 5));
        assert!(m.has_kline(delisted, h + 9 * 24 + 13) && !m.has_kline(delisted, h + 9 * 24 + 14));
        assert_eq!(m.symbols[delisted].status(), "BREAK");
        assert!((0..24).all(|i| (2..5).all(|k| !m.has_kline(i, h + 3 * 24 + k)) && m.has_kline(i, h + 3 * 24 + 5)));
        // Zero-trade hours repeat the close before them, with no volume; the walk resumes after.
        let before = m.kline(idle, h - 5 * 24 - 1).close;
        for k in 0..6 {
            let kl = m.kline(idle, h - 5 * 24 + k);
            assert_eq!(
                (kl.open.as_str(), kl.close.as_str(), kl.volume.as_str(), kl.trades),
                (before.as_str(), before.as_str(), "0.00000000", 0)
            );
        }
        assert_ne!(m.kline(idle, h - 5 * 24 + 6).close, before);
        assert!(m.archive_file_missing(idx("XRPUSDT"), Period::Month(NaiveDate::from_ymd_opt(2024, 12, 1).unwrap())));
        assert!(m.archive_file_missing(idx("XRPUSDT"), Period::Day(NaiveDate::from_ymd_opt(2024, 12, 24).unwrap())));
    }

    #[test]
    fn rest_klines_page_over_gaps_and_stop_at_a_delisting() {
        let anchor = t("2025-01-01T00:00:00Z");
        let m = Market::new(24, 7, Scenario::standard(24, anchor));
        let h = hour_of(anchor);
        let all = m.klines(0, Some(h), h + 4 * 24, 1000);
        assert_eq!(all.len(), 4 * 24 + 1 - 3, "three maintenance hours are missing");
        let delisted = m.klines(4, Some(h), h + 20 * 24, 1000);
        let idle = 6;
        let one_pass = m.prices(idle, h - 200, h + 100);
        assert!((h - 200..=h + 100).all(|k| one_pass[(k - h + 200) as usize] == m.price_at_hour(idle, k)), "the same prices in one pass");
        assert_eq!(delisted.last().unwrap().open_h, h + 9 * 24 + 13);
        let last = m.klines(4, None, h + 20 * 24, 1);
        assert_eq!(last[0].open_h, h + 9 * 24 + 13);
        assert!(m.klines(2, None, h - 30 * 24, 1).is_empty(), "nothing before the listing");
    }
}
