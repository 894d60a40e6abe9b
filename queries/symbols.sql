-- title: Every symbol (the dashboards' $symbol variable)
-- variable: symbol
-- dashboard: Crypto Summary
SELECT DISTINCT symbol
FROM processed
ORDER BY symbol
