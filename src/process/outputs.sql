-- Write a chunk's outputs from ind_output (indicators.sql) to the stage. Holes filled by
-- process::engine: {processed_dir} {carry_dir} (string literals), {columns} (the processed
-- table's select list), {run_id_key} and {run_id} (the Parquet key-value metadata naming the run).

-- One Parquet file per date: the rows computed here (carry rows are context, not output).
-- Sorted by symbol in row groups of 8,192 rows (a day of 3,000 symbols: 9 groups), so a
-- one-symbol query (a price series, a range's edge days) skips the groups whose symbol
-- statistics exclude it: measured with DuckDB 2.0 on two such days, 2.2 ms against 8.0 ms with
-- one group per day (benches/layout/layout.py measures bytes read and size over a lake).
COPY (SELECT {columns}, date
      FROM ind_output WHERE NOT is_carry ORDER BY date, symbol, "timestamp", price)
TO {processed_dir} (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd, ROW_GROUP_SIZE 8192, KV_METADATA {{run_id_key}: {run_id}});

-- @carry
-- The carry state of each date written: every symbol's last 4 rows up to the end of that date,
-- which a later incremental run starting the next day reads as context. A row is in the carry of
-- the dates from its own up to (excluding) carry_until, when a 4th later row of its symbol comes.
-- Only rows whose span is not empty can match (about 4 per symbol and day); each is repeated for
-- the days of its span from the run's first date, and kept for the dates the run writes: as
-- many rows as the output, without a range join (measured with DuckDB 2.0 on a month of 3,000
-- symbols: 55 ms against 113 ms).
COPY (WITH dates AS (SELECT DISTINCT date FROM ind_output WHERE NOT is_carry),
           bounds AS (SELECT min(date) AS first, max(date) + 1 AS after FROM dates),
           spans AS (
               SELECT symbol, price, "timestamp",
                      CAST(unnest(range(CAST(greatest(date, b.first) AS TIMESTAMP),
                                        CAST(least(coalesce(carry_until, b.after), b.after) AS TIMESTAMP),
                                        INTERVAL 1 DAY)) AS DATE) AS date
               FROM ind_output, bounds b
               WHERE carry_until IS NULL OR carry_until > date)
      SELECT date, symbol, price, "timestamp"
      FROM spans SEMI JOIN dates USING (date)
      ORDER BY date, symbol, "timestamp", price)
TO {carry_dir} (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd, KV_METADATA {{run_id_key}: {run_id}});
