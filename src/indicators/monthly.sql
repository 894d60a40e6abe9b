-- tickerlake monthly rollup: the daily rollup's rows of each symbol and calendar month combined,
-- exactly as the daily rollup combines hourly rows, so a range's whole months read one row per
-- symbol instead of about thirty (a year's top 10: 36,000 rows instead of 1.1 million).
--
-- A view over `daily` (in `query`) and a table loaded from it once per committed state (in
-- `serve`): a function of the committed daily rollup, so it can never disagree with it.
-- `month` is the month's first day. first/last by time: days do not overlap, so the first day's
-- first price is the month's. The % change's moments combine by the parallel-variance formula:
-- M2 = sum of the days' M2 plus each day's count times the squared distance of its mean from the
-- month's mean (two passes, no cancellation).
WITH days AS (
    SELECT *, CAST(date_trunc('month', "date") AS DATE) AS month,
           sum(change_count * change_mean) OVER (PARTITION BY symbol, date_trunc('month', "date"))
               / NULLIF(sum(change_count) OVER (PARTITION BY symbol, date_trunc('month', "date")), 0) AS month_change_mean
    FROM daily
)
SELECT month, symbol,
       sum(observations) AS observations,
       min(first_time) AS first_time,
       arg_min(first_price, first_time) AS first_price,
       max(last_time) AS last_time,
       arg_max(last_price, last_time) AS last_price,
       min(min_price) AS min_price,
       max(max_price) AS max_price,
       sum(mean_price * observations) / sum(observations) AS mean_price,
       arg_max(last_moving_avg, last_time) AS last_moving_avg,
       sum(change_count) AS change_count,
       any_value(month_change_mean) AS change_mean,
       CASE WHEN sum(change_count) > 0
            THEN sum(CASE WHEN change_count > 0 THEN change_m2 + change_count * (change_mean - month_change_mean) ^ 2 ELSE 0 END)
       END AS change_m2
FROM days
GROUP BY month, symbol
