-- title: Top 10 most volatile symbols (standard deviation of the hourly % change)
-- dashboard: Crypto Volatility
-- panel: barchart
-- format: table
-- unit: percent
-- datasources: athena
-- note: Athena's variant (Glue has no monthly or month_to_date rollup; serve's reads them: volatility_top10.sql). Each symbol's % changes over the range combined from the whole days' counts, means and M2 (daily rollup) and the first and last day's hourly rows, in one pass: the sum of squared deviations is the parts' M2 plus n * mean^2, less N * (the overall mean)^2 (clamped at 0 against rounding)
WITH parts AS (
    SELECT symbol, change_count AS n, change_mean AS mean, change_m2 AS m2
    FROM daily
    WHERE change_count > 0
      AND "date" > CAST($__timeFrom() AS DATE) AND "date" < CAST($__timeTo() AS DATE)
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
