"""Cached-table refresh benchmark on the real PostgreSQL server (127.0.0.1:5432, or $EXPORTS_TEST_POSTGRES).

Builds a 1,000,000-row table in a fresh database, then prints, median of --repeat runs:
- the baseline: `COPY (SELECT * FROM t) TO STDOUT` read to the end through psycopg;
- a full refresh (ADBC → a new DuckDB version, compared by key with the previous one): rows a
  second and the ratio to the baseline (goal <= 1.5);
- an incremental refresh after 1% of the rows changed (cursor `updated_at`, indexed, lag 1 s), its
  time as a share of a full refresh's
  (goal <= 10%): once with 10,000 rows updated and 100 inserted (the key-only scan is skipped: the
  source's key count and sum match the copy's), once with 100 rows deleted as well (the key-only
  scan runs and removes them).

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
    SELECT g, g %% 5000, (g %% 100000) / 100.0, (ARRAY['EUR', 'USD', 'GBP'])[1 + g %% 3], 'Charge number ' || g,
           g %% 7 <> 0, timestamptz '2024-01-01' + g * interval '37 seconds',
           now() - interval '1 day' + g * interval '1 millisecond'
    FROM generate_series(1, %(rows)s) g
"""


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def copy_to_stdout(url: str) -> None:
    with (
        psycopg.connect(url) as connection,
        connection.cursor() as cursor,
        cursor.copy("COPY (SELECT * FROM public.charges) TO STDOUT") as copy,
    ):
        for _data in copy:
            pass


def change_one_percent(url: str, rows: int, round_number: int, delete: bool) -> None:
    """1% of the rows updated, 0.01% inserted and, with `delete`, 0.01% deleted."""
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
        if delete:
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
            connection.execute("CREATE INDEX ON public.charges (updated_at)")  # as incremental loading wants
            connection.execute("VACUUM ANALYZE public.charges")
        with tempfile.TemporaryDirectory(prefix="cache-bench-") as folder:
            catalogs = Path(folder) / "catalogs.yaml"
            # The rounds follow each other within seconds: a lag of a second keeps each incremental
            # read to the rows changed since the previous refresh (the default of 5 minutes would
            # read every earlier round's changes again).
            catalogs.write_text(
                f'catalogs:\n  - id: "bench"\n    name: bench\n    url: {url}\n'
                "    incremental: {public.charges: {lag: PT1S}}\n"
            )
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
            baseline, full = [], []
            incremental: dict[bool, list[float]] = {False: [], True: []}
            changed: dict[bool, list[int]] = {False: [], True: []}
            for round_number in range(args.repeat):
                baseline.append(timed(lambda: copy_to_stdout(url)))
                outcome = refresh(cache, cache.store().get(entry_id), full=True)
                full.append(outcome.duration_ms / 1000)
                for delete in (False, True):
                    change_one_percent(url, args.rows, 2 * round_number + delete, delete)
                    outcome = refresh(cache, cache.store().get(entry_id), full=False)
                    assert outcome.kind == "incremental", outcome.reason
                    incremental[delete].append(outcome.duration_ms / 1000)
                    figures = outcome.figures
                    changed[delete].append(figures.inserted + figures.updated + figures.deleted)
        copy_s, full_s = statistics.median(baseline), statistics.median(full)
        print(f"{args.rows:,} rows of PostgreSQL, median of {args.repeat}")
        print(f"COPY (SELECT ...) TO STDOUT via psycopg   {copy_s:6.2f} s  {args.rows / copy_s:>12,.0f} rows/s")
        print(
            f"full refresh (ADBC -> DuckDB version)     {full_s:6.2f} s  {args.rows / full_s:>12,.0f} rows/s  "
            f"ratio {full_s / copy_s:.2f} (goal <= 1.5)"
        )
        for delete, label in ((False, "updated/inserted"), (True, "incl. 100 deleted")):
            inc_s = statistics.median(incremental[delete])
            print(
                f"incremental, {statistics.median(changed[delete]):,.0f} rows {label:<17} {inc_s:6.2f} s  "
                f"{100 * inc_s / full_s:5.1f}% of a full refresh (goal <= 10%)"
            )
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
