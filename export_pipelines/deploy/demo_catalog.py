"""The dev deployment's demo catalog, so that caching works out of the box: a SQLite database
(`crm.sqlite`, table `main.accounts`, 10,000 rows with a primary key and an `updated_at` cursor)
declared as catalog `demo` in a catalogs file beside it."""

import sqlite3
from pathlib import Path

DEMO_CATALOG_ID = "demo"
DEMO_ACCOUNTS = 10_000
_PLANS = ("free", "team", "business", "enterprise")


def build_demo_catalog(folder: Path, rows: int = DEMO_ACCOUNTS) -> Path:
    """Write the demo catalog's database (once) and its catalogs file; returns the catalogs file."""
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "crm.sqlite"
    if not database.exists():
        with sqlite3.connect(database) as connection:
            connection.execute(
                "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL, plan TEXT NOT NULL, "
                "seats INTEGER NOT NULL, monthly_fee REAL NOT NULL, updated_at TEXT NOT NULL)"
            )
            connection.executemany(
                "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (
                        i,
                        f"Account {i:05d}",
                        _PLANS[i % len(_PLANS)],
                        1 + i % 50,
                        round(9.5 * (1 + i % 50), 2),
                        # Fixed-width ISO-8601 text in UTC: SQLite compares it as text.
                        f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00.000000+00:00",
                    )
                    for i in range(1, rows + 1)
                ),
            )
    catalogs = folder / "catalogs.yaml"
    catalogs.write_text(
        '# The dev deployment\'s demo catalog (export-pipelines dev); see README, "Cached tables".\n'
        "catalogs:\n"
        f'  - id: "{DEMO_CATALOG_ID}"\n'
        "    name: demo\n"
        f"    url: sqlite:///{database.absolute()}\n"
    )
    return catalogs
