-- title: Current price
-- dashboard: Crypto Summary
-- panel: gauge
-- format: table
-- unit: currencyUSD
-- variables: symbol
-- note: the last price in the range: each whole day's last from the daily rollup, the range's first and last day from the hourly rows
SELECT max_by(price, seen_at) AS price
FROM (
    SELECT last_price AS price, last_time AS seen_at
    FROM daily
    WHERE symbol = ${symbol:sqlstring}
      AND "date" > CAST($__timeFrom() AS DATE) AND "date" < CAST($__timeTo() AS DATE)
    UNION ALL
    SELECT price, "timestamp"
    FROM processed
    WHERE symbol = ${symbol:sqlstring}
      AND $__timeFilter("timestamp")
      AND "date" IN (CAST($__timeFrom() AS DATE), CAST($__timeTo() AS DATE))
) AS days
