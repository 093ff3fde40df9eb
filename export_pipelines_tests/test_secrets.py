"""No secret leaks (#16): after exports through the REST API (one succeeding, one refused, one
failing in its run), a create with a wrong secret and a download, neither the S3 secret key nor
an API key's secret (right or wrong) appears in any answer, nor in any file the live deployment
wrote: the request table, Dagster's runs, tags, run config and event logs, compute logs, the
broker's messages, the processes' logs. The S3 server's own files and the environment file handed
to a second shell (`dev.env.json`, mode 600) hold the S3 secret by design and are left out."""

from export_pipelines.store.api_keys import ApiKeyStore
from export_pipelines.store.database import engine_for
from export_pipelines_tests.conftest import download
from export_pipelines_tests.live import Deployment
from export_pipelines_tests.rest import Client

PROJECT = "secrets"
BY_DESIGN = ("s3", "dev.env.json")


def test_no_secret_in_answers_logs_runs_or_stores(deployment: Deployment) -> None:
    keys = ApiKeyStore(engine_for(deployment.environment["EXPORTS_DATABASE_URL"]))
    key = keys.create("sam", PROJECT, "Sam")[0]
    prefix, secret = key.split(".")
    wrong_secret = "W" * len(secret)
    client = Client(deployment.api_url, key)
    answers = []

    created = client.create_table(PROJECT, "payment.invoices", {"format": "CSV", "limit": 50}, params={"wait": 120})
    answers.append(created)
    assert created.status_code == 200 and created.json()["status"] == "SUCCEEDED", created.text
    export_id = created.json()["id"]
    answers.append(client.request("GET", f"/api/v1/data/projects/{PROJECT}/exports/{export_id}/download"))
    assert download(answers[-1].json()["url"])
    answers.append(client.create_table(PROJECT, "payment.invoices", {"columns": ["nope"]}))
    assert answers[-1].status_code == 400
    # Refused only in its run: the warehouse limit (EXPORTS_MAX_ROWS) is checked once rows are counted.
    failing = client.create_table(PROJECT, "payment.large_charges", {"format": "JSONL", "expandArray": "tags"})
    answers.append(failing)
    failed_id = failing.json()["id"]
    record = deployment.wait_status(failed_id, {"FAILED", "SUCCEEDED"})
    assert record["status"] == "FAILED" and "row export limit" in record["error"], record
    answers.append(client.get(PROJECT, failed_id))
    answers.append(Client(deployment.api_url, f"{prefix}.{wrong_secret}").list(PROJECT))
    assert answers[-1].status_code == 401

    secrets = {
        "the S3 secret key": deployment.environment["AWS_SECRET_ACCESS_KEY"],
        "the API key's secret": secret,
        "a wrong API key secret": wrong_secret,
    }
    for answer in answers:
        for name, value in secrets.items():
            assert value not in answer.text, f"{name} in the answer to {answer.request.method} {answer.request.url}"
    scanned = []
    for path in sorted(deployment.data_dir.rglob("*")):
        relative = path.relative_to(deployment.data_dir)
        if not path.is_file() or relative.parts[0] in BY_DESIGN:
            continue
        content = path.read_bytes()
        scanned.append(relative)
        for name, value in secrets.items():
            assert value.encode() not in content, f"{name} in {relative}"
    names = {str(path) for path in scanned}
    assert "exports.db" in names and "dev.log" in names  # the request table and the processes' output
    assert any(path.parts[0] == "dagster_home" and path.suffix == ".db" for path in scanned)  # runs, events
