-- title: Price and moving average
-- dashboard: Crypto Summary
-- panel: timeseries
-- format: time_series
-- unit: currencyUSD
-- variables: symbol
SELECT "timestamp" AS "time", price, moving_avg
FROM processed
WHERE symbol = ${symbol:sqlstring}
  AND $__timeFilter("timestamp")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
ORDER BY "time"
