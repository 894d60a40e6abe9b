-- title: Volatility per day (standard deviation of the hourly % change)
-- dashboard: Crypto Summary
-- panel: barchart
-- format: table
-- unit: percent
-- variables: symbol
-- note: whole days from the daily rollup (the sample standard deviation from its count and M2), the range's first and last day from the hourly rows
SELECT day, volatility
FROM (
    SELECT CAST("date" AS VARCHAR) AS day,
           CASE WHEN change_count > 1 THEN sqrt(change_m2 / (change_count - 1)) END AS volatility
    FROM daily
    WHERE symbol = ${symbol:sqlstring}
      AND "date" > CAST($__timeFrom() AS DATE) AND "date" < CAST($__timeTo() AS DATE)
    UNION ALL
    SELECT CAST("date" AS VARCHAR), stddev(price_change_pct)
    FROM processed
    WHERE symbol = ${symbol:sqlstring}
      AND $__timeFilter("timestamp")
      AND "date" IN (CAST($__timeFrom() AS DATE), CAST($__timeTo() AS DATE))
    GROUP BY "date"
) AS days
ORDER BY day
