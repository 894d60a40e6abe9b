//! `backfill`: hourly snapshots for any range of past hours, planned from one listing of `raw/`,
//! fetched and written a month at a time.
//!
//! - **What a snapshot holds.** For slot H: every pair quoted in `--quote` (from `exchangeInfo`,
//!   in any status, so delisted pairs keep their history) that has a kline opening at H−1h, with
//!   that kline's close as Binance wrote it, in symbol order, stamped `H:00:00.000000+00:00`.
//!   The same klines give the same bytes whichever source they came from (archive or REST).
//! - **What is left alone.** Hours that have a snapshot (collected or backfilled, any minute
//!   suffix), and hours already found to have no kline of any pair (exchange maintenance, before
//!   any listing): those get no file, and a zero-byte marker under [`NO_KLINES_PREFIX`] so that
//!   an identical run later downloads nothing for them.
//! - **Month by month.** Klines are grouped by the month they open in (the archive's monthly
//!   file); every pair's month is fetched concurrently (`source::history`), the month's
//!   snapshots are built in memory and written concurrently with create-if-absent, then its
//!   markers. Memory is one month's, whatever the range.
//! - **Resumable.** A write is one atomic create; a run killed anywhere leaves whole snapshots of
//!   the month it was in, and the next run lists them and fills the rest with the same bytes.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use futures::{StreamExt, TryStreamExt};

use super::archive::{ARCHIVE_CONCURRENCY, ArchiveClient, ArchiveError};
use super::binance::{BinanceClient, BinanceError, Kline, SymbolInfo};
use super::history::{self, Lifetime, Sources};
use super::snapshot::{self, hour_slot};
use crate::lake::{LATE_RAW_NOTE, Lake, LakeError, PutMode, RAW_PREFIX};

/// Markers of hours known to have no kline of any pair of a quote:
/// `<prefix><QUOTE>/<YYYYMMDDTHH>-<YYYYMMDDTHH>`, first hour included, last excluded.
pub const NO_KLINES_PREFIX: &str = "_tickerlake/backfill/no-klines/";
/// Snapshot writes in flight at once.
const WRITE_CONCURRENCY: usize = 32;
const HOUR_MS: i64 = 3_600_000;
const SLOT_FORMAT: &str = "%Y%m%dT%H";

/// A failed backfill. Snapshots already written stay (each is whole); running again resumes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackfillError {
    /// Binance's REST API refused, failed or sent nonsense.
    #[error("{0}")]
    Binance(#[source] BinanceError),
    /// Binance's archive failed or sent a file that does not check out.
    #[error("{0}")]
    Archive(#[source] ArchiveError),
    /// The lake could not be read or written.
    #[error("{0}")]
    Lake(#[source] LakeError),
    /// `--from`, `--to` or `--hours` name no hours that can be backfilled.
    #[error("{0}")]
    Range(String),
    /// `exchangeInfo` has no pair of that quote asset.
    #[error("Binance's exchangeInfo at {url} lists no pair quoted in {quote}; check --quote (e.g. USDT, FDUSD, BTC)")]
    NoPairs {
        /// The quote asset asked for.
        quote: String,
        /// Where exchangeInfo came from.
        url: String,
    },
}

impl BackfillError {
    /// Failures that running again cannot fix: a bad range, quote or URL, a Binance ban or
    /// restriction, a lake's configuration or permissions.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Binance(e) => e.is_permanent(),
            Self::Archive(e) => e.is_permanent(),
            Self::Lake(e) => e.is_permanent(),
            Self::Range(_) | Self::NoPairs { .. } => true,
        }
    }
}

impl From<LakeError> for BackfillError {
    fn from(e: LakeError) -> Self {
        Self::Lake(e)
    }
}

/// The hour slots a backfill covers, `[first, end)`, each on the hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRange {
    /// The first slot.
    pub first: DateTime<Utc>,
    /// The slot after the last.
    pub end: DateTime<Utc>,
}

