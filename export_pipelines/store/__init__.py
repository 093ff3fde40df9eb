"""The service's database: its tables (`tables`), one engine per URL and the additive migration
(`database`), and the moves of `export_requests` rows with the resource that opens them
(`exports`); SQLite or PostgreSQL through SQLAlchemy.

May import: `export_pipelines.settings`.
"""
