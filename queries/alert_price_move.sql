-- title: A symbol moved more than 5 % within an hour
-- alert: tickerlake-price-move
-- threshold: gt 5
-- range: 7200
-- for: 0s
-- summary: {{ $labels.symbol }} moved {{ $values.B }} % within an hour
SELECT symbol, max_by(abs(price_change_pct), "timestamp") AS move_pct
FROM processed
WHERE $__timeFilter("timestamp")
  AND "date" BETWEEN CAST($__timeFrom() AS DATE) AND CAST($__timeTo() AS DATE)
GROUP BY symbol
ORDER BY symbol
