-- title: Price and moving average
-- dashboard: Crypto Summary
-- panel: timeseries
-- format: time_series
-- unit: currencyUSD
-- variables: symbol
-- note: hourly points up to 7 days; beyond, each day's last price and moving average from the daily rollup (the hourly points would be finer than the panel's pixels)
SELECT "time", price, moving_avg
FROM (
    SELECT "timestamp" AS "time", price, moving_avg
    FROM processed
    WHERE date_diff('day', CAST($__timeFrom() AS TIMESTAMP), CAST($__timeTo() AS TIMESTAMP)) <= 7
      AND symbol = ${symbol:sqlstring}
      AND $__timeFilter("timestamp")
      AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
    UNION ALL
    SELECT last_time, last_price, last_moving_avg
    FROM daily
    WHERE date_diff('day', CAST($__timeFrom() AS TIMESTAMP), CAST($__timeTo() AS TIMESTAMP)) > 7
      AND symbol = ${symbol:sqlstring}
      AND $__timeFilter(last_time)
      AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
) AS points
ORDER BY "time"
