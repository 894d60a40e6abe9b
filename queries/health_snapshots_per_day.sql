-- title: Snapshots per day
-- dashboard: Pipeline health
-- panel: timeseries
-- format: time_series
SELECT CAST("date" AS TIMESTAMP) AS "time", count(*) AS snapshots
FROM snapshots
WHERE $__timeFilter("time")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
GROUP BY "date"
ORDER BY "time"
