"""The resources every door shares, configured from the environment at run start."""

from typing import Any

from export_pipelines.cache.resource import CachedTablesResource
from export_pipelines.engine.artifacts import ExportS3Resource
from export_pipelines.engine.policy import ExportPolicy
from export_pipelines.engine.warehouse import WarehouseResource
from export_pipelines.store.exports import ExportStoreResource


def default_resources() -> dict[str, Any]:
    return {
        "warehouse": WarehouseResource(),
        "cache": CachedTablesResource(),
        "export_store": ExportStoreResource(),
        "s3": ExportS3Resource(),
        "policy": ExportPolicy(),
    }
