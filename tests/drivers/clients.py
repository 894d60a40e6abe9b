"""The Python PostgreSQL clients people use, against `tickerlake serve` (tests/drivers.rs runs this).

Usage: clients.py CLIENT HOST PORT SINCE
  CLIENT: psycopg | sqlalchemy | asyncpg
  SINCE:  an ISO timestamp; the query reads BTCUSDT's rows from it on
Env: PGPASSWORD, PGSSLMODE, PGSSLROOTCERT (as libpq), TL_SLEEP_QUERY (asyncpg: a query to cancel).

Prints one JSON object: the rows of a parameterised query (a timestamp parameter) as
[timestamp ISO, price], the Python types of the first row's values, and the views the client
lists. The Rust test compares them with the lake; this script asserts nothing itself.
"""

import asyncio
import datetime
import json
import os
import sys

QUERY_POS = 'SELECT "timestamp", price FROM processed WHERE symbol = {sym} AND "timestamp" >= {since} ORDER BY "timestamp" LIMIT 5'


def out(rows, views, extra=None):
    rows = [list(r) for r in rows]
    result = {
        "rows": [[r[0].isoformat(sep=" "), r[1]] for r in rows],
        "types": [type(v).__name__ for v in rows[0]] if rows else [],
        "views": sorted(views),
    }
    result.update(extra or {})
    print(json.dumps(result))


def psycopg_client(host, port, since):
    import psycopg

    with psycopg.connect(host=host, port=port, user="analyst", dbname="tickerlake", connect_timeout=10) as conn:
        # Server-side binding (extended protocol), typed parameters.
        cur = conn.execute(QUERY_POS.format(sym="%s", since="%s"), ("BTCUSDT", since))
        rows = cur.fetchall()
        # Binary results too.
        with conn.cursor(binary=True) as bcur:
            bcur.execute(QUERY_POS.format(sym="%s", since="%s"), ("BTCUSDT", since))
            binary = bcur.fetchall()
        views = [r[0] for r in conn.execute("SELECT viewname FROM pg_catalog.pg_views WHERE schemaname = current_schema()")]
        info = conn.info
        out(rows, views, {"binary_equal": [list(r) for r in binary] == [list(r) for r in rows],
                          "server_version": info.server_version, "ssl": info.pgconn.ssl_in_use})


def sqlalchemy_client(host, port, since):
    import pandas as pd
    import sqlalchemy as sa

    password = os.environ.get("PGPASSWORD", "")
    url = sa.engine.URL.create("postgresql+psycopg", username="analyst", password=password or None,
                               host=host, port=int(port), database="tickerlake")
    engine = sa.create_engine(url, connect_args={"connect_timeout": 10})
    frame = pd.read_sql(sa.text(QUERY_POS.format(sym=":sym", since=":since")), engine,
                        params={"sym": "BTCUSDT", "since": since})
    views = sa.inspect(engine).get_view_names()
    rows = [(t.to_pydatetime(), float(p)) for t, p in zip(frame["timestamp"], frame["price"])]
    out(rows, views, {"dtypes": [str(frame[c].dtype) for c in frame.columns]})


async def asyncpg_main(host, port, since):
    import asyncpg

    conn = await asyncpg.connect(host=host, port=int(port), user="analyst", database="tickerlake", timeout=10)
    try:
        # asyncpg prepares (extended protocol) and reads every result column in binary.
        rows = await conn.fetch(QUERY_POS.format(sym="$1", since="$2"), "BTCUSDT", since)
        views = [r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.views WHERE table_schema = current_schema()")]
        extra = {}
        slow = os.environ.get("TL_SLEEP_QUERY")
        if slow:
            # Cancel: a timeout makes asyncpg send a CancelRequest for the running query.
            started = asyncio.get_running_loop().time()
            try:
                await conn.fetch(slow, timeout=1.0)
                extra["cancel"] = "finished"
            except asyncio.TimeoutError:
                extra["cancel"] = "timeout"
            # The connection is usable right after.
            extra["after_cancel"] = await conn.fetchval("SELECT count(*) FROM processed")
            extra["cancel_secs"] = asyncio.get_running_loop().time() - started
        out([(r[0], r[1]) for r in rows], views, extra)
    finally:
        await conn.close()


def main():
    client, host, port, since = sys.argv[1:5]
    since = datetime.datetime.fromisoformat(since)
    if client == "psycopg":
        psycopg_client(host, port, since)
    elif client == "sqlalchemy":
        sqlalchemy_client(host, port, since)
    elif client == "asyncpg":
        asyncio.run(asyncpg_main(host, port, since))
    else:
        sys.exit(f"unknown client {client!r}: psycopg, sqlalchemy or asyncpg")


if __name__ == "__main__":
    main()
