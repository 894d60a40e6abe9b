-- tickerlake month files: a month's per-date rollups in one file of each kind, for Hive readers
-- (the Glue tables Athena queries), so a panel over a year reads 12 files instead of 365. They
-- hold exactly the rows of the month's per-date rollup files, with their date as a column.
--
-- Input  month_daily_input, month_snapshots_input: the month's per-date rollup rows, `date` first.
-- Holes  {daily_file} {snapshots_file} (string literals), {run_id_key} {run_id} (Parquet metadata).
--
-- daily: sorted by symbol, then date, in row groups of 4096 rows, so a one-symbol query reads the
-- footer and the one or two row groups whose symbol statistics admit it (a month of 3,000 symbols
-- is 93,000 rows). Measured on a year of 3,000 symbols, the six Crypto Summary panels read 4.6 MB
-- of the year's month files with 4096-row groups, 4.1 MB with 2048 (a footer twice as large, read
-- for every month of the history), 7.1 MB with 8192 (benches/layout/athena_bytes.py).
COPY (SELECT * FROM month_daily_input ORDER BY symbol, date)
TO {daily_file} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 4096, KV_METADATA {{run_id_key}: {run_id}});

-- snapshots: by time (a month is ~720 rows).
COPY (SELECT * FROM month_snapshots_input ORDER BY "time")
TO {snapshots_file} (FORMAT parquet, COMPRESSION zstd, KV_METADATA {{run_id_key}: {run_id}});
