-- title: Every symbol (the dashboards' $symbol variable)
-- variable: symbol
-- dashboard: Crypto Summary
-- datasources: athena
-- note: Athena's variant (Glue has no monthly rollup; serve's reads it: symbols.sql): from the daily rollup, one row per symbol and day instead of one per hour
SELECT DISTINCT symbol
FROM daily
ORDER BY symbol
