-- title: Top 10 most volatile symbols (standard deviation of the hourly % change)
-- dashboard: Crypto Volatility
-- panel: barchart
-- format: table
-- unit: percent
SELECT symbol, stddev(price_change_pct) AS volatility
FROM processed
WHERE $__timeFilter("timestamp")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
GROUP BY symbol
HAVING count(price_change_pct) > 1
ORDER BY volatility DESC, symbol
LIMIT 10
