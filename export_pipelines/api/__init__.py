"""The REST API (SPEC, "REST API"): a FastAPI application served by uvicorn, with API-key auth,
over `ExportService` and the same request table as every other door.

May import: `settings`, `engine`, `store`, `cache`, `orchestration`, `service`.
"""
