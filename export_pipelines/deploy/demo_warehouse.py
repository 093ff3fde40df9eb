"""A deterministic demo warehouse holding every kind of value an export must survive.

`payment.charges` (with timestamps with time zone, decimals, booleans, nulls, unicode, text
with delimiters, quotes and newlines, a nested struct, a list, a vector, system and cache
plumbing columns), `payment.customers`, `payment.invoices`, `search.documents` (the fields of
Mixpeek's export example, with a vector) and the saved query `queries.charges_view`.
"""

import os
from pathlib import Path

import duckdb

DEMO_CHARGES_ROWS = 100_000

# The descriptions cycle through text that trips naive writers.
_DESCRIPTIONS = [
    "Monthly plan",
    'Refund of "premium", partial',
    "Line one\nline two",
    "Café crème ☕ – 東京",
    "semi;colon|pipe\ttab",
    "trailing backslash \\",
    "'; DROP TABLE payment.charges; --",
]


def create_charges(connection: duckdb.DuckDBPyConnection, rows: int, table: str = "payment.charges") -> None:
    """Create `table` with `rows` deterministic charges (also used by the benchmark)."""
    connection.execute("CREATE SCHEMA IF NOT EXISTS payment")
    descriptions = "[" + ", ".join("'" + d.replace("'", "''") + "'" for d in _DESCRIPTIONS) + "]"
    connection.execute(
        f"""
        CREATE OR REPLACE TABLE {table} AS
        SELECT
            i AS id,
            'ch_' || lpad(i::VARCHAR, 8, '0') AS _id,
            (i % 3 + 1)::INTEGER AS _version,
            TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(i * 37) AS created_at,
            DATE '2024-01-01' + (i % 366)::INTEGER AS service_date,
            ((i * 7919) % 1000000 / 100.0)::DECIMAL(12, 2) AS amount,
            CASE i % 3 WHEN 0 THEN 'EUR' WHEN 1 THEN 'USD' ELSE 'JPY' END AS currency,
            i % 4 <> 0 AS paid,
            CASE WHEN i % 11 = 0 THEN NULL ELSE {descriptions}[1 + i % {len(_DESCRIPTIONS)}] END AS description,
            'cus_' || lpad((i % 5000)::VARCHAR, 5, '0') AS customer_id,
            {{'title': 'Charge #' || i, 'category': CASE WHEN i % 13 = 0 THEN NULL
                ELSE ['subscription', 'one-off', 'refund'][1 + i % 3] END}} AS metadata,
            CASE WHEN i % 17 = 0 THEN NULL WHEN i % 5 = 0 THEN []::VARCHAR[]
                ELSE ['tag' || (i % 7), 'tag' || (i % 3)] END AS tags,
            [sin(i)::FLOAT, cos(i)::FLOAT, (i % 10 / 10.0)::FLOAT, 1.0::FLOAT]::FLOAT[4] AS embedding,
            'q' || (i % 100) AS q,
            'cache-v1' AS cache
        FROM range({int(rows)}) AS t(i)
        """
    )


def build_demo_warehouse(path: Path, charges_rows: int = DEMO_CHARGES_ROWS) -> Path:
    """Write the demo warehouse to `path` atomically (readers never see a half-built file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".building")
    staging.unlink(missing_ok=True)
    with duckdb.connect(str(staging)) as connection:
        create_charges(connection, charges_rows)
        connection.execute(
            """
            CREATE TABLE payment.customers AS
            SELECT
                'cus_' || lpad(i::VARCHAR, 5, '0') AS id,
                i AS _id,
                ['Ada Lovelace', 'José Núñez', 'Zoë O''Brien', '李小龍', 'Smith, John'][1 + i % 5] AS name,
                CASE WHEN i % 9 = 0 THEN NULL ELSE 'user' || i || '@example.com' END AS email,
                DATE '1950-01-01' + (i * 97 % 20000)::INTEGER AS birth_date,
                i % 2 = 0 AS active,
                TIMESTAMPTZ '2023-06-01 12:00:00+02' + to_seconds(i * 3600) AS signed_up_at
            FROM range(5000) AS t(i)
            """
        )
        connection.execute(
            """
            CREATE TABLE payment.invoices AS
            SELECT
                'inv_' || lpad(i::VARCHAR, 6, '0') AS id,
                'cus_' || lpad((i % 5000)::VARCHAR, 5, '0') AS customer_id,
                (i * 1234 % 100000 / 100.0)::DECIMAL(18, 4) AS total,
                TIMESTAMP '2024-02-01 09:30:00' + to_seconds(i * 600) AS issued_at,
                CASE WHEN i % 6 = 0 THEN NULL ELSE DATE '2024-03-01' + (i % 90)::INTEGER END AS due_date,
                [{'sku': 'sku-' || (i % 10), 'qty': i % 4 + 1}] AS lines
            FROM range(20000) AS t(i)
            """
        )
        connection.execute(
            """
            CREATE SCHEMA search;
            CREATE TABLE search.documents AS
            SELECT
                'doc_' || lpad(i::VARCHAR, 5, '0') AS document_id,
                ['John', 'Maria', 'john', 'Wei', 'Amara'][1 + i % 5] AS name,
                20 + i % 45 AS age,
                ['active', 'inactive', 'pending'][1 + i % 3] AS status,
                ['admin', 'member', 'viewer', 'member'][1 + i % 4] AS role,
                ['HR', 'Engineering', 'Sales', 'Support'][1 + (i // 3) % 4] AS department,
                ['remote', 'office', 'hybrid'][1 + (i // 2) % 3] AS location,
                {'title': 'Document ' || i, 'category': ['report', 'memo', 'invoice'][1 + i % 3]} AS metadata,
                [cos(i)::FLOAT, sin(i)::FLOAT, (i % 7 / 7.0)::FLOAT]::FLOAT[3] AS embedding,
                TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(i * 600) AS created_at
            FROM range(10000) AS t(i)
            """
        )
        connection.execute("CREATE SCHEMA queries")
        connection.execute(
            """
            CREATE VIEW queries.charges_view AS
            SELECT c.id, c.created_at, c.amount, c.currency, c.paid, c.metadata, cu.name AS customer_name
            FROM payment.charges AS c JOIN payment.customers AS cu ON cu.id = c.customer_id
            """
        )
        connection.execute("CHECKPOINT")
    os.replace(staging, path)
    return path
