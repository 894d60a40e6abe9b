-- title: Current price
-- dashboard: Crypto Summary
-- panel: gauge
-- format: table
-- unit: currencyUSD
-- variables: symbol
SELECT max_by(price, "timestamp") AS price
FROM processed
WHERE symbol = ${symbol:sqlstring}
  AND $__timeFilter("timestamp")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
