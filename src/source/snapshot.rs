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

/// A failed `collect`; nothing was written for the hour.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// Binance refused, failed or sent nonsense.
    #[error("{0}")]
    Binance(#[from] BinanceError),
    /// The lake could not be read or written.
    #[error("{0}")]
    Lake(#[from] LakeError),
}

impl CollectError {
    /// Whether retrying cannot help (a setting, a permission, a ban).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Binance(e) => e.is_permanent(),
            Self::Lake(e) => e.is_permanent(),
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
    encode_rows(prices.iter().map(|p| (p.symbol.as_str(), p.price.as_str())), prices.len(), fetched_at)
}

/// Encode a snapshot from borrowed `(symbol, price)` rows (`len` of them, for the buffer): the
/// same bytes as [`encode`], without owning the text (a backfill builds a month of snapshots).
pub fn encode_rows<'a>(rows: impl Iterator<Item = (&'a str, &'a str)>, len: usize, fetched_at: DateTime<Utc>) -> Bytes {
    let ts = format_timestamp(fetched_at);
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::with_capacity(len * 48 + 24));
    // Writing to a Vec cannot fail.
    w.write_record(["symbol", "price", "timestamp"]).expect("in-memory CSV");
    for (symbol, price) in rows {
        w.write_record([symbol, price, ts.as_str()]).expect("in-memory CSV");
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