impl SlotRange {
    /// The range `--from`, `--to` and `--hours` name at `now`: `--to` defaults to the current hour
    /// (which is `collect`'s, so never backfilled), `--hours N` means the N hours before `--to`,
    /// and with neither `--from` nor `--hours` the last 48 hours.
    pub fn resolve(
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        hours: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<Self, BackfillError> {
        let current = hour_slot(now);
        let end = to.unwrap_or(current);
        if end > current {
            return Err(BackfillError::Range(format!(
                "--to {} is after the current hour ({}): that hour and later ones are not over (the current one is collect's); \
                 leave --to out to backfill up to now",
                rfc3339(end),
                rfc3339(current)
            )));
        }
        let first = match (from, hours) {
            (Some(from), _) => from,
            (None, hours) => {
                let n = hours.unwrap_or(48);
                end.checked_sub_signed(TimeDelta::hours(i64::from(n))).ok_or_else(|| {
                    BackfillError::Range(format!("--hours {n} reaches back before any date there is; use --from with a date instead"))
                })?
            }
        };
        if first >= end {
            return Err(BackfillError::Range(format!(
                "--from {} is not before --to {}: no hour to backfill; --from is the first hour, --to the end (excluded)",
                rfc3339(first),
                rfc3339(end)
            )));
        }
        Ok(Self { first, end })
    }

    /// Hours since the epoch of `[first, end)`.
    fn hours(self) -> std::ops::Range<i64> {
        hour_number(self.first)..hour_number(self.end)
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn hour_number(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(3600)
}

fn hour_time(h: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(h * 3600, 0).expect("an hour in range")
}

/// Parse `--from` / `--to`: a date (`2024-01-01`, midnight UTC) or an RFC 3339 time on the hour.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(d) => d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc(),
        Err(_) => DateTime::parse_from_rfc3339(s)
            .map_err(|_| format!("{s:?} is neither a date (2024-01-01) nor an RFC 3339 time (2024-01-01T12:00:00Z)"))?
            .with_timezone(&Utc),
    };
    if t != hour_slot(t) {
        let before = hour_slot(t);
        return Err(format!(
            "{s} is not on the hour: slots are whole UTC hours; use {} or {}",
            rfc3339(before),
            rfc3339(before + TimeDelta::hours(1))
        ));
    }
    Ok(t)
}

/// What to backfill.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// The slots.
    pub range: SlotRange,
    /// The quote asset whose pairs go into the snapshots (e.g. `USDT`).
    pub quote: String,
}

/// What a backfill did: the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Snapshots created.
    pub written: u64,
    /// Slots that already had a snapshot.
    pub present: u64,
    /// Slots in which no pair has a kline (found now or by an earlier run).
    pub without_data: u64,
    /// Verified archive files used.
    pub archive_files: u64,
    /// Requests to the archive (404s and retries included).
    pub archive_requests: u64,
    /// Requests to the REST API (exchangeInfo, klines pages, lifetimes, retries).
    pub rest_requests: u64,
    /// Bytes downloaded from both.
    pub bytes: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} snapshot(s) written, {} hour(s) already present, {} hour(s) without data; \
             {} archive file(s) ({} archive requests) and {} REST request(s), {} downloaded",
            self.written,
            self.present,
            self.without_data,
            self.archive_files,
            self.archive_requests,
            self.rest_requests,
            indicatif::HumanBytes(self.bytes)
        )
    }
}

/// One month of work: the slots without a snapshot whose klines open in that month.
#[derive(Debug)]
struct MonthPlan {
    first_day: NaiveDate,
    /// Missing slots (hours since the epoch), ascending.
    slots: Vec<i64>,
}

