"""The REST API over real HTTP (`export-pipelines api` under uvicorn on loopback), on SQLite and on
PostgreSQL, with the local S3 server: the Peaka create and list examples replayed, runs made by the
request sensor ticked here, artifacts downloaded through the links and read back with DuckDB,
ownership and the auth matrix on every route, validation errors, idempotent creates, expiring
links, cancel and delete, and 200 creates from 4 processes at once.

Not here: cancelling or deleting a RUNNING export (needs a live daemon: test_live_deployment.py),
the OpenAPI contract fuzzing (test_api_contract.py), the README's curl examples (test_api_readme.py).
"""

import hashlib
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import requests
import sqlalchemy as sa

from export_pipelines.engine.artifacts import ExportS3Resource, list_keys
from export_pipelines.store.tables import export_requests
from export_pipelines_tests.conftest import BUCKET, PEAKA_ROWS, download, environment, wait_for
from export_pipelines_tests.rest import ApiServer, Client, run_queued, running_api

# The list fields of Peaka's documented export answer.
PEAKA_LIST_FIELDS = {"id", "status", "format", "rowCount", "bytes", "durationMs", "createdAt", "finishedAt"}


@pytest.fixture
def instance():
    """Where the ticked sensor's runs are recorded: in memory, so that 200 runs stay quick."""
    with dg.DagsterInstance.ephemeral() as test_instance:
        yield test_instance


@pytest.fixture
def project() -> str:
    """A project of the test's own: the API server and its request table are shared."""
    return f"p-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def alice(api_server: ApiServer, project: str) -> Client:
    return api_server.client(api_server.new_key("alice", project, "Alice"))


