-- title: Max price
-- dashboard: Crypto Summary
-- panel: stat
-- format: table
-- unit: currencyUSD
-- variables: symbol
SELECT max(price) AS max_price
FROM processed
WHERE symbol = ${symbol:sqlstring}
  AND $__timeFilter("timestamp")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
