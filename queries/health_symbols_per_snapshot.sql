-- title: Symbols per snapshot
-- dashboard: Pipeline health
-- panel: timeseries
-- format: time_series
-- note: one row per snapshot in the snapshots rollup (its time and the symbols it kept)
SELECT "time", symbols
FROM snapshots
WHERE $__timeFilter("time")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
ORDER BY "time"
