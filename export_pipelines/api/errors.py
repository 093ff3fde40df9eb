"""Every error of the REST API as `{"error": "<one clear message>"}` with its 4xx status: the
service's exceptions, FastAPI's own (validation, unknown route, body too large), never a stack
trace; a warehouse or request database out of reach is a 503; anything unforeseen is a 500 whose
detail stays in the server's log."""

import logging
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from export_pipelines.engine.request import InvalidRequest, SourceNotReady, UnknownSource
from export_pipelines.engine.warehouse import WarehouseUnavailable
from export_pipelines.service.cache import CacheEntryNotFound
from export_pipelines.service.exports import ExportExpired, ExportNotFinished, ExportNotFound
from export_pipelines.store.database import database_problem
from export_pipelines.store.exports import ExportConflict, IdempotencyConflict

logger = logging.getLogger(__name__)

# Most specific first does not matter: Starlette picks the handler of the nearest class in the MRO.
STATUS_OF: dict[type[Exception], int] = {
    InvalidRequest: 400,
    UnknownSource: 404,
    SourceNotReady: 409,
    CacheEntryNotFound: 404,
    ExportNotFound: 404,
    ExportConflict: 409,
    ExportNotFinished: 409,
    ExportExpired: 410,
    IdempotencyConflict: 422,
}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def validation_message(errors: list[dict[str, Any]]) -> str:
    """Pydantic's errors in the words of the request: `field: problem`, no schema dump."""
    problems = []
    for error in errors:
        if error["type"] == "json_invalid":
            return f"the body is not valid JSON: {error.get('ctx', {}).get('error', 'malformed')}"
        where = ".".join(str(part) for part in error["loc"] if part not in ("body", "query", "path", "header"))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing" and error["loc"] == ("body",):
            return "a JSON body is required"
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def install_error_handlers(app: FastAPI) -> None:
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        message = str(error.detail)
        if isinstance(error.__cause__, RecursionError):  # FastAPI only says it could not parse the body
            message = "the body is not valid JSON: nested too deeply (at most about 1,000 levels)"
        return error_response(error.status_code, message, getattr(error, "headers", None))

    async def invalid_input(_request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, validation_message(list(error.errors())))

    async def service_error(_request: Request, error: Exception) -> JSONResponse:
        status = next(STATUS_OF[cls] for cls in type(error).__mro__ if cls in STATUS_OF)
        return error_response(status, str(error))

    async def warehouse_unavailable(_request: Request, error: WarehouseUnavailable) -> JSONResponse:
        logger.warning("warehouse unavailable: %s", error)
        return error_response(503, "the warehouse is unavailable right now; try again in a moment")

    async def database_unavailable(_request: Request, error: sa.exc.OperationalError) -> JSONResponse:
        # Unreachable, or locked past the busy timeout: nothing of the request was written.
        logger.warning("request database unavailable: %s", database_problem(error))
        return error_response(
            503,
            f"the request database is unavailable right now ({database_problem(error)}); nothing was "
            "recorded: try again in a moment",
            {"Retry-After": "5"},
        )

    async def unforeseen(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        return error_response(500, "internal error; the server's log has the details")

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_input)
    for error_class in STATUS_OF:
        app.add_exception_handler(error_class, service_error)
    app.add_exception_handler(WarehouseUnavailable, warehouse_unavailable)
    app.add_exception_handler(sa.exc.OperationalError, database_unavailable)
    app.add_exception_handler(Exception, unforeseen)
