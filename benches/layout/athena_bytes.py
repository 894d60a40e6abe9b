"""Athena's bytes scanned by one refresh of the Crypto Summary dashboard, by Parquet metadata
arithmetic (no Athena here; ministack's Athena ignores partitions): for each panel query, the
compressed column chunks it needs in the row groups whose `symbol` statistics admit the symbol,
over the partitions its `date` predicate keeps, plus each file's footer. This is what Athena
(Trino's Parquet reader) reads with partition pruning and row-group skipping; Athena bills at
least 10 MB per query on top, which no layout changes.

    python athena_bytes.py LAKE SYMBOL FROM_DATE TO_DATE   (dates inclusive, the range's edge days)
"""
import glob
import os
import sys

import duckdb

lake, symbol, first, last = sys.argv[1:5]
con = duckdb.connect()


def files(table, dates):
    out = []
    for f in sorted(glob.glob(f"{lake}/{table}/date=*/*.parquet")):
        d = f.split("date=")[1][:10]
        if dates(d):
            out.append(f)
    return out


def scanned(paths, columns, symbol_filter=True):
    if not paths:
        return 0
    lst = ", ".join(f"'{p}'" for p in paths)
    cols = ", ".join(f"'{c}'" for c in columns)
    where = f"AND stats_min_value <= '{symbol}' AND stats_max_value >= '{symbol}'" if symbol_filter else ""
    chunks = con.execute(f"""
        WITH m AS (SELECT * FROM parquet_metadata([{lst}])),
             hit AS (SELECT DISTINCT file_name, row_group_id FROM m WHERE path_in_schema = 'symbol' {where})
        SELECT coalesce(sum(total_compressed_size), 0) FROM m JOIN hit USING (file_name, row_group_id)
        WHERE path_in_schema IN ({cols})""").fetchone()[0]
    # The footer: the file's last 8 bytes give its length.
    footers = 0
    for p in paths:
        with open(p, "rb") as fh:
            fh.seek(-8, os.SEEK_END)
            footers += int.from_bytes(fh.read(4), "little") + 8
    return chunks + footers


inside = lambda d: first < d < last
edges = lambda d: d in (first, last)
within = lambda d: first <= d <= last
panels = {
    "summary_current_price": [("rollups/daily", inside, ["symbol", "last_price", "last_time"]),
                              ("processed", edges, ["symbol", "price", "timestamp"])],
    "summary_max_price": [("rollups/daily", inside, ["symbol", "max_price"]), ("processed", edges, ["symbol", "price", "timestamp"])],
    "summary_min_price": [("rollups/daily", inside, ["symbol", "min_price"]), ("processed", edges, ["symbol", "price", "timestamp"])],
    "summary_percent_change": [("rollups/daily", inside, ["symbol", "first_price", "first_time", "last_price", "last_time"]),
                               ("processed", edges, ["symbol", "price", "timestamp"])],
    "summary_price_moving_average": [("rollups/daily", inside, ["symbol", "last_time", "last_price", "last_moving_avg"]),
                                     ("processed", edges, ["symbol", "price", "moving_avg", "timestamp"])],
    "summary_volatility": [("rollups/daily", inside, ["symbol", "change_count", "change_m2"]),
                           ("processed", edges, ["symbol", "price_change_pct", "timestamp"])],
    # The $symbol variable: every symbol of the range (no symbol filter).
    "symbols": [("rollups/daily", within, ["symbol"])],
}
total = 0
print(f"{'query':<30} {'files':>6} {'MB scanned':>11}")
for name, reads in panels.items():
    n, b = 0, 0
    for table, dates, columns in reads:
        paths = files(table, dates)
        n += len(paths)
        b += scanned(paths, columns, symbol_filter=(name != "symbols"))
    total += b
    print(f"{name:<30} {n:>6} {b / 1e6:>11.2f}")
print(f"{'one refresh of Crypto Summary':<30} {'':>6} {total / 1e6:>11.2f}")
