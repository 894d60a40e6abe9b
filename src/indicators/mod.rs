//! Indicators: the original job's per-symbol window metrics (5-row moving average, previous
//! price, % change), computed by DuckDB from `indicators.sql`, the single definition.

/// Creates `ind_output` from `ind_input`; see the file for the contract.
pub const SQL: &str = include_str!("indicators.sql");

/// A column of the `processed` table: its name, DuckDB type and Hive (Glue/Athena) type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The column name.
    pub name: &'static str,
    /// Its DuckDB type (the Parquet files' type).
    pub duckdb: &'static str,
    /// Its Hive type in the Glue catalog.
    pub hive: &'static str,
}

/// The `processed` table's data columns, in order: the one definition the engine's Parquet
/// writer, the query views and the Glue table use. (`date` is the partition key, from the path.)
pub const PROCESSED_COLUMNS: [Column; 6] = [
    Column { name: "symbol", duckdb: "VARCHAR", hive: "string" },
    Column { name: "price", duckdb: "DOUBLE", hive: "double" },
    Column { name: "timestamp", duckdb: "TIMESTAMP", hive: "timestamp" },
    Column { name: "moving_avg", duckdb: "DOUBLE", hive: "double" },
    Column { name: "previous_price", duckdb: "DOUBLE", hive: "double" },
    Column { name: "price_change_pct", duckdb: "DOUBLE", hive: "double" },
];

/// The data columns as a quoted SQL select list: `"symbol", "price", …`.
pub fn processed_select_list() -> String {
    PROCESSED_COLUMNS.iter().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>().join(", ")
}

/// Compute the indicators for `ind_input` already loaded in `conn` into `ind_output`.
pub fn compute(conn: &duckdb::Connection) -> duckdb::Result<()> {
    conn.execute_batch(SQL)
}
