-- Parse and classify raw snapshot rows. Placeholders filled in by process::engine:
--   {files}    list literal of the engine's copy files (each holds records of several raw files)
--   {rejects}  name for this scan's reject tables        {out}  table to create
--   {ts_pattern}  engine::TIMESTAMP_PATTERN as a string literal
--   {other_quote}  the drop reason of other quotes' rows (engine::OTHER_QUOTE), as a literal
--   {wrong_field_count}  the quarantine reason of records without 3 fields (engine::WRONG_FIELD_COUNT):
--              the engine quarantines one-line records without quotes itself, DuckDB the others
--   {reject_tracking}  empty, or the read_csv options that store rejects in the {rejects} tables:
--              the engine reads strictly first (any structural error fails the read; tracking
--              rejects costs a fifth of the parse) and re-reads with tracking only if that fails
-- and the engine's tables {out}_keys (file_index, path, key) and {out}_repeated (file_index,
-- symbol): the symbols that start more than one record of a file (a NULL symbol: all of them).
-- A row is either KEPT, DROPPED (the original job's filters: other quote, price missing or <= 0),
-- or QUARANTINED with a reason (malformed data the original job would have crashed on or kept).
-- The files read here are the engine's copies of the raw files (engine::number_lines): header
-- removed, blank lines left out, and each record prefixed with three fields:
--   the raw file's {out}_keys.file_index and the record's line in that file, so every row,
--   accepted or rejected, carries the file and line it came from;
--   its timestamp as µs since the epoch when the engine could parse it in its common forms
--   (empty otherwise: then the rule below decides).
-- Rows the engine can tell would be dropped as {other_quote} (plain fields, a complete timestamp,
-- a symbol not seen twice) are not in the copies: it counts them. That is half of every snapshot,
-- which DuckDB then neither parses nor stores.
-- Files whose first line is not the `symbol,price,timestamp` header never get here: the engine
-- quarantines them whole, and replaces the scan view with an empty one when no file is left.
CREATE OR REPLACE TEMP VIEW {out}_scan AS
SELECT raw_file AS file_index, line, ts_micros, symbol, price AS price_text, "timestamp" AS ts_text
FROM read_csv({files},
    columns = {'raw_file': 'INTEGER', 'line': 'BIGINT', 'ts_micros': 'BIGINT', 'symbol': 'VARCHAR', 'price': 'VARCHAR', 'timestamp': 'VARCHAR'},
    header = false, auto_detect = false, delim = ',', quote = '"', escape = '"', new_line = '\n',
    strict_mode = true, null_padding = false{reject_tracking});

-- @classify
CREATE OR REPLACE TEMP TABLE {out} AS
WITH parsed AS (
    SELECT file_index, line, symbol, price_text, ts_text,
           TRY_CAST(price_text AS DOUBLE) AS price,
           -- Complete timestamps only: the cast alone would read '2025-01-03 18:01:' as 18:01:00.
           -- The cast then checks the calendar (Feb 30). Offsets are honoured; a timestamp without
           -- one (older original files) is UTC. The engine already parsed nearly every row's.
           CASE WHEN ts_micros IS NOT NULL THEN make_timestamp(ts_micros)
                WHEN regexp_full_match(ts_text, {ts_pattern})
                THEN TRY_CAST(TRY_CAST(ts_text AS TIMESTAMPTZ) AS TIMESTAMP) END AS "timestamp"
    FROM {out}_scan
), checked AS (
    SELECT *,
        CASE
            WHEN symbol IS NULL OR trim(symbol) = '' THEN 'missing symbol'
            WHEN ts_text IS NULL THEN 'missing timestamp'
            WHEN "timestamp" IS NULL THEN 'unparsable timestamp'
            WHEN price_text IS NOT NULL AND price IS NULL THEN 'non-numeric price'
            WHEN isnan(price) OR isinf(price) THEN 'non-finite price'
        END AS malformed
    FROM parsed
), classified AS (
    SELECT c.*,
        malformed AS quarantine_reason,
        CASE
            WHEN NOT symbol LIKE '%USDT' THEN {other_quote}
            WHEN price IS NULL THEN 'missing price'
            WHEN price <= 0 THEN 'non-positive price'
        END AS drop_reason,
        -- Its symbol starts another record of the file too (engine::number_lines noted it):
        -- maybe a duplicate, decided below.
        r.symbol IS NOT NULL OR a.all_of IS NOT NULL AS repeated
    FROM checked c LEFT JOIN {out}_repeated r USING (file_index, symbol)
    -- A NULL symbol: the engine could not be sure of some symbol of the file, check them all.
    LEFT JOIN (SELECT DISTINCT file_index AS all_of FROM {out}_repeated WHERE symbol IS NULL) a ON a.all_of = c.file_index
)
-- Each row keeps only what later steps read: parsed values if kept, line and text if
-- quarantined or maybe a duplicate, just the reason if dropped (half of a snapshot is other
-- quotes; this halves the run's memory).
SELECT file_index, quarantine_reason, drop_reason,
       CASE WHEN quarantine_reason IS NOT NULL OR repeated THEN line END AS line,
       CASE WHEN quarantine_reason IS NOT NULL OR drop_reason IS NULL OR repeated THEN symbol END AS symbol,
       CASE WHEN quarantine_reason IS NULL AND drop_reason IS NULL THEN price END AS price,
       CASE WHEN quarantine_reason IS NULL AND drop_reason IS NULL THEN "timestamp" END AS "timestamp",
       CASE WHEN quarantine_reason IS NOT NULL OR repeated THEN price_text END AS price_text,
       CASE WHEN quarantine_reason IS NOT NULL OR repeated THEN ts_text END AS ts_text
FROM classified;

-- A snapshot has one row per symbol: its first well-formed row by line (kept, or dropped by the
-- original job's filters). Later well-formed rows of the symbol are quarantined. Only rows of
-- repeated symbols are looked at: well-formed ones are those with a line and no reason yet.
UPDATE {out} SET quarantine_reason = 'duplicate symbol in snapshot', price = NULL, "timestamp" = NULL
FROM (SELECT file_index, symbol, min(line) AS first_line FROM {out}
      WHERE quarantine_reason IS NULL AND line IS NOT NULL GROUP BY ALL) f
WHERE {out}.file_index = f.file_index AND {out}.symbol = f.symbol
  AND {out}.quarantine_reason IS NULL AND {out}.line > f.first_line;

-- Structural errors (wrong field count, bad quoting, invalid UTF-8) never reach {out}; they are
-- read back from the reject table. The raw file and line are the ones the engine put in front of
-- the record (DuckDB's own line numbers count records of the copy, not lines of the raw file), the
-- record is what follows the engine's three fields; a line DuckDB reports once per bad column is
-- one quarantined row.
CREATE OR REPLACE TEMP TABLE {out}_rejects AS
SELECT TRY_CAST(regexp_extract(csv_line, '^([0-9]+),', 1) AS INTEGER) AS file_index,
       TRY_CAST(regexp_extract(csv_line, '^[0-9]+,([0-9]+),', 1) AS BIGINT) AS line,
       min(CASE CAST(error_type AS VARCHAR)
               WHEN 'MISSING COLUMNS' THEN {wrong_field_count}
               WHEN 'TOO MANY COLUMNS' THEN {wrong_field_count}
               ELSE lower(CAST(error_type AS VARCHAR))
           END) AS reason,
       regexp_replace(csv_line, '^[0-9]+,[0-9]+,-?[0-9]*,', '') AS record
FROM {rejects}_errors
GROUP BY ALL;