def _error(response: requests.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert "Traceback" not in body["error"]
    return body["error"]


def test_peaka_create_example_runs_to_succeeded(
    api_server: ApiServer, alice: Client, project: str, instance, api_warehouse: Path
) -> None:
    body = {"format": "CSV", "columns": ["id", "created", "amount"]}
    created = alice.create_table(project, "payment.peaka_charges", body, headers={"X-Trino-Source": "peaka-sdk"})
    assert created.status_code == 202, created.text
    assert set(created.json()) == {"id", "status"} and created.json()["status"] == "PENDING"
    export_id = created.json()["id"]
    assert created.headers["Location"] == f"/api/v1/data/projects/{project}/exports/{export_id}"
    row = api_server.store.get(export_id)
    assert (row["user_id"], row["user_name"], row["client_source"]) == ("alice", "Alice", "peaka-sdk")
    assert row["api_key_prefix"] == alice.key.split(".")[0] and row["project_id"] == project

    assert [r.run_key for r in run_queued(api_server, instance)] == [export_id]
    export = alice.get(project, export_id).json()
    assert set(export) >= PEAKA_LIST_FIELDS
    assert (export["status"], export["rowCount"], export["format"]) == ("SUCCEEDED", PEAKA_ROWS, "CSV")
    assert (export["catalogId"], export["schemaName"], export["tableName"]) == ("warehouse", "payment", "peaka_charges")
    assert export["downloadable"] and export["createdAt"].endswith("Z") and export["finishedAt"].endswith("Z")
    assert export["durationMs"] > 0 and export["bytes"] == sum(f["bytes"] for f in export["files"])

    links = alice.download(project, export_id).json()
    assert links["url"] == links["files"][0]["url"] and links["expiresAt"].endswith("Z")
    target = Path(api_warehouse).parent / f"{export_id}.csv"
    content = download(links["url"])
    assert hashlib.sha256(content).hexdigest() == links["files"][0]["sha256"]
    target.write_bytes(content)
    with duckdb.connect(str(api_warehouse), read_only=True) as connection:
        expected = connection.sql("SELECT id, created, amount FROM payment.peaka_charges ORDER BY id").fetchall()
        exported = connection.sql(
            f"SELECT id, created, amount::DECIMAL(12, 2) FROM read_csv('{target}') ORDER BY id"
        ).fetchall()
    assert exported == expected


def test_a_saved_query_export_and_the_wait_of_get(api_server: ApiServer, alice: Client, project: str, instance) -> None:
    created = alice.create_query(project, "charges_view", {"format": "json", "limit": 10})
    assert created.status_code == 202
    export_id = created.json()["id"]
    pending = alice.get(project, export_id, wait=1).json()
    assert pending["status"] == "PENDING" and pending["queryId"] == "charges_view" and pending["files"] is None
    run_queued(api_server, instance)
    done = alice.get(project, export_id, wait=60).json()
    assert (done["status"], done["rowCount"], done["format"]) == ("SUCCEEDED", 10, "JSONL")


def test_list_example_pages_with_status_filter_and_keyset_cursor(
    api_server: ApiServer, alice: Client, project: str, instance
) -> None:
    made = [alice.create_table(project, "payment.invoices", {"limit": 1}).json()["id"] for _ in range(7)]
    run_queued(api_server, instance)
    # Two more stay PENDING, one is CANCELLED: the status filter must leave them out.
    pending = [alice.create_table(project, "payment.invoices", {"limit": 1}).json()["id"] for _ in range(3)]
    assert alice.cancel(project, pending[0]).json()["status"] == "CANCELLED"
    seen, cursor = [], None
    while True:
        params = {"status": "SUCCEEDED,RUNNING", "limit": 3, **({"createdBefore": cursor} if cursor else {})}
        page = alice.list(project, **params)
        assert page.status_code == 200, page.text
        if not page.json():
            break
        assert len(page.json()) <= 3
        seen += [export["id"] for export in page.json()]
        cursor = page.json()[-1]["createdAt"]
    assert seen == list(reversed(made))  # newest first, every one once
    everything = alice.list(project, limit=1000).json()
    assert [e["id"] for e in everything] == list(reversed(made + pending))  # clamped to 200, not refused
    assert len(alice.list(project, limit=0).json()) == 1  # clamped to 1
    created_after = alice.list(project, createdAfter=everything[3]["createdAt"]).json()
    assert [e["id"] for e in created_after] == [e["id"] for e in everything[:3]]
    assert [e["id"] for e in alice.list(project, search=made[2][:13].upper()).json()] == [made[2]]
    assert len(alice.list(project, search="INVOICES").json()) == 10  # the source and name match
    assert _error(alice.list(project, status="DONE")).startswith("unknown status DONE")


def test_validation_errors_are_one_clear_4xx(api_server: ApiServer, alice: Client, project: str) -> None:
    def error_of(response: requests.Response, status: int) -> str:
        assert response.status_code == status, response.text
        return _error(response)

    unknown_column = error_of(alice.create_table(project, "payment.charges", {"columns": ["id", "zzz"]}), 400)
    assert "unknown column zzz" in unknown_column and "amount" in unknown_column
    assert "unknown field nope" in error_of(
        alice.create_table(
            project, "payment.charges", {"filters": {"AND": [{"field": "nope", "operator": "eq", "value": 1}]}}
        ),
        400,
    )
    assert "format" in error_of(alice.create_table(project, "payment.charges", {"format": "xml"}), 400)
    null_member = {"filters": {"AND": None}}  # Dagster's config check lets it through, then crashes on it
    assert "filters.AND is null" in error_of(alice.create_table(project, "payment.charges", null_member), 400)
    assert "limit" in error_of(alice.create_table(project, "payment.charges", {"limit": "ten"}), 400)
    too_small = {"maxBytesPerFile": 1_000_000}
    assert "max_bytes_per_file must be at least 5 MiB" in error_of(
        alice.create_table(project, "payment.charges", too_small), 400
    )
    assert "includeVectorz: unknown field" in error_of(
        alice.create_table(project, "payment.charges", {"includeVectorz": True}), 400
    )
    assert "unknown saved query 'nope'" in error_of(alice.create_query(project, "nope"), 404)
    assert "unknown table 'payment.nope'" in error_of(alice.create_table(project, "payment.nope"), 404)
    assert "unknown catalog 'stripe'" in error_of(alice.create_table(project, "payment.charges", catalog="stripe"), 404)
    path = f"/api/v1/data/projects/{project}/queries/charges_view/exports"
    json_header = {"Content-Type": "application/json"}
    assert "not valid JSON" in error_of(alice.request("POST", path, data='{"format": ', headers=json_header), 400)
    assert "Content-Type: application/json" in error_of(alice.request("POST", path, data='{"format": "csv"}'), 415)
    assert "larger than 1,048,576 bytes" in error_of(
        alice.request("POST", path, data=b" " * (2 << 20), headers=json_header), 413
    )
    deep = '{"filters": ' + '{"AND": [' * 10_000 + "]}" * 10_000 + "}"
    assert "nested too deeply" in error_of(alice.request("POST", path, data=deep, headers=json_header), 400)
    huge_name = error_of(alice.create_table(project, "payment.charges", {"name": "x" * 900_000}), 400)
    assert huge_name.startswith("name 'xxx") and huge_name.endswith("starting with a letter or digit")
    assert "characters left out" in huge_name and len(huge_name) < 2_100
    chunks = (b" " * 65536 for _ in range(40))  # no Content-Length: refused once past the limit
    assert "larger than" in error_of(alice.request("POST", path, data=chunks, headers=json_header), 413)
    assert error_of(alice.get(project, "no-such-export"), 404) == "no export no-such-export"
    assert error_of(alice.request("GET", "/api/v1/nowhere"), 404) == "Not Found"
    # PostgreSQL refuses NUL in text: such a URL is a 400 before any query (it was a 500, found by Schemathesis).
    assert "NUL character" in error_of(alice.list(project, search="\x00"), 400)
    assert "NUL character" in error_of(alice.get(project, "a\x00b"), 400)
    assert api_server.store.list_exports(project, None, 100, None) == []  # nothing was queued


def test_idempotency_key_makes_a_retried_create_safe(api_server: ApiServer, alice: Client, project: str) -> None:
    body = {"format": "PARQUET", "limit": 5}
    first = alice.create_table(project, "payment.charges", body, headers={"Idempotency-Key": "k-1"})
    again = alice.create_table(project, "payment.charges", body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other_body = alice.create_table(project, "payment.charges", {"limit": 6}, headers={"Idempotency-Key": "k-1"})
    assert other_body.status_code == 422 and "different request" in _error(other_body)
    other_key = alice.create_table(project, "payment.charges", body, headers={"Idempotency-Key": "k-2"})
    assert other_key.json()["id"] != first.json()["id"]
    other_project = f"{project}-b"
    bob = api_server.client(api_server.new_key("bob", other_project))
    elsewhere = bob.create_table(other_project, "payment.charges", body, headers={"Idempotency-Key": "k-1"})
    assert elsewhere.json()["id"] != first.json()["id"]  # keys are per project
    assert len(alice.list(project).json()) == 2


def test_the_auth_matrix_on_every_route(api_server: ApiServer, project: str, instance) -> None:
    owner = api_server.client(api_server.new_key("alice", project))
    teammate = api_server.client(api_server.new_key("carol", project))
    stranger = api_server.client(api_server.new_key("mallory", f"{project}-other"))
    partner_key = api_server.new_key("alice", None)
    partner = api_server.client(partner_key)
    revoked_key = api_server.new_key("alice", project)
    assert api_server.keys.revoke(revoked_key.split(".")[0])
    callers = {
        "none": api_server.client(None),
        "unknown": api_server.client(f"{revoked_key.split('.')[0][:4]}zzzz.{'x' * 43}"),
        "wrong secret": api_server.client(revoked_key.split(".")[0] + ".nope"),
        "revoked": api_server.client(revoked_key),
        "wrong project": stranger,
        "other user": teammate,
        "partner (owner's user)": partner,
        "owner": owner,
    }
    done = owner.create_table(project, "payment.invoices", {"limit": 3}).json()["id"]
    run_queued(api_server, instance)

    def routes(client: Client) -> dict[str, requests.Response]:
        fresh = owner.create_table(project, "payment.invoices", {"limit": 1}).json()["id"]  # for cancel / delete
        return {
            "create table": client.create_table(project, "payment.invoices", {"limit": 1}),
            "create query": client.create_query(project, "charges_view", {"limit": 1}),
            "list": client.list(project),
            "get": client.get(project, done),
            "download": client.download(project, done),
            "cancel": client.cancel(project, fresh),
            "delete": client.delete(project, fresh),
        }

    every_route = ["create table", "create query", "list", "get", "download", "cancel", "delete"]
    expected = {
        "none": dict.fromkeys(every_route, 401),
        "wrong project": dict.fromkeys(every_route, 403),
        "other user": {"create table": 202, "create query": 202, "list": 200, "get": 200, "download": 403,
                       "cancel": 403, "delete": 403},
        "owner": {"create table": 202, "create query": 202, "list": 200, "get": 200, "download": 200,
                  "cancel": 200, "delete": 200},
    }  # fmt: skip
    expected.update({name: expected["none"] for name in ("unknown", "wrong secret", "revoked")})
    expected["partner (owner's user)"] = expected["owner"]
    for name, client in callers.items():
        answers = routes(client)
        assert {route: answer.status_code for route, answer in answers.items()} == expected[name], name
        for answer in answers.values():
            if answer.status_code >= 400:
                _error(answer)
    seen_by_teammate = teammate.get(project, done).json()
    assert seen_by_teammate["files"] is None and seen_by_teammate["downloadable"] is False
    assert seen_by_teammate["expiresAt"] is None and seen_by_teammate["status"] == "SUCCEEDED"
    assert owner.get(project, done).json()["downloadable"] is True
    # An id of another project is unknown there, never revealed.
    assert stranger.get(f"{project}-other", done).status_code == 404
    assert partner.get(f"{project}-other", done).status_code == 404


def test_download_states_and_links_that_expire(
    api_server: ApiServer, alice: Client, project: str, instance, tmp_path: Path
) -> None:
    export_id = alice.create_table(project, "payment.invoices", {"limit": 50, "maxRowsPerFile": 20}).json()["id"]
    assert alice.download(project, export_id).status_code == 409  # PENDING
    run_queued(api_server, instance)
    links = alice.download(project, export_id).json()
    assert [(f["name"], f["rows"]) for f in links["files"]] == [
        ("invoices-00000.csv", 20), ("invoices-00001.csv", 20), ("invoices-00002.csv", 10)
    ]  # fmt: skip
    for file in links["files"]:
        assert hashlib.sha256(download(file["url"])).hexdigest() == file["sha256"]
    with api_server.store.engine.begin() as connection:
        connection.execute(export_requests.update().where(export_requests.c.id == export_id).values(status="EXPIRED"))
    gone = alice.download(project, export_id)
    assert gone.status_code == 410 and "expired" in _error(gone)
    assert alice.download(project, "nope").status_code == 404

    # A server whose links live 2 seconds: S3 itself refuses the link afterwards.
    settings = {**api_server.settings, "EXPORTS_URL_TTL": "2"}
    with running_api(settings, tmp_path / "short.log") as short_lived:
        other = alice.create_table(project, "payment.invoices", {"limit": 5}).json()["id"]
        run_queued(api_server, instance)
        link = short_lived.client(alice.key).download(project, other).json()["url"]
        assert download(link)
        wait_for(lambda: _refused(link), "the presigned link to expire", timeout=30)


def _refused(url: str) -> bool:
    answer = requests.get(url, timeout=10)
    return answer.status_code == 403 and b"expired" in answer.content.lower()


def test_cancel_and_delete(api_server: ApiServer, alice: Client, project: str, instance) -> None:
    queued = alice.create_table(project, "payment.invoices", {"limit": 5}).json()["id"]
    cancelled = alice.cancel(project, queued)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    assert alice.cancel(project, queued).status_code == 409
    done = alice.create_table(project, "payment.invoices", {"limit": 5}).json()["id"]
    assert [r.run_key for r in run_queued(api_server, instance)] == [done]  # the cancelled one never runs
    refused = alice.cancel(project, done)
    assert refused.status_code == 409 and "SUCCEEDED" in _error(refused)
    prefix = api_server.settings["EXPORTS_PREFIX"] + f"{project}/{done}/"
    with environment(api_server.settings):
        client = ExportS3Resource().get_client()
    assert len(list_keys(client, BUCKET, prefix)) == 2  # the file and the manifest
    deleted = alice.delete(project, done)
    assert deleted.status_code == 200 and deleted.json() == {"message": "Export deleted successfully"}
    assert list_keys(client, BUCKET, prefix) == []
    assert alice.get(project, done).status_code == 404 and alice.delete(project, done).status_code == 404


PRODUCER = """
import json, sys
import requests
url, key, project, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
session = requests.Session()
for index in range(count):
    answer = session.post(
        f"{url}/api/v1/data/projects/{project}/catalogs/warehouse/schemas/payment/tables/customers/exports",
        json={"limit": 1, "name": f"c{index}"}, headers={"Authorization": f"Bearer {key}"}, timeout=300,
    )
    assert answer.status_code == 202, answer.text
    print(answer.json()["id"])
"""


def test_200_creates_from_4_processes_none_lost_none_doubled(
    api_server: ApiServer, alice: Client, project: str, instance
) -> None:
    producers = [
        subprocess.Popen(
            [sys.executable, "-c", PRODUCER, api_server.url, alice.key, project, "50"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    answered = []
    for producer in producers:
        out, _ = producer.communicate(timeout=900)
        assert producer.returncode == 0
        answered += out.split()
    assert len(answered) == len(set(answered)) == 200
    with api_server.store.engine.connect() as connection:
        rows = connection.execute(
            sa.select(export_requests.c.id).where(export_requests.c.project_id == project)
        ).scalars().all()  # fmt: skip
    assert sorted(rows) == sorted(answered)
    runs = run_queued(api_server, instance)
    assert sorted(r.run_key for r in runs) == sorted(answered)  # one run per export
    finished = {e["id"]: e["status"] for e in alice.list(project, limit=200).json()}
    assert finished == dict.fromkeys(answered, "SUCCEEDED")
    assert len(instance.get_runs(dg.RunsFilter(tags={"project_id": project}))) == 200


def test_keys_command_creates_lists_and_revokes(api_server: ApiServer, project: str) -> None:
    def keys_command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "export_pipelines.cli", "keys", *args],
            env={**os.environ, **api_server.settings}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    made = keys_command("create", "--project", project, "--user-id", "dora", "--user-name", "Dora", "--json")
    assert made.returncode == 0, made.stderr
    answer = json.loads(made.stdout)
    assert set(answer) == {"key", "prefix", "projectId", "userId"}
    prefix, _, secret = answer["key"].partition(".")
    assert prefix == answer["prefix"] and len(prefix) == 8 and len(secret) >= 32
    assert (answer["projectId"], answer["userId"]) == (project, "dora")
    with api_server.store.engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT secret_sha256 FROM api_keys WHERE prefix = :p"), {"p": prefix})
        assert stored.scalar_one() == hashlib.sha256(secret.encode()).hexdigest()  # the secret itself is not kept
    client = api_server.client(answer["key"])
    assert client.list(project).status_code == 200
    header_client = Client(api_server.url, None)
    assert header_client.list(project).status_code == 401
    assert header_client.request("GET", f"/api/v1/data/projects/{project}/exports",
                                 headers={"x-api-key": answer["key"]}).status_code == 200  # fmt: skip
    partner = keys_command("create", "--partner", "--user-id", "ops")
    assert partner.returncode == 0 and "partner key" in partner.stdout and "shown only this once" in partner.stdout
    listing = keys_command("list")
    assert prefix in listing.stdout and secret not in listing.stdout
    assert keys_command("revoke", prefix).returncode == 0
    assert client.list(project).status_code == 401  # refused on the next request
    assert keys_command("revoke", prefix).returncode == 1


def test_timestamps_are_utc_with_z(alice: Client, project: str) -> None:
    export = alice.get(project, alice.create_table(project, "payment.invoices").json()["id"]).json()
    assert export["createdAt"].endswith("Z")
    assert datetime.fromisoformat(export["createdAt"]).utcoffset().total_seconds() == 0


def test_dry_run_previews_what_the_export_then_writes(
    api_server: ApiServer, alice: Client, project: str, instance, tmp_path: Path
) -> None:
    body = {
        "format": "JSONL",
        "columns": ["id", "amount", "metadata", "tags"],
        "filters": {"AND": [{"field": "amount", "operator": "gte", "value": 5000}]},
        "expandArray": "tags",
        "orderBy": ["-amount"],
        "limit": 250,
    }
    path = "/api/v1/data/projects/{}/catalogs/warehouse/schemas/payment/tables/charges/exports?dryRun=true"
    answer = alice.request("POST", path.format(project), json=body)
    assert answer.status_code == 200, answer.text
    preview = answer.json()
    assert set(preview) == {"rowCount", "columns", "sample"} and len(preview["sample"]) == 10
    assert alice.list(project).json() == []  # nothing queued
    export_id = alice.create_table(project, "payment.charges", body).json()["id"]
    run_queued(api_server, instance)
    export = alice.get(project, export_id).json()
    assert export["rowCount"] == preview["rowCount"] == 250
    target = tmp_path / "export.jsonl"
    target.write_bytes(download(export["files"][0]["url"]))
    with duckdb.connect() as reader:
        columns = reader.sql(f"SELECT * FROM read_json('{target}', format='newline_delimited')").columns
    assert [c["name"] for c in preview["columns"]] == columns == ["id", "amount", "metadata", "tags"]
    assert [json.loads(line) for line in target.read_text().splitlines()[:10]] == preview["sample"]
    refused = alice.request("POST", path.format(project), json={"columns": ["nope"]})
    assert refused.status_code == 400 and "unknown column nope" in _error(refused)
