"""The bare-DuckDB floor of `tickerlake process --full`: the same engine (DuckDB 2.0.0, as bundled
by duckdb-rs), the same files, the same filters and the same window SQL (src/indicators/indicators.sql,
read from the repository), Parquet partitioned by date, and nothing else: no validation classes,
no quarantine, no line numbers, no run ids, no staging or commit.

    python floor.py RAW_DIR OUT_DIR MEMORY_LIMIT
"""
import pathlib
import sys
import tempfile
import time

import duckdb

raw_dir, out_dir, memory_limit = sys.argv[1], sys.argv[2], sys.argv[3]
indicators = (pathlib.Path(__file__).resolve().parents[2] / "src/indicators/indicators.sql").read_text()
started = time.monotonic()
con = duckdb.connect()
spill = tempfile.mkdtemp(prefix="floor-spill-")
con.execute(f"SET memory_limit = '{memory_limit}'; SET temp_directory = '{spill}'; SET preserve_insertion_order = false")
con.execute(f"""
    CREATE TEMP TABLE ind_input AS
    SELECT symbol, TRY_CAST(price AS DOUBLE) AS price,
           TRY_CAST(TRY_CAST("timestamp" AS TIMESTAMPTZ) AS TIMESTAMP) AS "timestamp", false AS is_carry
    FROM read_csv('{raw_dir}/*.csv', columns = {{'symbol': 'VARCHAR', 'price': 'VARCHAR', 'timestamp': 'VARCHAR'}},
                  header = true, auto_detect = false, ignore_errors = true)
    WHERE symbol LIKE '%USDT' AND TRY_CAST(price AS DOUBLE) > 0
""")
con.execute(indicators)
con.execute(f"""
    COPY (SELECT symbol, price, "timestamp", moving_avg, previous_price, price_change_pct, date
          FROM ind_output ORDER BY date, symbol, "timestamp", price)
    TO '{out_dir}' (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd, OVERWRITE_OR_IGNORE true)
""")
rows = con.execute("SELECT count(*) FROM ind_output").fetchone()[0]
print(f"floor: {rows} rows in {time.monotonic() - started:.2f} s", file=sys.stderr)
