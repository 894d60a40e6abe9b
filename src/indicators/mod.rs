//! Indicators: the original job's per-symbol window metrics (5-row moving average, previous
//! price, % change), computed by DuckDB from `indicators.sql`, the single definition; and the
//! rollups summarising each date's rows (`rollups.sql`) and each month's (`monthly.sql`, a view
//! over the daily rollup; `month_to_date.sql`, its running sums within each month), and the month
//! files that hold a month's per-date rollups for Hive readers (`month_files.sql`). The tables'
//! columns are defined here, once, for the Parquet writers, the query views and the Glue tables.

/// Creates `ind_output` from `ind_input`; see the file for the contract.
pub const SQL: &str = include_str!("indicators.sql");
/// Writes the rollups of `rollup_input`; see the file for the contract.
pub const ROLLUPS_SQL: &str = include_str!("rollups.sql");
/// The `monthly` rollup: the daily rollup combined per symbol and month (a view's body).
pub const MONTHLY_SQL: &str = include_str!("monthly.sql");
/// The `month_to_date` rollup: per symbol and day, the month's % change sums up to and from it (a
/// view's body over the daily rollup).
pub const MONTH_TO_DATE_SQL: &str = include_str!("month_to_date.sql");
/// The views computed from the daily rollup (name, body): they read its files, and `serve` loads
/// them once per committed state.
pub const VIEWS_OVER_DAILY: [(&str, &str); 2] = [("monthly", MONTHLY_SQL), ("month_to_date", MONTH_TO_DATE_SQL)];
/// Writes a month's files from its per-date rollups; see the file for the contract.
pub const MONTH_FILES_SQL: &str = include_str!("month_files.sql");

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

/// The `date` column: the partition key of the per-date files, a column of the month files.
pub const DATE_COLUMN: Column = Column { name: "date", duckdb: "DATE", hive: "date" };

/// The `daily` rollup's columns (per symbol and date; `date` is the partition key).
pub const DAILY_COLUMNS: [Column; 13] = [
    Column { name: "symbol", duckdb: "VARCHAR", hive: "string" },
    Column { name: "observations", duckdb: "BIGINT", hive: "bigint" },
    Column { name: "first_time", duckdb: "TIMESTAMP", hive: "timestamp" },
    Column { name: "first_price", duckdb: "DOUBLE", hive: "double" },
    Column { name: "last_time", duckdb: "TIMESTAMP", hive: "timestamp" },
    Column { name: "last_price", duckdb: "DOUBLE", hive: "double" },
    Column { name: "min_price", duckdb: "DOUBLE", hive: "double" },
    Column { name: "max_price", duckdb: "DOUBLE", hive: "double" },
    Column { name: "mean_price", duckdb: "DOUBLE", hive: "double" },
    Column { name: "last_moving_avg", duckdb: "DOUBLE", hive: "double" },
    Column { name: "change_count", duckdb: "BIGINT", hive: "bigint" },
    Column { name: "change_mean", duckdb: "DOUBLE", hive: "double" },
    Column { name: "change_m2", duckdb: "DOUBLE", hive: "double" },
];

/// The `snapshots` rollup's columns (per snapshot; `date` is the partition key).
pub const SNAPSHOTS_COLUMNS: [Column; 2] =
    [Column { name: "time", duckdb: "TIMESTAMP", hive: "timestamp" }, Column { name: "symbols", duckdb: "BIGINT", hive: "bigint" }];

/// The data columns as a quoted SQL select list: `"symbol", "price", …`.
pub fn processed_select_list() -> String {
    PROCESSED_COLUMNS.iter().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>().join(", ")
}

/// Compute the indicators for `ind_input` already loaded in `conn` into `ind_output`.
pub fn compute(conn: &duckdb::Connection) -> duckdb::Result<()> {
    conn.execute_batch(SQL)
}
