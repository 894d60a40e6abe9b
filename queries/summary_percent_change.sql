-- title: Variation
-- dashboard: Crypto Summary
-- panel: stat
-- format: table
-- unit: percent
-- variables: symbol
-- note: the % change of the symbol's price from the first to the last snapshot in the dashboard's time range (the original Crypto Summary's "variation" stat): each whole day's first and last price from the daily rollup, the range's first and last day from the hourly rows. NULLIF: a first price of 0 gives no value on both engines (DuckDB would answer NULL, Athena Infinity).
SELECT (max_by(last_price, last_at) - min_by(first_price, first_at)) / NULLIF(min_by(first_price, first_at), 0) * 100 AS variation
FROM (
    SELECT first_price, first_time AS first_at, last_price, last_time AS last_at
    FROM daily
    WHERE symbol = ${symbol:sqlstring}
      AND "date" > CAST($__timeFrom() AS DATE) AND "date" < CAST($__timeTo() AS DATE)
    UNION ALL
    SELECT price, "timestamp", price, "timestamp"
    FROM processed
    WHERE symbol = ${symbol:sqlstring}
      AND $__timeFilter("timestamp")
      AND "date" IN (CAST($__timeFrom() AS DATE), CAST($__timeTo() AS DATE))
) AS days
