"""Faults under the REST API (#16): the server killed while clients create with Idempotency-Key
(each client retries its create through the kill and the restart: every key ends with exactly one
export, every answer for a key names it; PostgreSQL request table); the SQLite request table
locked by another writer (a create waits for a short lock and succeeds; past the busy timeout it
is a 503 that records nothing, and the retry succeeds)."""

import signal
import sqlite3
import threading
from pathlib import Path

import requests

from export_pipelines_tests.conftest import BUCKET, fresh_postgres_database, wait_for
from export_pipelines_tests.rest import BASE, running_api

CLIENTS, CREATES = 4, 20


def _api_settings(s3_server, warehouse: Path, database_url: str) -> dict[str, str]:
    """The environment of an `export-pipelines api` on `database_url` (no daemon, no launches)."""
    return {
        **s3_server.environment(),
        "EXPORTS_WAREHOUSE": str(warehouse),
        "EXPORTS_DATABASE_URL": database_url,
        "EXPORTS_BUCKET": BUCKET,
    }


def test_creates_retried_through_a_killed_api_are_neither_lost_nor_doubled(
    s3_server, api_warehouse: Path, tmp_path: Path
) -> None:
    with fresh_postgres_database("restart") as database_url:
        settings = _api_settings(s3_server, api_warehouse, database_url)
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
            api.process().send_signal(signal.SIGKILL)
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


def test_a_locked_request_table_delays_or_refuses_a_create_and_loses_nothing(
    s3_server, api_warehouse: Path, tmp_path: Path
) -> None:
    database = tmp_path / "exports.db"
    settings = _api_settings(s3_server, api_warehouse, f"sqlite:///{database}")
    with running_api(settings, tmp_path / "api.log") as api:
        key = api.new_key("lee", "locked")
        client = api.client(key)

        def locked_while(locked: threading.Event, answer_create: threading.Event, hold_seconds: float | None) -> None:
            """Another writer: an exclusive transaction until `hold_seconds` pass or the create is answered."""
            writer = sqlite3.connect(database, isolation_level=None)
            writer.execute("BEGIN EXCLUSIVE")
            locked.set()
            answer_create.wait(hold_seconds)
            writer.execute("COMMIT")
            writer.close()

        for hold_seconds in (2.0, None):  # a short lock, then one past the API's 30 s busy timeout
            locked, answered = threading.Event(), threading.Event()
            holder = threading.Thread(target=locked_while, args=(locked, answered, hold_seconds))
            holder.start()
            locked.wait(10)
            answer = client.create_table("locked", "payment.invoices", {"limit": 5})
            answered.set()
            holder.join()
            if hold_seconds is not None:
                assert answer.status_code == 202, answer.text
            else:
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == "5"
                assert answer.json()["error"] == (
                    "the request database is unavailable right now (database is locked); nothing was "
                    "recorded: try again in a moment"
                )
                assert client.create_table("locked", "payment.invoices", {"limit": 5}).status_code == 202
        assert len(api.store.list_exports("locked", None, 10, None)) == 2  # one per answered create
