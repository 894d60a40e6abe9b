-- Parse and classify raw snapshot rows. Placeholders filled in by process::engine:
--   {files}  list literal of local CSV paths     {rejects} name for this scan's reject tables
--   {out}    table to create
-- Files whose first line is not the `symbol,price,timestamp` header never get here: the engine
-- quarantines them whole, and runs only the part from the classify marker on when no file is left.
-- A row is either KEPT, DROPPED (the original job's filters: other quote, price missing or <= 0),
-- or QUARANTINED with a reason (malformed data the original job would have crashed on or kept).
CREATE OR REPLACE TEMP TABLE {out}_text AS
SELECT filename AS path, symbol, price AS price_text, "timestamp" AS ts_text
FROM read_csv({files},
    columns = {'symbol': 'VARCHAR', 'price': 'VARCHAR', 'timestamp': 'VARCHAR'},
    header = true, auto_detect = false, delim = ',', quote = '"', escape = '"',
    filename = true, strict_mode = true, null_padding = false,
    store_rejects = true, rejects_table = '{rejects}_errors', rejects_scan = '{rejects}_scans');

-- @classify
CREATE OR REPLACE TEMP TABLE {out} AS
WITH parsed AS (
    SELECT path, symbol, price_text, ts_text,
           TRY_CAST(price_text AS DOUBLE) AS price,
           -- Offsets are honoured; a timestamp without one (older original files) is UTC.
           TRY_CAST(TRY_CAST(ts_text AS TIMESTAMPTZ) AS TIMESTAMP) AS "timestamp"
    FROM {out}_text
)
SELECT path, symbol, price_text, ts_text, price, "timestamp",
    CASE
        WHEN symbol IS NULL OR trim(symbol) = '' THEN 'missing symbol'
        WHEN ts_text IS NULL THEN 'missing timestamp'
        WHEN "timestamp" IS NULL THEN 'unparsable timestamp'
        WHEN price_text IS NOT NULL AND price IS NULL THEN 'non-numeric price'
        WHEN isnan(price) OR isinf(price) THEN 'non-finite price'
    END AS quarantine_reason,
    CASE
        WHEN NOT symbol LIKE '%USDT' THEN 'other quote'
        WHEN price IS NULL THEN 'missing price'
        WHEN price <= 0 THEN 'non-positive price'
    END AS drop_reason
FROM parsed;

-- Structural errors (wrong field count, bad quoting, invalid UTF-8) never reach {out}; they are
-- read back from the reject tables with their line number.
CREATE OR REPLACE TEMP TABLE {out}_rejects AS
SELECT s.file_path AS path, e.line,
       CASE e.error_type
           WHEN 'MISSING COLUMNS' THEN 'wrong field count'
           WHEN 'TOO MANY COLUMNS' THEN 'wrong field count'
           ELSE lower(CAST(e.error_type AS VARCHAR))
       END AS reason,
       e.csv_line AS record
FROM {rejects}_errors e JOIN {rejects}_scans s USING (scan_id, file_id);
