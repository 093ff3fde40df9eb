"""The export path: the request model, the hardened warehouse, filters, shaping, the Polars writer,
artifacts in S3, the operator's policy, and the plain step functions that chain them.

No Dagster run machinery and no request table: steps take values and return values.
May import: `export_pipelines.settings`.
"""
