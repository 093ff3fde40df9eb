"""The README's HTTP API examples (create a key, create an export with curl, wait for it, download
it, list; then Exelensia's and Mixpeek's own examples; then caching a table of the demo catalog and
exporting it), replayed in one shell against a live deployment started like `make dev` starts it;
every command's output must match what the README shows, and the files downloaded are read back
and compared with the warehouse or the catalog."""

import sqlite3
from pathlib import Path

import duckdb
import polars as pl

from export_pipelines_tests.live import Deployment
from export_pipelines_tests.readme import console_blocks, fresh_clone, replay, second_shell


def test_readme_http_api_example_prints_what_it_shows(deployment: Deployment, tmp_path: Path) -> None:
    (block,) = console_blocks("http")
    commands = [(command.replace("http://127.0.0.1:8000", deployment.api_url), shown) for command, shown in block]
    clone = fresh_clone(tmp_path / "export_pipelines")
    replay(commands, clone, second_shell(clone, deployment, tmp_path))
    assert (clone / "charges.csv").read_text().count("\n") == 1001  # the header and 1,000 rows


def test_readme_cache_example_prints_what_it_shows(deployment: Deployment, tmp_path: Path) -> None:
    """Batch create over HTTP, the first refresh run by the daemon and a worker, an export of the
    cached table, the CLI's listing; then the exported file compared with the demo catalog."""
    (block,) = console_blocks("cache")
    commands = [(command.replace("http://127.0.0.1:8000", deployment.api_url), shown) for command, shown in block]
    clone = fresh_clone(tmp_path / "export_pipelines")
    replay(commands, clone, second_shell(clone, deployment, tmp_path))
    catalog = deployment.data_dir / "catalog" / "crm.sqlite"
    with sqlite3.connect(catalog) as source:
        query = "SELECT id, name, seats FROM accounts WHERE plan = 'enterprise' ORDER BY id"
        expected = source.execute(query).fetchall()
    written = pl.read_csv(clone / "enterprise.csv").sort("id")
    assert list(written.select("id", "name", "seats").iter_rows()) == expected


def test_readme_dialect_examples_print_what_they_show(deployment: Deployment, tmp_path: Path) -> None:
    commands = [
        (command.replace("http://127.0.0.1:8000", deployment.api_url), shown)
        for block in console_blocks("dialects")
        for command, shown in block
    ]
    clone = fresh_clone(tmp_path / "export_pipelines")
    replay(commands, clone, second_shell(clone, deployment, tmp_path))
    warehouse = deployment.environment["EXPORTS_WAREHOUSE"]
    with duckdb.connect(warehouse, read_only=True) as connection:
        january = connection.sql(
            "SELECT id FROM payment.charges WHERE created_at <= TIMESTAMPTZ '2024-01-31 23:59:59.999+00' ORDER BY id"
        ).pl()
        documents = connection.sql(
            "SELECT document_id FROM search.documents WHERE name = 'John' AND age >= 30 "
            "AND (status = 'active' OR role = 'admin') AND NOT (department = 'HR' OR location = 'remote') "
            "ORDER BY document_id"
        ).pl()
    assert pl.read_csv(clone / "january.csv")["id"].to_list() == january["id"].to_list()
    written = pl.read_parquet(clone / "documents.parquet")
    assert written["document_id"].sort().to_list() == documents["document_id"].to_list()
