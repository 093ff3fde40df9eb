"""`export-pipelines keys create | list | revoke` and `export-pipelines api`: the REST API's keys
and its server. A key's secret is printed once, at creation, and never again."""

import argparse
import json
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

console = Console()
HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {}


def register(subcommands: argparse._SubParsersAction) -> None:
    api = subcommands.add_parser("api", help="serve the REST API (FastAPI on uvicorn)")
    api.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    api.add_argument("--port", type=int, default=8000, help="port (default 8000)")

    keys = subcommands.add_parser("keys", help="API keys of the REST API: create, list, revoke")
    actions = keys.add_subparsers(dest="keys_action", required=True)
    create = actions.add_parser("create", help="make a key; its secret is printed once")
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--project", help="the one project the key may use")
    scope.add_argument("--partner", action="store_true", help="a partner key: every project")
    create.add_argument("--user-id", required=True, help="the user the key acts for (owner of its exports)")
    create.add_argument("--user-name", default=None, help="display name of that user")
    create.add_argument("--json", action="store_true", help="print {key, prefix, projectId, userId} as JSON")
    actions.add_parser("list", help="every key: prefix, scope, user, created, revoked")
    revoke = actions.add_parser("revoke", help="end a key at once")
    revoke.add_argument("prefix", help="the key's 8-character prefix")
    HANDLERS.update(api=_serve, keys=_keys)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from export_pipelines.api.app import create_app
    from export_pipelines.settings import use_dev_environment

    use_dev_environment()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from export_pipelines.settings import env, use_dev_environment
    from export_pipelines.store.api_keys import ApiKeyStore
    from export_pipelines.store.database import engine_for

    use_dev_environment()
    store = ApiKeyStore(engine_for(env("EXPORTS_DATABASE_URL")))
    if args.keys_action == "create":
        secret, key = store.create(args.user_id, None if args.partner else args.project, args.user_name)
        if args.json:
            print(json.dumps({"key": secret, "prefix": key.prefix, "projectId": key.project_id, "userId": key.user_id}))
        else:
            scope = "partner key (every project)" if key.partner else f"key for project {key.project_id}"
            console.print(f"{scope}, user {key.user_id}:\n\n  {secret}\n")
            console.print("[yellow]Keep it now: the secret is shown only this once.[/yellow]")
        return 0
    if args.keys_action == "list":
        table = Table("prefix", "project", "user id", "user name", "created", "revoked")
        for key in store.list():
            table.add_row(
                key.prefix,
                key.project_id or "(partner: every project)",
                key.user_id,
                key.user_name or "",
                key.created_at.isoformat(timespec="seconds"),
                key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
            )
        console.print(table)
        return 0
    if store.revoke(args.prefix):
        console.print(f"key {args.prefix} revoked")
        return 0
    console.print(f"[red]error:[/red] no live key with prefix {args.prefix!r}")
    return 1
