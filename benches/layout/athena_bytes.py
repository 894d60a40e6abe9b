"""Athena's bytes scanned by one refresh of the Crypto Summary dashboard, by Parquet metadata
arithmetic (no Athena here; ministack's Athena ignores partitions): for each panel query, the
compressed column chunks it needs in the row groups whose `symbol` (and, in the rollups' month
files, `date`) statistics admit the query, plus each file's footer; `processed` over the
partitions its `date` predicate keeps, the rollup over every month file (the panels filter on
`date`, a column there, not on the `month` partition). This is what Athena (Trino's Parquet
reader) reads with partition pruning and row-group skipping; Athena bills at least 10 MB per
query on top, which no layout changes.

    python athena_bytes.py LAKE SYMBOL FROM_DATE TO_DATE   (dates inclusive, the range's edge days)
"""
import glob
from datetime import date, timedelta
import os
import sys

import duckdb

lake, symbol, first, last = sys.argv[1:5]
con = duckdb.connect()


def files(table, dates):
    if table == "daily":
        return sorted(glob.glob(f"{lake}/rollups/by_month/daily/month=*/*.parquet"))
    out = []
    for f in sorted(glob.glob(f"{lake}/{table}/date=*/*.parquet")):
        d = f.split("date=")[1][:10]
        if dates(d):
            out.append(f)
    return out


def scanned(paths, columns, symbol_filter=True, date_range=None):
    if not paths:
        return 0
    lst = ", ".join(f"'{p}'" for p in paths)
    cols = ", ".join(f"'{c}'" for c in columns)
    admit = ["TRUE"]
    if symbol_filter:
        admit.append(f"bool_or(path_in_schema = 'symbol' AND stats_min_value <= '{symbol}' AND stats_max_value >= '{symbol}')")
    if date_range:
        lo, hi = date_range
        admit.append(f"NOT bool_or(path_in_schema = 'date' AND (stats_max_value < '{lo}' OR stats_min_value > '{hi}'))")
    chunks = con.execute(f"""
        WITH m AS (SELECT * FROM parquet_metadata([{lst}])),
             hit AS (SELECT file_name, row_group_id FROM m GROUP BY ALL HAVING {' AND '.join(admit)})
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
# The whole days inside the range, as the month files' `date` statistics see them.
inside_range = (str(date.fromisoformat(first) + timedelta(days=1)), str(date.fromisoformat(last) - timedelta(days=1)))
edges = lambda d: d in (first, last)
within = lambda d: first <= d <= last
panels = {
    "summary_current_price": [("daily", inside, ["symbol", "last_price", "last_time"]),
                              ("processed", edges, ["symbol", "price", "timestamp"])],
    "summary_max_price": [("daily", inside, ["symbol", "max_price"]), ("processed", edges, ["symbol", "price", "timestamp"])],
    "summary_min_price": [("daily", inside, ["symbol", "min_price"]), ("processed", edges, ["symbol", "price", "timestamp"])],
    "summary_percent_change": [("daily", inside, ["symbol", "first_price", "first_time", "last_price", "last_time"]),
                               ("processed", edges, ["symbol", "price", "timestamp"])],
    "summary_price_moving_average": [("daily", inside, ["symbol", "last_time", "last_price", "last_moving_avg"]),
                                     ("processed", edges, ["symbol", "price", "moving_avg", "timestamp"])],
    "summary_volatility": [("daily", inside, ["symbol", "change_count", "change_m2"]),
                           ("processed", edges, ["symbol", "price_change_pct", "timestamp"])],
    # The $symbol variable: every symbol of the range (no symbol filter).
    "symbols": [("daily", within, ["symbol"])],
}
total = 0
print(f"{'query':<30} {'files':>6} {'MB scanned':>11}")
for name, reads in panels.items():
    n, b = 0, 0
    for table, dates, columns in reads:
        paths = files(table, dates)
        n += len(paths)
        # The month files' `date` is a column the query filters on: read too.
        days, columns = (((first, last) if name == "symbols" else inside_range), columns + ["date"]) if table == "daily" else (None, columns)
        b += scanned(paths, columns, symbol_filter=(name != "symbols"), date_range=days)
    total += b
    print(f"{name:<30} {n:>6} {b / 1e6:>11.2f}")
print(f"{'one refresh of Crypto Summary':<30} {'':>6} {total / 1e6:>11.2f}")
