-- title: Latest snapshot
-- dashboard: Pipeline health
-- panel: stat
-- format: table
-- unit: dateTimeAsIso
SELECT max("time") AS latest_snapshot
FROM snapshots
WHERE $__timeFilter("time")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
