-- tickerlake indicators: the one place the per-symbol window semantics live.
--
-- Input  ind_input(symbol, price, "timestamp", is_carry): the rows to (re)compute plus, flagged
--        is_carry, the last 4 rows of each symbol before them (context only, never output).
-- Output ind_output: per row, the original job's indicators, its date partition, and
--        carry_until: the date from which the row is no longer among its symbol's last 4 rows.
--
-- Order within a symbol is (timestamp, price): a total order on distinguishable rows, so an
-- incremental run and a full recompute agree even when timestamps tie.
-- moving_avg adds the current and up to 4 previous prices in a fixed order instead of AVG over
-- a window frame: DuckDB's frame aggregation may group additions by position in the partition,
-- and an incremental run's partition starts elsewhere than a full run's; this keeps them bit-identical.
CREATE OR REPLACE TEMP TABLE ind_output AS
WITH lagged AS (
    SELECT symbol, price, "timestamp", is_carry,
           lag(price, 1) OVER w AS p1,
           lag(price, 2) OVER w AS p2,
           lag(price, 3) OVER w AS p3,
           lag(price, 4) OVER w AS p4,
           lead("timestamp", 4) OVER w AS ts_4_later
    FROM ind_input
    WINDOW w AS (PARTITION BY symbol ORDER BY "timestamp", price)
)
SELECT symbol,
       price,
       "timestamp",
       (price + coalesce(p1, 0) + coalesce(p2, 0) + coalesce(p3, 0) + coalesce(p4, 0))
         / (1 + (p1 IS NOT NULL)::INT + (p2 IS NOT NULL)::INT + (p3 IS NOT NULL)::INT + (p4 IS NOT NULL)::INT)
           AS moving_avg,
       p1 AS previous_price,
       (price - p1) / p1 * 100 AS price_change_pct,
       CAST("timestamp" AS DATE) AS date,
       CAST(ts_4_later AS DATE) AS carry_until,
       is_carry
FROM lagged;
