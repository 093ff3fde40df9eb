"""Cached-table refresh benchmark on the real PostgreSQL server (127.0.0.1:5432, or $EXPORTS_TEST_POSTGRES).

Builds a 1,000,000-row table in a fresh database, then prints, median of --repeat runs:
- the baseline: `COPY (SELECT * FROM t) TO STDOUT` read to the end through psycopg;
- a full refresh (ADBC → a new DuckDB version, compared by key with the previous one): rows a
  second and the ratio to the baseline (goal <= 1.5);
- an incremental refresh after 1% of the rows changed (10,000 updated, 100 inserted, 100 deleted):
  its time as a share of a full refresh's (goal <= 10%).

    uv run python benchmarks/cache_benchmark.py [--rows 1000000] [--repeat 5]
"""

import argparse
import os
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from export_pipelines.cache.refresh import refresh
from export_pipelines.cache.resource import CachedTablesResource

ADMIN_DSN = os.environ.get("EXPORTS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TABLE = """
    CREATE TABLE public.charges (
        id bigint PRIMARY KEY, customer_id bigint, amount numeric(12,2), currency text, description text,
        paid boolean, created_at timestamptz, updated_at timestamptz NOT NULL
    )
"""
FILL = """
    INSERT INTO public.charges
    SELECT g, g % 5000, (g % 100000) / 100.0, (ARRAY['EUR', 'USD', 'GBP'])[1 + g % 3], 'Charge number ' || g,
           g % 7 <> 0, timestamptz '2024-01-01' + g * interval '37 seconds',
           now() - interval '1 day' + g * interval '1 millisecond'
    FROM generate_series(1, %(rows)s) g
"""


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def copy_to_stdout(url: str) -> None:
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        with cursor.copy("COPY (SELECT * FROM public.charges) TO STDOUT") as copy:
            for _data in copy:
                pass


def change_one_percent(url: str, rows: int, round_number: int) -> None:
    """10,000 of 1,000,000 rows updated, and a few inserted and deleted (1% of the rows changed)."""
    step = 100
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "UPDATE public.charges SET amount = amount + 1, updated_at = now() WHERE id %% %s = %s",
            (step, round_number % step),
        )
        base = rows + round_number * 1000
        connection.execute(
            "INSERT INTO public.charges SELECT g, 1, 1.00, 'EUR', 'new', true, now(), now() "
            "FROM generate_series(%s, %s) g",
            (base + 1, base + rows // 10000),
        )
        connection.execute(
            "DELETE FROM public.charges WHERE id IN (SELECT id FROM public.charges ORDER BY id LIMIT %s)",
            (rows // 10000,),
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    name = f"cache_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = re.sub(r"/[^/]*$", f"/{name}", ADMIN_DSN)
    try:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(TABLE)
            connection.execute(FILL, {"rows": args.rows})
            connection.execute("VACUUM ANALYZE public.charges")
        with tempfile.TemporaryDirectory(prefix="cache-bench-") as folder:
            catalogs = Path(folder) / "catalogs.yaml"
            catalogs.write_text(f'catalogs:\n  - id: "bench"\n    name: bench\n    url: {url}\n')
            os.environ.update(
                EXPORTS_CATALOGS=str(catalogs),
                EXPORTS_CACHE_DIR=f"{folder}/cache",
                EXPORTS_DATABASE_URL=f"sqlite:///{folder}/exports.db",
            )
            cache = CachedTablesResource()
            from export_pipelines.service.cache import CacheService

            (created,) = CacheService(cache).batch(
                "bench", [{"catalogId": "bench", "schemaName": "public", "tableName": "charges"}]
            )
            entry_id = created.cache["id"]
            copy_to_stdout(url)  # warm the server's cache
            baseline, full, incremental, changed = [], [], [], []
            for round_number in range(args.repeat):
                baseline.append(timed(lambda: copy_to_stdout(url)))
                outcome = refresh(cache, cache.store().get(entry_id), full=True)
                full.append(outcome.duration_ms / 1000)
                change_one_percent(url, args.rows, round_number)
                outcome = refresh(cache, cache.store().get(entry_id), full=False)
                assert outcome.kind == "incremental", outcome.reason
                incremental.append(outcome.duration_ms / 1000)
                figures = outcome.figures
                changed.append(figures.inserted + figures.updated + figures.deleted)
        copy_s, full_s, inc_s = (statistics.median(x) for x in (baseline, full, incremental))
        print(f"{args.rows:,} rows of PostgreSQL, median of {args.repeat}")
        print(f"COPY (SELECT ...) TO STDOUT via psycopg   {copy_s:6.2f} s  {args.rows / copy_s:>12,.0f} rows/s")
        print(
            f"full refresh (ADBC -> DuckDB version)     {full_s:6.2f} s  {args.rows / full_s:>12,.0f} rows/s  "
            f"ratio {full_s / copy_s:.2f} (goal <= 1.5)"
        )
        print(
            f"incremental refresh, {statistics.median(changed):,.0f} rows changed   {inc_s:6.2f} s  "
            f"{100 * inc_s / full_s:.1f}% of a full refresh (goal <= 10%)"
        )
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
