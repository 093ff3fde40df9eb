"""What every door calls: `ExportService` checks a request like `export_job` does, queues it in the
request table, reads, lists, signs download links, cancels runs, retries and deletes.

May import: `settings`, `engine`, `store`, `cache`, `orchestration`.
"""
