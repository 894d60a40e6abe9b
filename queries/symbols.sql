-- title: Every symbol (the dashboards' $symbol variable)
SELECT DISTINCT symbol
FROM processed
ORDER BY symbol
