-- title: Snapshots per day
-- dashboard: Pipeline health
-- panel: timeseries
-- format: time_series
SELECT CAST("date" AS TIMESTAMP) AS "time", count(DISTINCT "timestamp") AS snapshots
FROM processed
WHERE $__timeFilter("timestamp")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
GROUP BY "date"
ORDER BY "time"
