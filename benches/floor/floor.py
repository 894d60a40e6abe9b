"""The bare-DuckDB floor of `tickerlake process --full`: the same engine (DuckDB 2.0.0, as bundled
by duckdb-rs), the same files, the same filters, the same window SQL (src/indicators/indicators.sql)
and the same outputs: Parquet partitioned by date in the same layout (row groups of 8,192 rows),
and the rollups from src/indicators/rollups.sql, both read from the repository; and nothing else:
no validation classes, no quarantine, no line numbers, no carry state, no staging or commit.

    python floor.py RAW_DIR OUT_DIR MEMORY_LIMIT
"""
import pathlib
import sys
import tempfile
import time

import duckdb

raw_dir, out_dir, memory_limit = sys.argv[1], sys.argv[2], sys.argv[3]
repo = pathlib.Path(__file__).resolve().parents[2]
indicators = (repo / "src/indicators/indicators.sql").read_text()
# rollups.sql's holes, as process::engine fills them (the run id metadata is a constant here).
rollups = (repo / "src/indicators/rollups.sql").read_text()
for hole, value in [("{daily_dir}", f"'{out_dir}/rollups/daily'"), ("{snapshots_dir}", f"'{out_dir}/rollups/snapshots'"),
                    ("{run_id_key}", "'tickerlake_run_id'"), ("{run_id}", "'floor'")]:
    rollups = rollups.replace(hole, value)
rollups = rollups.replace("{{", "{").replace("}}", "}")
started = time.monotonic()
(pathlib.Path(out_dir) / "rollups").mkdir(parents=True, exist_ok=True)
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
    TO '{out_dir}/processed' (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd, ROW_GROUP_SIZE 8192, OVERWRITE_OR_IGNORE true)
""")
con.execute("""CREATE TEMP VIEW rollup_input AS
               SELECT symbol, price, "timestamp", moving_avg, previous_price, price_change_pct, date FROM ind_output""")
con.execute(rollups)
rows = con.execute("SELECT count(*) FROM ind_output").fetchone()[0]
print(f"floor: {rows} rows in {time.monotonic() - started:.2f} s", file=sys.stderr)
