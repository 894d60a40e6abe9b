-- title: Rows, symbols and latest snapshot per date partition (pruned by the date partition)
SELECT "date", count(*) AS "rows", count(DISTINCT symbol) AS symbols, max("timestamp") AS latest
FROM processed
WHERE "date" BETWEEN DATE '2000-01-01' AND DATE '2999-12-31'
GROUP BY "date"
ORDER BY "date"
