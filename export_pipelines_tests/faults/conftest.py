"""Fixtures of the fault tests: the demo warehouse with a table large enough to kill an export mid-way."""

from pathlib import Path

import duckdb
import pytest

from export_pipelines.deploy.demo_warehouse import build_demo_warehouse, create_charges

LARGE_ROWS = 2_000_000


@pytest.fixture(scope="session")
def fault_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo warehouse plus `payment.large_charges` (LARGE_ROWS rows)."""
    warehouse = build_demo_warehouse(tmp_path_factory.mktemp("fault-warehouse") / "warehouse.duckdb")
    with duckdb.connect(str(warehouse)) as connection:
        create_charges(connection, LARGE_ROWS, table="payment.large_charges")
    return warehouse
