-- title: Every symbol (the dashboards' $symbol variable)
-- variable: symbol
-- dashboard: Crypto Summary
-- note: from the daily rollup: one row per symbol and day instead of one per hour
SELECT DISTINCT symbol
FROM daily
ORDER BY symbol
