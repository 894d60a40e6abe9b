-- title: Price and moving average
-- dashboard: Crypto Summary
-- panel: timeseries
-- format: time_series
-- unit: currencyUSD
-- variables: symbol
-- note: hourly points up to 7 days; beyond, one point per day (the hourly points would be finer than the panel's pixels): each whole day's last price and moving average from the daily rollup, the first and last day's last point in the range from the hourly rows (a day's last point may lie after the range's end). One read of the hourly rows, grouped by the hour or by the day.
SELECT "time", price, moving_avg
FROM (
    SELECT max("timestamp") AS "time", max_by(price, "timestamp") AS price, max_by(moving_avg, "timestamp") AS moving_avg
    FROM processed
    WHERE symbol = ${symbol:sqlstring}
      AND $__timeFilter("timestamp")
      AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
      AND (date_diff('day', CAST($__timeFrom() AS TIMESTAMP), CAST($__timeTo() AS TIMESTAMP)) <= 7
           OR "date" IN (CAST($__timeFrom() AS DATE), CAST($__timeTo() AS DATE)))
    GROUP BY CASE WHEN date_diff('day', CAST($__timeFrom() AS TIMESTAMP), CAST($__timeTo() AS TIMESTAMP)) <= 7
                  THEN "timestamp" ELSE CAST("date" AS TIMESTAMP) END
    UNION ALL
    SELECT last_time, last_price, last_moving_avg
    FROM daily
    WHERE date_diff('day', CAST($__timeFrom() AS TIMESTAMP), CAST($__timeTo() AS TIMESTAMP)) > 7
      AND symbol = ${symbol:sqlstring}
      AND "date" > CAST($__timeFrom() AS DATE) AND "date" < CAST($__timeTo() AS DATE)
) AS points
ORDER BY "time"
