//! Indicators: the original job's per-symbol window metrics (5-row moving average, previous
//! price, % change), computed by DuckDB from `indicators.sql`, the single definition.

/// Creates `ind_output` from `ind_input`; see the file for the contract.
pub const SQL: &str = include_str!("indicators.sql");

/// Compute the indicators for `ind_input` already loaded in `conn` into `ind_output`.
pub fn compute(conn: &duckdb::Connection) -> duckdb::Result<()> {
    conn.execute_batch(SQL)
}
