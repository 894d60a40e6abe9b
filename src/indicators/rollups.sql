-- tickerlake rollups: small summaries of each date's processed partition, written and committed
-- with it, so that a dashboard over any range reads a few rows per day instead of every hour.
-- Both are functions of the partition alone: a run that rewrites a date rewrites its rollups, and
-- an incremental run writes the same rollups as a full rebuild.
--
-- Input  rollup_input(symbol, price, "timestamp", moving_avg, previous_price, price_change_pct,
--        date): every row of the dates to summarise (a run's computed dates, or committed
--        partitions read back for a date that has no rollups yet).
-- Holes  {daily_dir} {snapshots_dir} (string literals), {run_id_key} {run_id} (Parquet metadata).
--
-- daily: per symbol and date, what a range's max, min, first, last and current price, and the
-- standard deviation of price_change_pct, need exactly: the row count, first and last price and
-- time (by time, ties by price, the window's order), min, max and mean price, the last moving
-- average, and the % change's count, mean and M2 (sum of squared deviations from the mean). A
-- range combines whole days by the parallel-variance formula (queries/) and reads hourly rows for
-- its partial first and last day. Sorted by symbol: a one-symbol query skips most of a file.
COPY (
    SELECT date, symbol,
           count(*) AS observations,
           min("timestamp") AS first_time,
           first(price ORDER BY "timestamp", price) AS first_price,
           max("timestamp") AS last_time,
           last(price ORDER BY "timestamp", price) AS last_price,
           min(price) AS min_price,
           max(price) AS max_price,
           avg(price) AS mean_price,
           last(moving_avg ORDER BY "timestamp", price) AS last_moving_avg,
           count(price_change_pct) AS change_count,
           avg(price_change_pct) AS change_mean,
           var_pop(price_change_pct) * count(price_change_pct) AS change_m2
    FROM rollup_input
    GROUP BY date, symbol
    ORDER BY date, symbol)
TO {daily_dir} (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd, KV_METADATA {{run_id_key}: {run_id}});

-- @snapshots
-- snapshots: per snapshot (the rows that share a fetch time), its time and the symbols it kept:
-- Pipeline health's points, one per hour, instead of a count over every hourly row.
COPY (
    SELECT date, "timestamp" AS "time", count(*) AS symbols
    FROM rollup_input
    GROUP BY date, "timestamp"
    ORDER BY date, "time")
TO {snapshots_dir} (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd, KV_METADATA {{run_id_key}: {run_id}});
