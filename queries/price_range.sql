-- title: Highest and lowest price of every symbol
SELECT symbol, max(price) AS max_price, min(price) AS min_price, count(*) AS observations
FROM processed
GROUP BY symbol
ORDER BY symbol
