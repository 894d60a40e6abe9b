-- title: Latest snapshot
-- dashboard: Pipeline health
-- panel: stat
-- format: table
-- unit: dateTimeAsIso
SELECT max("timestamp") AS latest_snapshot
FROM processed
WHERE $__timeFilter("timestamp")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
