//! Raw snapshots: one CSV per scheduled hour under `raw/`, exactly as Binance sent the prices.
//!
//! Key scheme: `raw/raw_crypto_prices_YYYYMMDDTHH00.csv`, the UTC hour the fetch belongs to.
//! The original pipeline named files by the minute of its run (`…T0316.csv`); both share the
//! `raw_crypto_prices_YYYYMMDDTHH` prefix, so "is this hour collected?" is one prefix listing
//! that also sees a migrated bucket's files. The write itself is create-if-absent, so two
//! collectors racing in the same hour produce one snapshot, never two.
//!
//! Columns `symbol,price,timestamp`; timestamp like the original: `2025-05-08 03:16:32.801588+00:00`.

use bytes::Bytes;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use crate::lake::{Lake, LakeError, PutOutcome, RAW_PREFIX};
use crate::source::binance::{BinanceClient, BinanceError, TickerPrice};

/// A failed `collect` or `backfill`; nothing was written for the hour that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// Binance refused, failed or sent nonsense.
    #[error("{0}")]
    Binance(#[from] BinanceError),
    /// The lake could not be read or written.
    #[error("{0}")]
    Lake(#[from] LakeError),
    /// A kline's close time is not a representable time.
    #[error("Binance sent a kline close time out of range ({0} ms)")]
    BadTime(i64),
}

impl CollectError {
    /// Whether retrying cannot help (a setting, a permission, a ban).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Binance(e) => e.is_permanent(),
            Self::Lake(e) => e.is_permanent(),
            Self::BadTime(_) => false,
        }
    }
}

type Result<T, E = CollectError> = std::result::Result<T, E>;

/// The header of every raw snapshot.
pub const HEADER: &str = "symbol,price,timestamp";
const FILE_PREFIX: &str = "raw_crypto_prices_";

/// Start of the UTC hour containing `t`.
pub fn hour_slot(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).expect("hour truncation of a valid time")
}

/// Key of this tool's snapshot for an hour slot.
pub fn snapshot_key(slot: DateTime<Utc>) -> String {
    format!("{RAW_PREFIX}{FILE_PREFIX}{}.csv", slot.format("%Y%m%dT%H00"))
}

/// Prefix shared by every raw file of that hour, ours (`T0300`) or the original pipeline's (`T0316`).
fn hour_prefix(slot: DateTime<Utc>) -> String {
    format!("{RAW_PREFIX}{FILE_PREFIX}{}", slot.format("%Y%m%dT%H"))
}

/// The raw timestamp text, in the original pipeline's format.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()
}

/// Encode a snapshot as CSV (quoting only if a field ever needs it).
pub fn encode(prices: &[TickerPrice], fetched_at: DateTime<Utc>) -> Bytes {
    let ts = format_timestamp(fetched_at);
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::with_capacity(prices.len() * 48));
    // Writing to a Vec cannot fail.
    w.write_record(["symbol", "price", "timestamp"]).expect("in-memory CSV");
    for p in prices {
        w.write_record([p.symbol.as_str(), p.price.as_str(), ts.as_str()]).expect("in-memory CSV");
    }
    Bytes::from(w.into_inner().expect("in-memory CSV"))
}

/// What `collect` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectOutcome {
    /// A new snapshot was stored.
    Written {
        /// Its key.
        key: String,
        /// How many prices it holds.
        symbols: usize,
    },
    /// The hour already has a snapshot (this key or a migrated one); nothing was fetched or written.
    AlreadyCollected {
        /// The snapshot already there.
        key: String,
    },
}

/// The snapshot already stored for the hour, if any.
pub async fn existing_for_hour(lake: &Lake, slot: DateTime<Utc>) -> Result<Option<String>> {
    Ok(lake.list(&hour_prefix(slot)).await?.into_iter().map(|o| o.key).find(|k| k.ends_with(".csv")))
}

/// Fetch all prices once and store them as this hour's snapshot (at most one per hour).
pub async fn collect(lake: &Lake, client: &BinanceClient, now: impl Fn() -> DateTime<Utc>) -> Result<CollectOutcome> {
    // Cheap pre-check so a re-run within the hour does not spend Binance request weight.
    if let Some(key) = existing_for_hour(lake, hour_slot(now())).await? {
        return Ok(CollectOutcome::AlreadyCollected { key });
    }
    let prices = client.ticker_prices().await?;
    let fetched_at = now();
    let slot = hour_slot(fetched_at);
    if let Some(key) = existing_for_hour(lake, slot).await? {
        return Ok(CollectOutcome::AlreadyCollected { key });
    }
    let key = snapshot_key(slot);
    match lake.put_if_absent(&key, encode(&prices, fetched_at)).await? {
        PutOutcome::Created => Ok(CollectOutcome::Written { key, symbols: prices.len() }),
        PutOutcome::AlreadyExists => Ok(CollectOutcome::AlreadyCollected { key }),
    }
}

/// Fill missing hour snapshots of the last `hours` complete hours (the current hour is left to
/// `collect`) from hourly klines of the symbols quoted in `quote`: each snapshot holds the
/// previous hour's closing prices, stamped at the top of its hour. Returns the keys written;
/// hours that already have a snapshot are left alone.
pub async fn backfill(lake: &Lake, client: &BinanceClient, now: DateTime<Utc>, hours: u32, quote: &str) -> Result<Vec<String>> {
    let end = hour_slot(now) - TimeDelta::hours(1);
    let start = end - TimeDelta::hours(i64::from(hours));
    let mut missing = Vec::new();
    let mut slot = start + TimeDelta::hours(1);
    while slot <= end {
        if existing_for_hour(lake, slot).await?.is_none() {
            missing.push(slot);
        }
        slot += TimeDelta::hours(1);
    }
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let symbols = client.trading_symbols(quote).await?;
    // A kline opening at h closes just before h+1: its close is the price at slot h+1.
    let from_ms = (missing[0] - TimeDelta::hours(1)).timestamp_millis();
    let to_ms = end.timestamp_millis();
    let mut by_slot: std::collections::BTreeMap<DateTime<Utc>, Vec<TickerPrice>> = missing.iter().map(|s| (*s, Vec::new())).collect();
    for symbol in &symbols {
        for (close_ms, close) in client.hourly_closes(symbol, from_ms, to_ms).await? {
            let at = DateTime::<Utc>::from_timestamp_millis(close_ms + 1).ok_or(CollectError::BadTime(close_ms))?;
            if let Some(rows) = by_slot.get_mut(&hour_slot(at)) {
                rows.push(TickerPrice { symbol: symbol.clone(), price: close });
            }
        }
    }
    let mut written = Vec::new();
    for (slot, prices) in by_slot {
        if prices.is_empty() {
            continue;
        }
        let key = snapshot_key(slot);
        if lake.put_if_absent(&key, encode(&prices, slot)).await? == PutOutcome::Created {
            written.push(key);
        }
    }
    Ok(written)
}
