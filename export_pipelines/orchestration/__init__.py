"""Dagster's objects: `export_job` and its ops, the Launchpad schema and the request check built on
it, the shared resources, the request and run-status sensors, the expiry job and schedule.

May import: `settings`, `engine`, `store`, `cache`.
"""
