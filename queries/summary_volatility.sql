-- title: Volatility per day (standard deviation of the hourly % change)
-- dashboard: Crypto Summary
-- panel: barchart
-- format: table
-- unit: percent
-- variables: symbol
SELECT CAST("date" AS VARCHAR) AS day, stddev(price_change_pct) AS volatility
FROM processed
WHERE symbol = ${symbol:sqlstring}
  AND $__timeFilter("timestamp")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
GROUP BY "date"
ORDER BY "date"
