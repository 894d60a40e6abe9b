"""Parquet layout of the processed partitions, by measurement: for each row-group size, the bytes
a one-symbol query must read over the whole lake (the column chunks of the row groups whose
symbol statistics admit it: what DuckDB and Athena read), the lake's size, and DuckDB's time for
a one-symbol year of hourly points and for a full scan. Same engine as tickerlake (DuckDB 2.0.0).

    python layout.py PROCESSED_DIR SYMBOL WORK_DIR [ROW_GROUP_SIZES...]
"""
import glob
import os
import pathlib
import sys
import time

import duckdb

processed, symbol, work = sys.argv[1], sys.argv[2], sys.argv[3]
sizes = [int(s) for s in sys.argv[4:]] or [122880, 16384, 8192, 4096, 2048]
con = duckdb.connect()
files = sorted(glob.glob(f"{processed}/date=*/*.parquet"))
print(f"{len(files)} partitions under {processed}; one symbol: {symbol}", file=sys.stderr)
print(f"{'row_group':>10} {'lake_MB':>8} {'groups':>7} {'symbol_read_KB':>15} {'symbol_query_ms':>16} {'full_scan_ms':>13}")
for rg in sizes:
    out = pathlib.Path(work) / f"rg{rg}"
    if not out.exists():
        out.mkdir(parents=True)
        con.execute(f"""
            COPY (SELECT * FROM read_parquet('{processed}/date=*/*.parquet', hive_partitioning = true)
                  ORDER BY date, symbol, "timestamp", price)
            TO '{out}' (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd, ROW_GROUP_SIZE {rg})""")
    glob_ = f"{out}/date=*/*.parquet"
    size = sum(os.path.getsize(f) for f in glob.glob(glob_))
    groups, read = con.execute(f"""
        WITH m AS (SELECT * FROM parquet_metadata('{glob_}')),
             hit AS (SELECT file_name, row_group_id FROM m
                     WHERE path_in_schema = 'symbol' AND stats_min_value <= '{symbol}' AND stats_max_value >= '{symbol}')
        SELECT (SELECT count(*) FROM (SELECT DISTINCT file_name, row_group_id FROM m)),
               sum(total_compressed_size) FROM m JOIN hit USING (file_name, row_group_id)
        WHERE path_in_schema IN ('symbol', 'timestamp', 'price', 'moving_avg')""").fetchone()
    q = f"""SELECT "timestamp", price, moving_avg FROM read_parquet('{glob_}', hive_partitioning = true)
            WHERE symbol = '{symbol}' ORDER BY "timestamp" """
    con.execute(q).fetchall()
    started = time.monotonic()
    for _ in range(5):
        con.execute(q).fetchall()
    one = (time.monotonic() - started) / 5 * 1000
    started = time.monotonic()
    con.execute(f"SELECT symbol, stddev(price_change_pct) FROM read_parquet('{glob_}') GROUP BY symbol").fetchall()
    full = (time.monotonic() - started) * 1000
    print(f"{rg:>10} {size / 1e6:>8.1f} {groups:>7} {read / 1e3:>15.0f} {one:>16.0f} {full:>13.0f}")
