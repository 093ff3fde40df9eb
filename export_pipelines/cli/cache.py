"""`export-pipelines cache batch | list | show | refresh | delete`: cached copies of catalog tables, over
`CacheService` (SPEC, "Cache"). In a shell next to `make dev` they use its catalogs and database."""

import argparse
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from export_pipelines.cli.commands import console

HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {}


def register(subcommands: argparse._SubParsersAction) -> None:
    cache = subcommands.add_parser("cache", help="cached copies of catalog tables: batch, list, show, refresh, delete")
    actions = cache.add_subparsers(dest="cache_action", required=True)
    batch = actions.add_parser("batch", help="create or reschedule cache entries from a JSON file (a list of items)")
    batch.add_argument("file", type=Path, help="[{catalogId, schemaName, tableName, incrementalCacheSchedule?, ...}]")
    batch.add_argument("--json", action="store_true", help="print the answers as JSON")
    actions.add_parser("list", help="the project's cache entries")
    for name, text in [("show", "one entry"), ("refresh", "refresh an entry now"), ("delete", "remove an entry")]:
        action = actions.add_parser(name, help=text)
        action.add_argument("entry_id")
        if name == "refresh":
            action.add_argument("--full", action="store_true", help="a full refresh (default: incremental if possible)")
    for action in actions.choices.values():
        action.add_argument("--project", required=True, help="the project of the entries")
    HANDLERS.update(cache=_cache)


def _cache(args: argparse.Namespace) -> int:
    from export_pipelines.cache.catalogs import CatalogsFileError
    from export_pipelines.service.cache import CacheEntryNotFound, CacheService
    from export_pipelines.settings import use_dev_environment

    use_dev_environment()
    service = CacheService()
    try:
        return ACTIONS[args.cache_action](service, args)
    except (CacheEntryNotFound, CatalogsFileError, OSError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}")
        return 1


def _batch(service, args: argparse.Namespace) -> int:
    try:
        items = json.loads(args.file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{args.file} is not valid JSON: {error.msg} (line {error.lineno})") from None
    if not isinstance(items, list):
        raise ValueError(f"{args.file} must hold a JSON list of items")
    results = service.batch(args.project, items)
    if args.json:
        answers = [
            {"success": r.success, "error": r.error, "cache": _json(r.cache) if r.cache else None} for r in results
        ]
        print(json.dumps(answers, indent=2))
    else:
        table = Table("#", "table", "result")
        for index, (raw, result) in enumerate(zip(items, results, strict=True)):
            name = _table_name(result.cache) if result.cache else _raw_name(raw)
            outcome = f"[green]ok[/green] {result.cache['id']}" if result.success else f"[red]{result.error}[/red]"
            table.add_row(str(index), name, outcome)
        console.print(table)
    return 0 if all(result.success for result in results) else 1


def _list(service, args: argparse.Namespace) -> int:
    table = Table("id", "table", "status", "rows", "last refresh", "next refresh", "error")
    for record in service.entries(args.project):
        table.add_row(
            record["id"],
            _table_name(record),
            record["status"],
            f"{record['row_count']:,}" if record["row_count"] is not None else "",
            _time(record["last_refresh_at"]),
            _time(service.next_refresh_at(record)),
            (record["error"] or "")[:60],
        )
    console.print(table)
    return 0


def _show(service, args: argparse.Namespace) -> int:
    record = service.get(args.project, args.entry_id)
    print(json.dumps(_json(record), indent=2))
    return 0


def _refresh(service, args: argparse.Namespace) -> int:
    service.refresh(args.project, args.entry_id, args.full)
    console.print(f"{'full' if args.full else 'a'} refresh of {args.entry_id} asked for; it runs within seconds")
    return 0


def _delete(service, args: argparse.Namespace) -> int:
    service.delete(args.project, args.entry_id)
    console.print(f"cache entry {args.entry_id} deleted")
    return 0


ACTIONS = {"batch": _batch, "list": _list, "show": _show, "refresh": _refresh, "delete": _delete}


def _table_name(record: dict[str, Any]) -> str:
    return f"{record['catalog_id']}:{record['schema_name']}.{record['table_name']}"


def _raw_name(raw: Any) -> str:
    if isinstance(raw, dict):
        return f"{raw.get('catalogId')}:{raw.get('schemaName')}.{raw.get('tableName')}"
    return repr(raw)[:40]


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def _json(record: dict[str, Any]) -> dict[str, Any]:
    """An entry as the REST API shows it."""
    from export_pipelines.api.cache import cache_view

    return cache_view(record).model_dump(mode="json", by_alias=True)
