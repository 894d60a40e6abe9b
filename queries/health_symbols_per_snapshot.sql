-- title: Symbols per snapshot
-- dashboard: Pipeline health
-- panel: timeseries
-- format: time_series
-- note: a snapshot's rows share its fetch time and hold each symbol once, so count(*) per timestamp counts its symbols (count(DISTINCT symbol) per hour took 6.6 s over a year)
SELECT "timestamp" AS "time", count(*) AS symbols
FROM processed
WHERE $__timeFilter("timestamp")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
GROUP BY "timestamp"
ORDER BY "time"
