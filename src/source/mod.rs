//! Sources: where prices come from and how they become raw snapshots. `binance` (the REST API,
//! paced by `weight`) and `snapshot` serve `collect`; `backfill` plans and writes past hours,
//! taking each pair's month of klines from `archive` (data.binance.vision) or REST via `history`.

pub mod archive;
pub mod backfill;
pub mod binance;
mod history;
pub mod snapshot;
pub mod weight;
