-- title: Variation
-- dashboard: Crypto Summary
-- panel: stat
-- format: table
-- unit: percent
-- variables: symbol
-- The % change of the symbol's price from the first to the last snapshot in the dashboard's time
-- range (the original Crypto Summary's "variation" stat). NULLIF: a first price of 0 gives no
-- value on both engines (DuckDB would answer NULL, Athena Infinity).
SELECT (max_by(price, "timestamp") - min_by(price, "timestamp")) / NULLIF(min_by(price, "timestamp"), 0) * 100 AS variation
FROM processed
WHERE symbol = ${symbol:sqlstring}
  AND $__timeFilter("timestamp")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
