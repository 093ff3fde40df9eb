"""export_pipelines: an asynchronous data export service built on Dagster.

The package is layered; a wing imports only the wings listed before it:
settings → engine → store → orchestration → service → api, cli, deploy.
`definitions.py` merges the Dagster objects of `orchestration` into the code location.
"""
