-- title: Top 10 most volatile symbols (standard deviation of the hourly % change)
SELECT symbol, stddev(price_change_pct) AS volatility
FROM processed
GROUP BY symbol
ORDER BY volatility DESC, symbol
LIMIT 10
