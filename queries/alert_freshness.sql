-- title: No new snapshot for 2 hours
-- alert: tickerlake-freshness
-- threshold: gt 120
-- range: 86400
-- for: 0s
-- no-data: Alerting
-- summary: the latest processed snapshot is {{ $values.B }} minutes old (or there is none in the last day)
SELECT date_diff('minute', max("timestamp"), CAST(current_timestamp AS TIMESTAMP)) AS minutes_since_latest
FROM processed
WHERE "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
