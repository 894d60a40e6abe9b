-- title: Quarantined rows per day (by the hour of the raw snapshot they came from)
-- dashboard: Pipeline health
-- panel: timeseries
-- format: time_series
-- datasources: postgres
SELECT CAST(day AS TIMESTAMP) AS "time", count(*) AS quarantined_rows
FROM (
    SELECT CAST(substr(stamp, 1, 4) || '-' || substr(stamp, 5, 2) || '-' || substr(stamp, 7, 2) AS DATE) AS day
    FROM (
        SELECT regexp_extract(source_file, '([0-9]{8})T[0-9]{4}', 1) AS stamp
        FROM quarantine
        WHERE source_file LIKE '%raw_crypto_prices_%'
    ) stamped
) days
WHERE day BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
GROUP BY day
ORDER BY "time"
