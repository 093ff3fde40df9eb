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
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from export_pipelines.api.exports import CREATED_LINKS
from export_pipelines_tests.conftest import CATALOG_ID
from export_pipelines_tests.rest import ApiServer, run_queued

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Headers that frame the HTTP message itself. Generated ones (negative cases add headers of any
# name, `Transfer-Encoding: ~0` for one) make the request malformed HTTP, which the HTTP server
# refuses before the API sees it (uvicorn: 400 "Invalid HTTP request received.", as text): that is
# HTTP's answer, not the API's contract, so they are left out of the cases.
FRAMING_HEADERS = {"transfer-encoding", "content-length", "connection", "upgrade", "host", "te", "trailer", "expect"}


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
                for name in [name for name in case.headers or {} if name.lower() in FRAMING_HEADERS]:
                    del case.headers[name]
                if case.path.startswith("/v1/collections/"):  # Mixpeek's export waits 300 s by default
                    case.query = {**(case.query or {}), "wait": 0}
                dialect = case.path.startswith("/v1/")
                case.call_and_validate(headers=dialect_headers if dialect else headers, checks=CHECKS)

            answers_as_documented()


STATEFUL_CHECKS = [check.__name__ for check in CHECKS] + ["use_after_free", "ensure_resource_availability"]
SOURCES = {"catalogId": "warehouse", "schemaName": "payment", "tableName": "invoices", "queryId": "charges_view"}


def test_stateful_scenarios_follow_the_links_of_a_created_export(api_server: ApiServer) -> None:
    """Schemathesis's own engine runs its state machine over the export routes: scenarios of up to 8
    calls chain a create to the export's get, download, cancel and delete through the document's
    links (and through links it infers from answers), with valid generated values between them.
    The checks above on every answer, and two of the chain: a created export is found where its
    links say, a deleted one is gone (404) after. Creates name a real source, so that chains start
    from exports that exist. The engine, unlike a bare Hypothesis state machine, tells a replay that
    differs (the server's state moved on) from a failure."""
    key = api_server.new_key("stateful", None)
    config = SchemathesisConfig.from_dict(
        {
            "headers": {"Authorization": f"Bearer {key}"},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in STATEFUL_CHECKS}},
            "phases": {
                **{phase: {"enabled": False} for phase in ("examples", "coverage", "fuzzing")},
                "stateful": {"enabled": True, "max-steps": 8, "generation": {"mode": "positive"}},
            },
            "seed": 20261201,
            "generation": {"max-examples": 100, "database": "none"},
            "parameters": {"query.wait": 0},  # no run happens meanwhile: a wait would only last
            "operations": [
                {"include-path-regex": "^/v1/|/cache", "enabled": False},  # the test above covers them
                {"include-path-regex": "/exports$", "include-method": "POST", "parameters": SOURCES},
            ],
        }
    )
    schema = schemathesis.openapi.from_url(f"{api_server.url}/openapi.json", config=config)
    problems: list = []
    checked: set[str] = set()
    followed: set[tuple[str, int]] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, (events.NonFatalError, events.FatalError)):
            problems.append(event)
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for checks in recorder.checks.values():
                checked |= {check.name for check in checks}
                problems += [check.failure_info for check in checks if check.status != Status.SUCCESS]
            for case_id, node in recorder.cases.items():
                interaction = recorder.interactions.get(case_id)
                if node.is_transition_applied and interaction and interaction.response:
                    followed.add((node.transition.id, interaction.response.status_code))
    assert not problems, problems
    assert checked >= set(STATEFUL_CHECKS), checked
    # Only a followed link names an export that exists: a 200 through each of them proves it.
    answered = {
        link
        for link in CREATED_LINKS
        for transition, status in followed
        if f"[202] {link} ->" in transition and status == 200
    }
    assert answered >= {"GetExport", "DeleteExport", "CancelExport"}, sorted(followed)
