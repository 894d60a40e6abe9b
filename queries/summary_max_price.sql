-- title: Max price
-- dashboard: Crypto Summary
-- panel: stat
-- format: table
-- unit: currencyUSD
-- variables: symbol
-- note: whole days inside the range from the daily rollup, the range's first and last day from the hourly rows (exact at any range)
SELECT max(price) AS max_price
FROM (
    SELECT max_price AS price
    FROM daily
    WHERE symbol = ${symbol:sqlstring}
      AND "date" > CAST($__timeFrom() AS DATE) AND "date" < CAST($__timeTo() AS DATE)
    UNION ALL
    SELECT price
    FROM processed
    WHERE symbol = ${symbol:sqlstring}
      AND $__timeFilter("timestamp")
      AND "date" IN (CAST($__timeFrom() AS DATE), CAST($__timeTo() AS DATE))
) AS days