/// The hours (since the epoch) that have a raw snapshot: one listing of `raw/`.
async fn present_hours(lake: &Lake) -> Result<HashSet<i64>, BackfillError> {
    let prefix = format!("{RAW_PREFIX}raw_crypto_prices_");
    Ok(lake
        .list(&prefix)
        .await?
        .into_iter()
        .filter(|o| o.key.ends_with(".csv"))
        .filter_map(|o| {
            let stamp = o.key.strip_prefix(&prefix)?.get(..11)?;
            NaiveDateTime::parse_from_str(&format!("{stamp}00"), "%Y%m%dT%H%M").ok()
        })
        .map(|t| hour_number(t.and_utc()))
        .collect())
}

/// Hours an earlier run found without any kline of `quote`'s pairs, within `range`.
async fn known_empty_hours(lake: &Lake, quote: &str, range: &std::ops::Range<i64>) -> Result<HashSet<i64>, BackfillError> {
    let prefix = format!("{NO_KLINES_PREFIX}{quote}/");
    let parse = |s: &str| NaiveDateTime::parse_from_str(&format!("{s}00"), "%Y%m%dT%H%M").ok().map(|t| hour_number(t.and_utc()));
    let mut out = HashSet::new();
    for o in lake.list(&prefix).await? {
        let Some((a, b)) = o.key.strip_prefix(&prefix).and_then(|r| r.split_once('-')) else { continue };
        if let (Some(a), Some(b)) = (parse(a), parse(b)) {
            out.extend(a.max(range.start)..b.min(range.end));
        }
    }
    Ok(out)
}

fn marker_key(quote: &str, first: i64, end: i64) -> String {
    format!("{NO_KLINES_PREFIX}{quote}/{}-{}", hour_time(first).format(SLOT_FORMAT), hour_time(end).format(SLOT_FORMAT))
}

/// The month (its first day) in which the kline behind slot `h` opens.
fn kline_month(h: i64) -> NaiveDate {
    hour_time(h - 1).date_naive().with_day(1).expect("day 1 exists")
}

