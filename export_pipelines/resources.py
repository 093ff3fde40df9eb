"""The resources every door shares, configured from the environment at run start."""

from typing import Any

from export_pipelines.artifacts import ExportS3Resource
from export_pipelines.policy import ExportPolicy
from export_pipelines.store import ExportStoreResource
from export_pipelines.warehouse import WarehouseResource


def default_resources() -> dict[str, Any]:
    return {
        "warehouse": WarehouseResource(),
        "export_store": ExportStoreResource(),
        "s3": ExportS3Resource(),
        "policy": ExportPolicy(),
    }
