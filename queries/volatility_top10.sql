-- title: Top 10 most volatile symbols (standard deviation of the hourly % change)
-- dashboard: Crypto Volatility
-- panel: barchart
-- format: table
-- unit: percent
-- datasources: postgres
-- note: each symbol's % changes over the range combined from three grains: the whole months inside it (monthly rollup: from the first month that starts after the range's first day to the month before its last day's), the other whole days (daily rollup), the first and last day (hourly rows); in one pass, the sum of squared deviations is the parts' M2 plus n * mean^2, less N * (the overall mean)^2 (clamped at 0 against rounding). Athena's variant has no monthly rollup: volatility_top10.athena.sql
WITH parts AS (
    SELECT symbol, change_count AS n, change_mean AS mean, change_m2 AS m2
    FROM monthly
    WHERE change_count > 0
      AND month >= CAST(date_trunc('month', CAST($__timeFrom() AS DATE)) + INTERVAL 1 MONTH AS DATE)
      AND month < CAST(date_trunc('month', CAST($__timeTo() AS DATE)) AS DATE)
    UNION ALL
    SELECT symbol, change_count, change_mean, change_m2
    FROM daily
    WHERE change_count > 0
      AND "date" > CAST($__timeFrom() AS DATE) AND "date" < CAST($__timeTo() AS DATE)
      AND ("date" < CAST(date_trunc('month', CAST($__timeFrom() AS DATE)) + INTERVAL 1 MONTH AS DATE)
           OR "date" >= CAST(date_trunc('month', CAST($__timeTo() AS DATE)) AS DATE))
    UNION ALL
    SELECT symbol, count(price_change_pct), avg(price_change_pct), var_pop(price_change_pct) * count(price_change_pct)
    FROM processed
    WHERE price_change_pct IS NOT NULL
      AND $__timeFilter("timestamp")
      AND "date" IN (CAST($__timeFrom() AS DATE), CAST($__timeTo() AS DATE))
    GROUP BY symbol
)
SELECT symbol, sqrt(greatest(sum(m2 + n * mean * mean) - sum(n * mean) * sum(n * mean) / sum(n), 0) / (sum(n) - 1)) AS volatility
FROM parts
GROUP BY symbol
HAVING sum(n) > 1
ORDER BY volatility DESC, symbol
LIMIT 10
