-- title: Top 10 most volatile symbols (standard deviation of the hourly % change)
-- dashboard: Crypto Volatility
-- panel: barchart
-- format: table
-- unit: percent
-- datasources: postgres
-- note: each symbol's % changes over the range combined from their power sums (count n, sum s, sum of squares q) over four grains: the whole months inside it (monthly rollup), the first month's days after the range's first day and the last month's days before its last day (one month_to_date row per symbol each; when the range starts and ends in one month, month_to_date's rows of the days between), and the first and last day (hourly rows). The variance is (q - s^2/n) / (n - 1), clamped at 0 against rounding. Athena's variant has no monthly or month_to_date rollup: volatility_top10.athena.sql
WITH parts AS (
    SELECT symbol, change_count AS n, change_count * change_mean AS s, change_m2 + change_count * change_mean * change_mean AS q
    FROM monthly
    WHERE change_count > 0
      AND month >= CAST(date_trunc('month', CAST($__timeFrom() AS DATE)) + INTERVAL 1 MONTH AS DATE)
      AND month < CAST(date_trunc('month', CAST($__timeTo() AS DATE)) AS DATE)
    UNION ALL
    SELECT symbol, change_count_from_date, change_sum_from_date, change_sumsq_from_date
    FROM month_to_date
    WHERE month = CAST(date_trunc('month', CAST($__timeFrom() AS DATE)) AS DATE)
      AND "date" > CAST($__timeFrom() AS DATE) AND previous_date <= CAST($__timeFrom() AS DATE)
      AND month < CAST(date_trunc('month', CAST($__timeTo() AS DATE)) AS DATE)
    UNION ALL
    SELECT symbol, change_count_to_date, change_sum_to_date, change_sumsq_to_date
    FROM month_to_date
    WHERE month = CAST(date_trunc('month', CAST($__timeTo() AS DATE)) AS DATE)
      AND "date" < CAST($__timeTo() AS DATE) AND next_date >= CAST($__timeTo() AS DATE)
      AND month > CAST(date_trunc('month', CAST($__timeFrom() AS DATE)) AS DATE)
    UNION ALL
    SELECT symbol, change_count, change_sum, change_sumsq
    FROM month_to_date
    WHERE "date" > CAST($__timeFrom() AS DATE) AND "date" < CAST($__timeTo() AS DATE)
      AND date_trunc('month', CAST($__timeFrom() AS DATE)) = date_trunc('month', CAST($__timeTo() AS DATE))
    UNION ALL
    SELECT symbol, count(price_change_pct), sum(price_change_pct), sum(price_change_pct * price_change_pct)
    FROM processed
    WHERE price_change_pct IS NOT NULL
      AND $__timeFilter("timestamp")
      AND "date" IN (CAST($__timeFrom() AS DATE), CAST($__timeTo() AS DATE))
    GROUP BY symbol
)
SELECT symbol, sqrt(greatest(sum(q) - sum(s) * sum(s) / sum(n), 0) / (sum(n) - 1)) AS volatility
FROM parts
GROUP BY symbol
HAVING sum(n) > 1
ORDER BY volatility DESC, symbol
LIMIT 10
