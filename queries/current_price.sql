-- title: Latest price of every symbol, with the time it was seen
SELECT symbol, max_by(price, "timestamp") AS price, max("timestamp") AS seen_at
FROM processed
GROUP BY symbol
ORDER BY symbol
