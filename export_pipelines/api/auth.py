"""API-key authentication as a dependency every route declares (SPEC, "API keys"): the key comes as
`Authorization: Bearer <key>` or `x-api-key: <key>`; missing, unknown or revoked is a 401, a
project key on another project's path a 403."""

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from export_pipelines.service.exports import ExportService
from export_pipelines.store.api_keys import ApiKey, ApiKeyStore

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <prefix>.<secret>`")
api_key_header = APIKeyHeader(name="x-api-key", auto_error=False, description="The same key as `x-api-key`.")


def service(request: Request) -> ExportService:
    return request.app.state.service


def key_store(request: Request) -> ApiKeyStore:
    return request.app.state.keys


def caller(
    keys: Annotated[ApiKeyStore, Depends(key_store)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    header_key: Annotated[str | None, Security(api_key_header)],
) -> ApiKey:
    """The live API key of the request, or a 401."""
    presented = credentials.credentials if credentials is not None else header_key
    challenge = {"WWW-Authenticate": "Bearer"}
    if not presented:
        raise HTTPException(401, "missing API key: send Authorization: Bearer <key>", headers=challenge)
    key = keys.verify(presented)
    if key is None:
        raise HTTPException(401, "unknown or revoked API key", headers=challenge)
    return key


def project_caller(
    project_id: Annotated[str, Path(alias="projectId", description="The project.", examples=["acme"])],
    key: Annotated[ApiKey, Depends(caller)],
) -> ApiKey:
    """The caller, allowed on the path's project (partner keys: every project), or a 403."""
    if not key.may_access(project_id):
        raise HTTPException(403, f"this API key belongs to project {key.project_id!r}, not {project_id!r}")
    return key


def is_owner(key: ApiKey, record: dict[str, Any]) -> bool:
    """The owner of an export is the user who created it; an export created with no user belongs
    to every key of its project."""
    return record["user_id"] is None or record["user_id"] == key.user_id


def require_owner(key: ApiKey, record: dict[str, Any], action: str) -> None:
    if not is_owner(key, record):
        raise HTTPException(403, f"only the user who created export {record['id']} may {action} it")


def project_key(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
    """The caller of a route without a project in its path (the other vendors' dialects): the
    key's own project is the one acted on, so a partner key (every project) is refused."""
    if key.project_id is None:
        raise HTTPException(403, "a partner key has no project of its own: use a project key on this route")
    return key
