//! Where one pair's hourly klines for one month of a backfill come from: the archive's monthly
//! file when the month is complete (and more than a day of it is needed), else (or when that file
//! is missing) its daily files, and the REST API for the days the archive does not have (not
//! published yet, a stall, today).
//!
//! A pair's lifetime (first and last kline in the backfill's range) is asked of REST only when a
//! file is missing where the pair might simply not have traded (a monthly 404, or an empty REST
//! answer), and remembered for the rest of the run: a pair listed in 2023 then costs one 404 and
//! two small requests for a backfill from 2020, not a 404 for each day of three years.

use chrono::{Datelike, Months, NaiveDate, TimeDelta};

use super::archive::{ArchiveClient, ArchivePeriod};
use super::backfill::BackfillError;
use super::binance::{BinanceClient, Kline};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// What is known of when a pair traded, within the backfill's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// Not asked yet.
    Unknown,
    /// Its klines in the range open from `first_ms` to `last_ms` (both included); there may be
    /// halts in between.
    Known {
        /// The first kline's open time.
        first_ms: i64,
        /// The last kline's open time.
        last_ms: i64,
    },
    /// No kline in the whole range.
    Never,
}

impl Lifetime {
    /// `[lo, hi)` (kline open times) narrowed to the lifetime; `None` if nothing is left.
    fn clip(self, lo: i64, hi: i64) -> Option<(i64, i64)> {
        let (lo, hi) = match self {
            Lifetime::Unknown => (lo, hi),
            Lifetime::Known { first_ms, last_ms } => (lo.max(first_ms), hi.min(last_ms + HOUR_MS)),
            Lifetime::Never => return None,
        };
        (lo < hi).then_some((lo, hi))
    }
}

/// The clients and dates every month's fetch shares.
pub(crate) struct Sources<'a> {
    pub(crate) rest: &'a BinanceClient,
    pub(crate) archive: Option<&'a ArchiveClient>,
    /// The current UTC day: the archive has nothing of it or after it.
    pub(crate) today: NaiveDate,
    /// Kline open times the whole backfill needs, `[lo, hi)`: the span a lifetime is asked for.
    pub(crate) range_ms: (i64, i64),
}

/// One pair's klines for a month, and what getting them cost.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) klines: Vec<Kline>,
    pub(crate) archive_files: u64,
    pub(crate) lifetime: Lifetime,
}

fn midnight_ms(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis()
}

fn day_of(ms: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(ms).expect("a time in range").date_naive()
}

/// `symbol`'s klines opening in `[lo, hi)`, all within the month starting `month`.
pub(crate) async fn fetch_month(
    src: &Sources<'_>,
    symbol: &str,
    month: NaiveDate,
    (lo, hi): (i64, i64),
    mut lifetime: Lifetime,
) -> Result<Fetched, BackfillError> {
    let mut out = Fetched { klines: Vec::new(), archive_files: 0, lifetime };
    let Some((mut lo, mut hi)) = lifetime.clip(lo, hi) else { return Ok(out) };
    let next_month = month + Months::new(1);
    let month_complete = next_month <= src.today.with_day(1).expect("day 1 exists");
    // A single day of a month (a range's first slot is the last hour of the month before) is
    // cheaper from its daily file than from the whole month's.
    let several_days = day_of(lo) != day_of(hi - 1);
    if let (Some(archive), true) = (src.archive, month_complete && several_days) {
        match archive.fetch(symbol, ArchivePeriod::Month(month)).await.map_err(BackfillError::Archive)? {
            Some(file) => {
                out.archive_files += 1;
                out.klines = file.klines.into_iter().filter(|k| (lo..hi).contains(&k.open_ms)).collect();
                return Ok(out);
            }
            None if lifetime == Lifetime::Unknown => {
                // Not listed yet, delisted, or the file is missing: REST tells which.
                lifetime = probe(src, symbol).await?;
                out.lifetime = lifetime;
                let Some(clipped) = lifetime.clip(lo, hi) else { return Ok(out) };
                (lo, hi) = clipped;
                tracing::debug!("{symbol}: no monthly archive file for {}; its daily files and REST instead", month.format("%Y-%m"));
            }
            None => tracing::debug!("{symbol}: no monthly archive file for {}; its daily files and REST instead", month.format("%Y-%m")),
        }
    }
    // Days the archive has not got go to REST, adjacent ones in one request.
    let mut rest_spans: Vec<(i64, i64)> = Vec::new();
    let mut day = day_of(lo);
    while midnight_ms(day) < hi {
        let (dlo, dhi) = (lo.max(midnight_ms(day)), hi.min(midnight_ms(day) + DAY_MS));
        let from_archive = match src.archive {
            Some(archive) if day < src.today => archive.fetch(symbol, ArchivePeriod::Day(day)).await.map_err(BackfillError::Archive)?,
            _ => None,
        };
        match from_archive {
            Some(file) => {
                out.archive_files += 1;
                out.klines.extend(file.klines.into_iter().filter(|k| (dlo..dhi).contains(&k.open_ms)));
            }
            None => match rest_spans.last_mut() {
                Some(last) if last.1 == dlo => last.1 = dhi,
                _ => rest_spans.push((dlo, dhi)),
            },
        }
        day += TimeDelta::days(1);
    }
    for (a, b) in rest_spans {
        if src.archive.is_some() && a < midnight_ms(src.today) {
            tracing::debug!("{symbol}: {} to {} are not in the archive; from REST", day_of(a), day_of(b - 1));
        }
        let (klines, _) = src.rest.klines(symbol, a, b - HOUR_MS).await.map_err(BackfillError::Binance)?;
        if klines.is_empty() && out.lifetime == Lifetime::Unknown {
            out.lifetime = probe(src, symbol).await?;
        }
        out.klines.extend(klines.into_iter().filter(|k| (a..b).contains(&k.open_ms)));
    }
    out.klines.sort_by_key(|k| k.open_ms);
    out.klines.dedup_by_key(|k| k.open_ms);
    Ok(out)
}

/// When `symbol` traded within the backfill's range: its first and last kline there (two small
/// REST requests). No answer for the last one keeps the range's end: a lifetime only narrows
/// what is asked for when Binance said so, never on a missing answer.
async fn probe(src: &Sources<'_>, symbol: &str) -> Result<Lifetime, BackfillError> {
    let (lo, hi) = src.range_ms;
    let Some(first_ms) = src.rest.first_kline(symbol, lo).await.map_err(BackfillError::Binance)? else { return Ok(Lifetime::Never) };
    if first_ms >= hi {
        return Ok(Lifetime::Never);
    }
    let last_ms = src.rest.last_kline(symbol, hi - HOUR_MS).await.map_err(BackfillError::Binance)?.unwrap_or(hi - HOUR_MS);
    tracing::debug!(symbol, first = %day_of(first_ms), last = %day_of(last_ms), "lifetime within the range");
    Ok(Lifetime::Known { first_ms, last_ms: last_ms.max(first_ms) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lifetime_narrows_the_hours_asked_for() {
        let known = Lifetime::Known { first_ms: 10 * HOUR_MS, last_ms: 20 * HOUR_MS };
        assert_eq!(known.clip(0, 100 * HOUR_MS), Some((10 * HOUR_MS, 21 * HOUR_MS)));
        assert_eq!(known.clip(21 * HOUR_MS, 30 * HOUR_MS), None);
        assert_eq!(known.clip(0, 10 * HOUR_MS), None);
        assert_eq!(Lifetime::Unknown.clip(0, HOUR_MS), Some((0, HOUR_MS)));
        assert_eq!(Lifetime::Never.clip(0, HOUR_MS), None);
    }
}
