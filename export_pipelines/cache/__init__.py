"""Cached copies of tables of external databases ("catalogs"): the operator's catalogs file
(`catalogs`), refresh schedules and which refreshes are due (`schedules`, `due`), reading sources
into Arrow (`sources`), immutable versions of a copy (`versions`), one refresh as a plain function
(`refresh`), the resource that finds an entry's current copy (`resource`) and where an export reads
(`export_sources`).

No Dagster run machinery: the refresh asset and sensor live in `orchestration`.
May import: `settings`, `engine`, `store`.
"""
