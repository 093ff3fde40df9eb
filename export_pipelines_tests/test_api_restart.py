"""The API server killed while clients create with Idempotency-Key (#16): each client retries
its create until it is answered, through the kill and the restart; every key ends with exactly
one export, and every answer for a key names that export (PostgreSQL request table)."""

import signal
import threading
from pathlib import Path

import psutil
import requests

from export_pipelines_tests.conftest import BUCKET, fresh_postgres_database, wait_for
from export_pipelines_tests.rest import BASE, running_api

CLIENTS, CREATES = 4, 20


def _api_process(url: str) -> psutil.Process:
    port = url.rsplit(":", 1)[1]
    (process,) = [
        child
        for child in psutil.Process().children(recursive=True)
        if "api" in child.cmdline() and port in child.cmdline()
    ]
    return process


def test_creates_retried_through_a_killed_api_are_neither_lost_nor_doubled(
    s3_server, api_warehouse: Path, tmp_path: Path
) -> None:
    with fresh_postgres_database("restart") as database_url:
        settings = {
            **s3_server.environment(),
            "EXPORTS_WAREHOUSE": str(api_warehouse),
            "EXPORTS_DATABASE_URL": database_url,
            "EXPORTS_BUCKET": BUCKET,
        }
        server = {"url": ""}
        answers: dict[str, list[str]] = {}
        errors: list[str] = []
        refused: list[str] = []  # creates that met the dead server and were retried

        def create(key: str, idempotency_key: str) -> str:
            path = f"{BASE}/restart/catalogs/warehouse/schemas/payment/tables/invoices/exports"
            headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
            while True:  # as a client would: retry on a refused or dropped connection (bounded by the join)
                try:
                    answer = requests.post(server["url"] + path, json={"limit": 5}, headers=headers, timeout=30)
                except requests.ConnectionError:
                    refused.append(idempotency_key)
                    threading.Event().wait(0.05)
                    continue
                if answer.status_code == 202:
                    return answer.json()["id"]
                errors.append(f"{answer.status_code} {answer.text}")
                return ""

        def client(key: str, number: int) -> None:
            for create_number in range(CREATES):
                idempotency_key = f"client-{number}-create-{create_number}"
                first = create(key, idempotency_key)
                again = create(key, idempotency_key)  # the retry a client makes when unsure
                answers[idempotency_key] = [first, again]

        with running_api(settings, tmp_path / "api-1.log") as api:
            server["url"] = api.url
            keys = [api.new_key(f"user-{n}", "restart") for n in range(CLIENTS)]
            threads = [threading.Thread(target=client, args=(key, n)) for n, key in enumerate(keys)]
            for thread in threads:
                thread.start()
            wait_for(lambda: len(answers) >= CLIENTS * CREATES // 3, "a third of the creates")
            _api_process(api.url).send_signal(signal.SIGKILL)
            store = api.store
        with running_api(settings, tmp_path / "api-2.log") as api:
            server["url"] = api.url
            for thread in threads:
                thread.join(timeout=300)
            assert not any(thread.is_alive() for thread in threads)

        assert errors == [] and refused  # the clients did meet the killed server
        assert len(answers) == CLIENTS * CREATES
        assert all(first and first == again for first, again in answers.values()), answers
        exports = store.list_exports("restart", None, 200, None)
        assert sorted(e["id"] for e in exports) == sorted(first for first, _ in answers.values())
        assert len({first for first, _ in answers.values()}) == CLIENTS * CREATES
