"""The REST API against its own live OpenAPI document, with Schemathesis: generated requests, valid
and invalid by the schema, to every operation, with a partner key so that any project is reachable:
once with every parameter generated, once on a project holding a SUCCEEDED and a PENDING export and
a cache entry (so that answers showing real exports, files, links and entries are checked too). No answer may be a 5xx,
and every answer must be documented and match its schema. Bounded: 25 examples per operation and
pass. `wait` is left out of generated queries (and 0 for Mixpeek's export, which waits by default): no
run happens meanwhile, so a wait would only last. The Exelensia and Mixpeek routes act on the key's
own project, so they are called with a project key of the project holding the exports.

(Schemathesis's pytest loader does not run on pytest 9, so the operations' strategies are driven
with Hypothesis directly.)
"""

import uuid

import dagster as dg
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from export_pipelines_tests.conftest import CATALOG_ID
from export_pipelines_tests.rest import ApiServer, run_queued

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_every_answer_is_documented_and_never_a_5xx(api_server: ApiServer) -> None:
    key = api_server.new_key("fuzzer", None)
    headers = {"Authorization": f"Bearer {key}"}
    project = f"fuzz-{uuid.uuid4().hex[:8]}"
    client = api_server.client(key)
    succeeded = client.create_table(project, "payment.invoices", {"limit": 30, "maxRowsPerFile": 10}).json()["id"]
    with dg.DagsterInstance.ephemeral() as instance:
        run_queued(api_server, instance)
    pending = client.create_query(project, "charges_view", {"limit": 3}).json()["id"]
    assert client.get(project, succeeded).json()["status"] == "SUCCEEDED"

    schema = schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 19  # 7 export routes, 5 cache routes, /healthz, 5 Exelensia routes and Mixpeek's
    # The dialects act on the key's own project: a project key there, on the project of the exports.
    dialect_headers = {"Authorization": f"Bearer {api_server.new_key('fuzzer', project)}"}
    cached = client.cache(
        "POST", project, "/batch", json=[{"catalogId": CATALOG_ID, "schemaName": "public", "tableName": "charges"}]
    )
    cache_id = cached.json()[0]["cache"]["id"]

    def passes(path: str, method: str) -> list[dict[str, str]]:
        """Every parameter generated; then the project's known exports or entry in the path."""
        if method.upper() == "DELETE":
            return [{}]  # keep the known exports and entry for the other operations
        if "/cache/{id}" in path:
            return [{}, {"projectId": project, "id": cache_id}]
        if "/exports/{id}" in path:
            return [{}] + [{"projectId": project, "id": known} for known in (succeeded, pending)]
        return [{}, {"projectId": project}] if "{projectId}" in path else [{}]

    for operation in operations:
        for fixed in passes(operation.path, operation.method):
            names = {parameter.name for parameter in operation.path_parameters}
            path_parameters = {name: value for name, value in fixed.items() if name in names}

            @given(
                case=operation.as_strategy(GenerationMode.POSITIVE, path_parameters=path_parameters)
                | operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=path_parameters)
            )
            @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def answers_as_documented(case) -> None:
                if case.query:
                    case.query.pop("wait", None)
                if case.path.startswith("/v1/collections/"):  # Mixpeek's export waits 300 s by default
                    case.query = {**(case.query or {}), "wait": 0}
                dialect = case.path.startswith("/v1/")
                case.call_and_validate(headers=dialect_headers if dialect else headers, checks=CHECKS)

            answers_as_documented()
