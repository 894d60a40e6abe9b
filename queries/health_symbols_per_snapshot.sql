-- title: Symbols per snapshot
-- dashboard: Pipeline health
-- panel: timeseries
-- format: time_series
SELECT date_trunc('hour', "timestamp") AS "time", count(DISTINCT symbol) AS symbols
FROM processed
WHERE $__timeFilter("timestamp")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
GROUP BY date_trunc('hour', "timestamp")
ORDER BY "time"
