-- title: Every symbol (the dashboards' $symbol variable)
-- variable: symbol
-- dashboard: Crypto Summary
-- datasources: postgres
-- note: from the monthly rollup: one row per symbol and month (Athena's variant reads the daily rollup: symbols.athena.sql)
SELECT DISTINCT symbol
FROM monthly
ORDER BY symbol