/// Fill the range's missing snapshots from `archive` (if any) and `rest`.
pub async fn backfill(
    lake: &Lake,
    rest: &BinanceClient,
    archive: Option<&ArchiveClient>,
    opts: &BackfillOptions,
    now: DateTime<Utc>,
) -> Result<Summary, BackfillError> {
    let range = opts.range.hours();
    let present = present_hours(lake).await?;
    let known_empty = known_empty_hours(lake, &opts.quote, &range).await?;
    let mut summary = Summary::default();
    let mut plans: Vec<MonthPlan> = Vec::new();
    for h in range.clone() {
        if present.contains(&h) {
            summary.present += 1;
        } else if known_empty.contains(&h) {
            summary.without_data += 1;
        } else {
            let month = kline_month(h);
            match plans.last_mut() {
                Some(p) if p.first_day == month => p.slots.push(h),
                _ => plans.push(MonthPlan { first_day: month, slots: vec![h] }),
            }
        }
    }
    // The last hour of the range that has a snapshot already: an hour without data before it is
    // a real gap (maintenance), whatever this run fetches.
    let latest_present = range.clone().rev().find(|h| present.contains(h));
    drop(present);
    let missing: usize = plans.iter().map(|p| p.slots.len()).sum();
    if missing == 0 {
        tracing::info!("every hour of the range has a snapshot or is known to have no data; nothing to fetch");
        return Ok(summary);
    }

    let mut symbols = rest.symbols(&opts.quote).await.map_err(BackfillError::Binance)?;
    if symbols.is_empty() {
        return Err(BackfillError::NoPairs { quote: opts.quote.clone(), url: rest.base_url().to_owned() });
    }
    symbols.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    let halted = symbols.iter().filter(|s| s.status != "TRADING").count();
    tracing::info!(
        "backfilling {missing} hour(s) over {} month(s) for {} {} pairs ({halted} not trading now) from {}",
        plans.len(),
        symbols.len(),
        opts.quote,
        match archive {
            Some(a) => format!("Binance's archive at {}, then REST at {}", a.base_url(), rest.base_url()),
            None => format!("REST at {} (no archive)", rest.base_url()),
        }
    );

    let sources = Sources { rest, archive, today: now.date_naive(), range_ms: ((range.start - 1) * HOUR_MS, (range.end - 1) * HOUR_MS) };
    let bar = progress_bar(plans.len() as u64 * symbols.len() as u64);
    let mut lifetimes = vec![Lifetime::Unknown; symbols.len()];
    let written = AtomicU64::new(0);
    let plan_count = plans.len();
    for (plan_index, plan) in plans.into_iter().enumerate() {
        let month = plan.first_day;
        let month_label = month.format("%Y-%m").to_string();
        bar.set_prefix(month_label.clone());
        // Kline open times this month's missing slots need.
        let lo = (plan.slots[0] - 1) * HOUR_MS;
        let hi = plan.slots[plan.slots.len() - 1] * HOUR_MS;
        let fetched: Vec<(usize, history::Fetched)> = futures::stream::iter(symbols.iter().enumerate())
            .map(|(i, s)| {
                let (sources, bar, lifetime) = (&sources, &bar, lifetimes[i]);
                async move {
                    let f = history::fetch_month(sources, &s.symbol, month, (lo, hi), lifetime).await?;
                    bar.inc(1);
                    Ok::<_, BackfillError>((i, f))
                }
            })
            .buffer_unordered(ARCHIVE_CONCURRENCY)
            .try_collect()
            .await?;
        let mut per_symbol: Vec<Vec<Kline>> = vec![Vec::new(); symbols.len()];
        for (i, f) in fetched {
            lifetimes[i] = f.lifetime;
            summary.archive_files += f.archive_files;
            per_symbol[i] = f.klines;
        }
        let snapshots = build_snapshots(&plan.slots, &symbols, &per_symbol);
        drop(per_symbol);
        let empty: Vec<i64> = snapshots.iter().filter(|(_, s)| s.is_none()).map(|(h, _)| *h).collect();
        // Hours after the range's last kline may just not be answered yet: no marker for them,
        // so that a later run asks again (a maintenance gap always has klines after it: in this
        // run's last month, or already in the lake when this run only fills holes).
        let last_with_data = snapshots.iter().rev().find(|(_, s)| s.is_some()).map(|(h, _)| *h).max(latest_present);
        let final_month = plan_index + 1 == plan_count;
        let markable: Vec<i64> = empty.iter().copied().filter(|h| !final_month || last_with_data.is_some_and(|l| *h < l)).collect();
        let to_write = snapshots.len() - empty.len();
        if to_write > 0 {
            // Hourly runs list only recent raw files; new text here makes the next one list all
            // (before the writes, for a run killed among them; after, for an hourly run between).
            late_raw_note(lake, &month_label, "writing").await?;
        }
        let month_written = write_snapshots(lake, snapshots, &written).await?;
        if month_written > 0 {
            late_raw_note(lake, &month_label, "wrote").await?;
        }
        summary.written += month_written;
        summary.present += plan.slots.len() as u64 - empty.len() as u64 - month_written;
        summary.without_data += empty.len() as u64;
        crate::faults::point("backfill-before-markers");
        write_markers(lake, &opts.quote, &markable).await?;
        let (files, bytes) = (summary.archive_files, archive.map_or(0, ArchiveClient::bytes) + rest.bytes());
        bar.set_message(format!("{files} archive files · {}", indicatif::HumanBytes(bytes)));
        let line = format!(
            "{month_label}: {month_written} snapshot(s) written, {} hour(s) without data ({files} archive files, {} REST requests, {} so far)",
            empty.len(),
            rest.requests(),
            indicatif::HumanBytes(bytes)
        );
        // A terminal shows the bar; logs get a line per month instead.
        if bar.is_hidden() {
            tracing::info!("{line}");
        } else {
            tracing::debug!("{line}");
        }
    }
    bar.finish_and_clear();
    summary.archive_requests = archive.map_or(0, ArchiveClient::requests);
    summary.rest_requests = rest.requests();
    summary.bytes = archive.map_or(0, ArchiveClient::bytes) + rest.bytes();
    Ok(summary)
}

