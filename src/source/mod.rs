//! Sources: where prices come from (the Binance REST API) and how a fetch becomes a raw snapshot.

pub mod binance;
pub mod snapshot;
