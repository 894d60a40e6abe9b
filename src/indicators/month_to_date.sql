-- tickerlake month-to-date rollup: for each symbol and day with hourly % changes, the power sums
-- (count, sum, sum of squares) of the day's changes, of its month's up to and including the day
-- (`…_to_date`) and of its month's from the day on (`…_from_date`), and the symbol's neighbouring
-- such days in the month (`previous_date`: the day before the month's first when none;
-- `next_date`: the next month's first when none). A range that starts or ends inside a month then
-- reads one row per symbol for that month's part instead of a row per day: the whole-year top 10
-- reads 6,000 rows for its two part months instead of up to 180,000. The days after day D are the
-- from-date sums of the row with previous_date <= D < date; the days before D the to-date sums of
-- the row with date < D <= next_date; whichever days the symbol traded.
--
-- A view over `daily` (in `query`) and a table loaded from it once per committed state (in
-- `serve`, sorted by date, so that a month's lookup skips the other months' row groups): a
-- function of the committed daily rollup, so it can never disagree with it. The sum of squares
-- is each day's M2 plus its count times its squared mean: the moments the daily rollup keeps,
-- regrouped (the variance's one cancellation stays where the top 10 always had it, at the end).
WITH days AS (
    SELECT symbol, "date", CAST(date_trunc('month', "date") AS DATE) AS month,
           change_count AS n, change_count * change_mean AS s, change_m2 + change_count * change_mean * change_mean AS q
    FROM daily
    WHERE change_count > 0
)
SELECT month, "date", symbol,
       n AS change_count, s AS change_sum, q AS change_sumsq,
       coalesce(lag("date") OVER by_day, month - 1) AS previous_date,
       coalesce(lead("date") OVER by_day, CAST(month + INTERVAL 1 MONTH AS DATE)) AS next_date,
       CAST(sum(n) OVER to_date AS BIGINT) AS change_count_to_date,
       sum(s) OVER to_date AS change_sum_to_date,
       sum(q) OVER to_date AS change_sumsq_to_date,
       CAST(sum(n) OVER from_date AS BIGINT) AS change_count_from_date,
       sum(s) OVER from_date AS change_sum_from_date,
       sum(q) OVER from_date AS change_sumsq_from_date
FROM days
WINDOW by_day AS (PARTITION BY symbol, month ORDER BY "date"),
       to_date AS (by_day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
       from_date AS (by_day ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)