/// Give [`LATE_RAW_NOTE`] new text: the service's next hourly run lists every raw file.
async fn late_raw_note(lake: &Lake, month: &str, doing: &str) -> Result<(), BackfillError> {
    let note = format!("backfill {doing} snapshots of {month} (at {})\n", Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    lake.put(LATE_RAW_NOTE, Bytes::from(note)).await.map_err(BackfillError::Lake)
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("backfill {prefix} [{bar:30}] {percent:>3}% {msg} · ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Each missing slot's snapshot (`None`: no pair has a kline for it), in slot order.
fn build_snapshots(slots: &[i64], symbols: &[SymbolInfo], klines: &[Vec<Kline>]) -> Vec<(i64, Option<Bytes>)> {
    // Borrowed rows: a month is about 500 pairs x 744 hours, not worth a copy of each text.
    let mut rows: Vec<Vec<(&str, &str)>> = vec![Vec::new(); slots.len()];
    // Symbols in name order, so every slot's rows come out in name order too.
    for (sym, ks) in symbols.iter().zip(klines) {
        for k in ks {
            let slot = k.open_ms.div_euclid(HOUR_MS) + 1;
            if let Ok(pos) = slots.binary_search(&slot) {
                rows[pos].push((sym.symbol.as_str(), &*k.close));
            }
        }
    }
    slots
        .iter()
        .zip(rows)
        .map(|(&h, r)| (h, (!r.is_empty()).then(|| snapshot::encode_rows(r.iter().copied(), r.len(), hour_time(h)))))
        .collect()
}

/// Create the snapshots concurrently (each only if absent); how many were created.
async fn write_snapshots(lake: &Lake, snapshots: Vec<(i64, Option<Bytes>)>, written: &AtomicU64) -> Result<u64, BackfillError> {
    let created: Vec<bool> = futures::stream::iter(snapshots.into_iter().filter_map(|(h, s)| Some((h, s?))))
        .map(|(h, data)| async move {
            let created = create(lake, snapshot::snapshot_key(hour_time(h)), data).await?;
            if created {
                let n = written.fetch_add(1, Ordering::SeqCst) + 1;
                if cfg!(feature = "fault-injection") {
                    crate::faults::point(&format!("backfill-written-{n}"));
                }
            }
            Ok::<_, BackfillError>(created)
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(created.into_iter().filter(|c| *c).count() as u64)
}

/// Record the month's runs of hours without data, so later runs skip them.
async fn write_markers(lake: &Lake, quote: &str, empty: &[i64]) -> Result<(), BackfillError> {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &h in empty {
        match runs.last_mut() {
            Some(r) if r.1 == h => r.1 = h + 1,
            _ => runs.push((h, h + 1)),
        }
    }
    for (a, b) in runs {
        create(lake, marker_key(quote, a, b), Bytes::new()).await?;
    }
    Ok(())
}

/// Create `key` only if absent: whether it was created.
///
/// One conditional PUT (`If-None-Match: *` on S3): the listing already said the key was absent, so
/// the store's extra existence check would only double the requests. On the local lake the write
/// is a blocking temp file, fsync and link; on the blocking pool many of them overlap (the file
/// system batches their syncs), where on the runtime's workers they would run one at a time.
async fn create(lake: &Lake, key: String, data: Bytes) -> Result<bool, BackfillError> {
    let outcome = if lake.local_path(&key).is_some() {
        let lake = lake.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || handle.block_on(async { lake.put_opts(&key, data, PutMode::Create).await }))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    } else {
        lake.put_opts(&key, data, PutMode::Create).await
    };
    match outcome {
        Ok(_) => Ok(true),
        Err(LakeError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn times_are_dates_or_rfc3339_on_the_hour() {
        assert_eq!(parse_time("2024-01-01").unwrap(), t("2024-01-01T00:00:00Z"));
        assert_eq!(parse_time("2025-01-15T14:00:00+02:00").unwrap(), t("2025-01-15T12:00:00Z"));
        let err = parse_time("2025-01-15T12:30:00Z").unwrap_err();
        assert_eq!(
            err,
            "2025-01-15T12:30:00Z is not on the hour: slots are whole UTC hours; use 2025-01-15T12:00:00Z or 2025-01-15T13:00:00Z"
        );
        assert!(parse_time("yesterday").unwrap_err().contains("neither a date"));
    }

    #[test]
    fn ranges_default_to_the_hours_before_the_current_one() {
        let now = t("2025-03-10T17:42:00Z");
        let r = SlotRange::resolve(None, None, None, now).unwrap();
        assert_eq!((r.first, r.end), (t("2025-03-08T17:00:00Z"), t("2025-03-10T17:00:00Z")));
        let r = SlotRange::resolve(None, Some(t("2025-01-02T00:00:00Z")), Some(24), now).unwrap();
        assert_eq!((r.first, r.end), (t("2025-01-01T00:00:00Z"), t("2025-01-02T00:00:00Z")));
        let r = SlotRange::resolve(Some(t("2020-01-01T00:00:00Z")), None, None, now).unwrap();
        assert_eq!(r.end, t("2025-03-10T17:00:00Z"));
        let err = SlotRange::resolve(None, Some(t("2025-03-10T18:00:00Z")), None, now).unwrap_err().to_string();
        assert!(err.starts_with("--to 2025-03-10T18:00:00Z is after the current hour (2025-03-10T17:00:00Z)"), "{err}");
        let err = SlotRange::resolve(Some(t("2025-03-10T17:00:00Z")), None, None, now).unwrap_err();
        assert!(err.to_string().starts_with("--from 2025-03-10T17:00:00Z is not before --to 2025-03-10T17:00:00Z"), "{err}");
        assert!(err.is_permanent());
    }

    #[test]
    fn a_slots_kline_opens_the_hour_before_in_its_own_month() {
        // The first slot of March is the close of February's last kline.
        assert_eq!(kline_month(hour_number(t("2024-03-01T00:00:00Z"))), NaiveDate::from_ymd_opt(2024, 2, 1).unwrap());
        assert_eq!(kline_month(hour_number(t("2024-03-01T01:00:00Z"))), NaiveDate::from_ymd_opt(2024, 3, 1).unwrap());
    }

    #[test]
    fn snapshots_list_pairs_with_a_kline_in_name_order_stamped_on_the_hour() {
        let sym = |s: &str| SymbolInfo { symbol: s.into(), status: "TRADING".into() };
        let k = |h: i64, c: &str| Kline { open_ms: h * HOUR_MS, close: c.into() };
        let base = hour_number(t("2025-01-01T00:00:00Z"));
        let slots = [base + 1, base + 2, base + 3];
        let built =
            build_snapshots(&slots, &[sym("AUSDT"), sym("BUSDT")], &[vec![k(base, "1.50"), k(base + 2, "1.60")], vec![k(base, "9")]]);
        let text = |i: usize| built[i].1.as_ref().map(|b| String::from_utf8(b.to_vec()).unwrap());
        assert_eq!(
            text(0).unwrap(),
            "symbol,price,timestamp\nAUSDT,1.50,2025-01-01 01:00:00.000000+00:00\nBUSDT,9,2025-01-01 01:00:00.000000+00:00\n"
        );
        assert_eq!(text(1), None, "no pair has a kline opening at 01:00");
        assert_eq!(text(2).unwrap(), "symbol,price,timestamp\nAUSDT,1.60,2025-01-01 03:00:00.000000+00:00\n");
    }

    #[test]
    fn markers_name_their_hours() {
        let h = hour_number(t("2024-03-05T02:00:00Z"));
        assert_eq!(marker_key("USDT", h, h + 3), "_tickerlake/backfill/no-klines/USDT/20240305T02-20240305T05");
    }
}
