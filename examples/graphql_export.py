"""Submit an export through Dagster's GraphQL API, wait for it, and print its download links.

With `make dev` running in another shell (the script finds it; `--url` names another webserver):

    uv run python examples/graphql_export.py '{"source": {"table": "payment.invoices"}, "limit": 1000}'

The request is the run config of `export_job`, sent with
`DagsterGraphQLClient.submit_job_execution`. A request Dagster's config check refuses is answered
at once with its message and launches nothing. Once the run ends, the export's row in
`export_requests` (id: the request's `export_id`, else the run id) holds its status, figures and
files, and `ExportService` signs a download link for each file. Exit status: 0 when the export
SUCCEEDED, 1 when it did not, 2 when the request was refused.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from export_pipelines.orchestration.request_check import config_problem
from export_pipelines.settings import use_dev_environment

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENDED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def refusal(error: DagsterGraphQLClientError) -> str:
    """What the server said, without the query text: config problems one per line."""
    kind, *details = error.args or ("error",)
    problems = details[0] if details else ""
    if isinstance(problems, list):  # RunConfigValidationInvalid: a list of {message, ...}
        problems = "\n".join(f"  {config_problem(problem['message'])}" for problem in problems)
    return f"{kind}\n{problems}".rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("request", help="the export request as JSON")
    parser.add_argument(
        "--url",
        default=None,
        help="the Dagster webserver (default: the running `make dev`'s, else http://127.0.0.1:3000)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the run (default 600)")
    args = parser.parse_args(argv)
    request = json.loads(args.request)

    use_dev_environment(PROJECT_ROOT / ".data")  # reach the dev deployment: UI, request table, S3
    webserver = urlsplit(args.url or os.environ.get("DAGSTER_UI_URL") or "http://127.0.0.1:3000")
    client = DagsterGraphQLClient(
        webserver.hostname or "127.0.0.1", port_number=webserver.port, use_https=webserver.scheme == "https"
    )
    try:
        run_id = client.submit_job_execution("export_job", run_config=request)
    except DagsterGraphQLClientError as error:
        print(f"refused: {refusal(error)}")
        return 2
    export_id = request.get("export_id") or run_id
    print(f"launched run {run_id} (export {export_id})")

    deadline = time.monotonic() + args.timeout
    status = client.get_run_status(run_id)
    while status not in ENDED:
        if time.monotonic() > deadline:
            print(f"run {run_id} is still {status.value} after {args.timeout:.0f} s")
            return 1
        time.sleep(0.5)
        status = client.get_run_status(run_id)
    print(f"run {run_id} ended: {status.value}")

    from export_pipelines.service.exports import ExportService

    service = ExportService.from_environment()
    record = service.get(export_id)
    if record["status"] != "SUCCEEDED":
        print(f"export {export_id} {record['status']}: {record['error']}")
        return 1
    print(
        f"export {export_id} SUCCEEDED: {record['row_count']:,} rows, {record['bytes']:,} bytes "
        f"in {record['duration_ms']:,} ms"
    )
    links = service.download_urls(export_id, record["project_id"])
    for link in links:
        print(f"  {link['key'].rsplit('/', 1)[-1]}  {link['rows']:,} rows  {link['bytes']:,} bytes")
        print(f"    {link['url']}")
    print(f"links expire at {links[0]['expires_at']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
