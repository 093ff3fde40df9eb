"""Export engine benchmark: the export path against "DuckDB COPY to a local file, then boto3 upload_file",
and against the two halves of its own limit.

Builds a 1,000,000-row table like payment.charges, starts the local S3 server, and for each
format x compression prints the median time of: ours (the functions the ops of export_job run,
steps.py, from the warehouse to verified objects in S3 and the manifest); the engine's writing
alone (the same export into a null sink: parts taken and dropped); the upload alone of the same
bytes to the same S3 server (boto3, parallel multipart of 8 MiB parts); and the baseline. It prints
ours / max(write-only, upload-only), the limit an export that writes while it uploads can reach,
beside ours / baseline; and `cpu s`, the busy CPU seconds of the machine during write-only and
upload-only (the S3 server's included) shared out over its cores: the least time the two halves
can take together on this machine, however well they overlap; and `ours cpu`, the same for ours
(above `cpu s`: work the overlap adds; below ours: cores left idle), of which `srv cpu` is the S3
server's (SeaweedFS, on the same cores here; elsewhere in production); `base cpu`, the same for the
baseline, and `hash cpu`, what ours hashes and the baseline does not (SHA-256 twice over the file);
and the megabytes of ours' file and the baseline's (DuckDB writes its own text and Parquet;
--drop-columns metadata,tags,created_at leaves out the columns where they differ). Dagster's
fixed per-run overhead is printed apart. Then it prints the peak RSS of a whole export_job run in
a fresh process (the median of --rss-repeat runs): for every pair at the first of --rss-rows, then
for CSV/GZIP at each of --rss-rows, as stored and sorted.

Also prints what live progress costs (the same export with and without reporting it).

    uv run python benchmarks/export_benchmark.py [--rows 1000000] [--repeat 3]
        [--skip-rss | --rss-only] [--rss-repeat 3] [--only CSV/NONE,...] [--drop-columns a,b]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb

FORMATS = ["CSV", "JSONL", "PARQUET"]
COMPRESSIONS = ["NONE", "GZIP", "ZSTD"]
BASELINE_TARGETS = {"GZIP": 0.5}  # every other pair: 1.0 (never slower than the baseline)
LIMIT_TARGET = 1.15  # ours <= 1.15 x max(write-only, upload-only)
RSS_TARGET_MIB, RSS_GROWTH_TARGET = 400, 1.2
EXPORTED_COLUMNS = "* EXCLUDE (embedding, q, cache)"


def build_warehouse(path: Path, rows: int, dropped_columns: list[str] | None = None) -> None:
    from export_pipelines.deploy.demo_warehouse import create_charges

    with duckdb.connect(str(path)) as connection:
        create_charges(connection, rows)
        if dropped_columns:
            dropped = ", ".join(dropped_columns)
            connection.execute(
                f"CREATE OR REPLACE TABLE payment.charges AS SELECT * EXCLUDE ({dropped}) FROM payment.charges"
            )
        connection.execute("CHECKPOINT")


def baseline(warehouse: Path, client, bucket: str, export_format: str, compression: str, workdir: Path) -> int:
    """DuckDB COPY ... TO a local file, then boto3 upload_file (default transfer settings); returns
    the file's bytes."""
    if export_format == "PARQUET":
        options = f"FORMAT parquet, COMPRESSION {'uncompressed' if compression == 'NONE' else compression.lower()}"
        suffix = ".parquet"
    else:
        duck_format = "csv" if export_format == "CSV" else "json"
        options = f"FORMAT {duck_format}, COMPRESSION {'none' if compression == 'NONE' else compression.lower()}"
        suffix = f".{duck_format}" + {"NONE": "", "GZIP": ".gz", "ZSTD": ".zst"}[compression]
    target = workdir / f"baseline{suffix}"
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        connection.execute(f"COPY (SELECT {EXPORTED_COLUMNS} FROM payment.charges) TO '{target}' ({options})")
    client.upload_file(str(target), bucket, f"baseline/{target.name}")
    size = target.stat().st_size
    target.unlink()
    return size


class NullS3:
    """An S3 client that takes every object and part and keeps nothing: the engine's writing alone."""

    def create_multipart_upload(self, **_: object) -> dict:
        return {"UploadId": "null"}

    def upload_part(self, **_: object) -> dict:
        return {"ETag": '"null"'}

    def complete_multipart_upload(self, **_: object) -> dict:
        return {}

    def put_object(self, **_: object) -> dict:
        return {}

    def abort_multipart_upload(self, **_: object) -> dict:
        return {}


def reading(resources: dict, request):
    """The warehouse opened as a run opens it for `request`: under the policy's memory limit for reading."""
    return resources["warehouse"].connect(resources["policy"].read_memory_limit_for(request))


def export_rows(request, resources: dict, connection, export_id: str):
    from export_pipelines.engine import steps

    rows = steps.plan(request, export_id, connection, resources["s3"].resolved_prefix)
    return steps.apply_rules(steps.select(steps.shape(rows)), resources["policy"].resolved_max_rows, print)


def request_of(export_format: str, compression: str, **shaping):
    from export_pipelines.engine.request import Compression, ExportFormat, ExportRequest, SourceConfig

    return ExportRequest(
        source=SourceConfig(table="payment.charges"),
        format=ExportFormat(export_format),
        compression=Compression(compression),
        **shaping,
    )


def write_only(export_format: str, compression: str, resources: dict) -> None:
    """The export's reading, shaping, serializing and hashing, into a sink that drops the parts."""
    from export_pipelines.engine import steps

    request = request_of(export_format, compression)
    with reading(resources, request) as connection:
        rows = export_rows(request, resources, connection, str(uuid.uuid4()))
        steps.serialize_to_s3(rows, NullS3(), "null", parts_in_flight=resources["s3"].resolved_parts_in_flight)


def upload_only(client, bucket: str, path: Path) -> None:
    """The same bytes uploaded alone: boto3's parallel multipart upload of 8 MiB parts."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=8)
    client.upload_file(str(path), bucket, f"upload-only/{path.name}", Config=config)


def artifact_of(export_format: str, compression: str, resources: dict, workdir: Path) -> Path:
    """One export's file, downloaded: the bytes upload-only sends."""
    from export_pipelines.engine import steps

    s3 = resources["s3"]
    client, bucket = s3.get_client(), s3.resolved_bucket
    request = request_of(export_format, compression)
    with reading(resources, request) as connection:
        rows = export_rows(request, resources, connection, str(uuid.uuid4()))
        written = steps.serialize_to_s3(rows, client, bucket, parts_in_flight=s3.resolved_parts_in_flight)
    (artifact,) = written.artifacts
    target = workdir / artifact.key.rsplit("/", 1)[-1]
    client.download_file(bucket, artifact.key, str(target))
    return target


def ours(export_format: str, compression: str, resources: dict, progress_of: str | None = None, **shaping) -> int:
    """The export path: the functions the ops of export_job run, warehouse to verified objects in S3;
    with `progress_of` (an export id in the request table), reporting progress as the serialize op
    does (its log lines into a list). Returns the rows exported."""
    from export_pipelines.engine import steps
    from export_pipelines.orchestration.progress import ProgressReporter

    s3 = resources["s3"]
    client, bucket = s3.get_client(), s3.resolved_bucket
    export_id = progress_of or str(uuid.uuid4())
    request = request_of(export_format, compression, **shaping)
    with reading(resources, request) as connection:
        rows = export_rows(request, resources, connection, export_id)
        on_rows = lambda _rows: None  # noqa: E731
        if progress_of is not None:
            on_rows = ProgressReporter(resources["export_store"].get_store(), export_id, rows.row_count, [].append)
        written = steps.serialize_to_s3(
            rows, client, bucket, on_rows=on_rows, parts_in_flight=s3.resolved_parts_in_flight
        )
        steps.verify(written, client, bucket)
        steps.record(written, client, bucket)
    return written.row_count


def shaping_cases(resources: dict, repeat: int) -> None:
    """Filtering must not make an export slower than exporting the unfiltered rows."""
    half = {"filters": {"AND": [{"field": "amount", "operator": "gte", "value": 5000}]}}
    mixed = {
        "filters": {
            "OR": [
                {
                    "field": "description",
                    "operator": "contains",
                    "value": "plan",
                },
                {
                    "AND": [
                        {"field": "currency", "operator": "in", "value": ["eur", "jpy"]},
                        {"field": "created_at", "operator": "gte", "value": "2024-06-01T00:00:00Z"},
                    ]
                },
            ],
            "NOT": [{"field": "metadata.category", "operator": "eq", "value": "refund"}],
            "case_sensitive": False,
        }
    }
    cases = [
        ("unfiltered", {}),
        ("filter amount >= 5000", half),
        ("filter tree (7 conditions)", mixed),
        ("expand_array tags", {"expand_array": "tags"}),
        ("order_by -amount", {"order_by": ["-amount"]}),
    ]
    print(f"\nrow shaping, CSV/GZIP, median of {repeat}")
    print(f"{'case':<28}{'rows':>10}{'s':>8}")
    for label, shaping in cases:
        seconds = []
        for _ in range(repeat):
            started = time.perf_counter()
            rows = ours("CSV", "GZIP", resources, **shaping)
            seconds.append(time.perf_counter() - started)
        print(f"{label:<28}{rows:>10,}{statistics.median(seconds):>8.2f}", flush=True)


def progress_cost(resources: dict, repeat: int) -> None:
    """Live progress (row counts into the request table, log lines) must cost under 2% of an export."""
    print(f"\nlive progress, median of {repeat} (alternating runs)")
    print(f"{'pair':<16}{'without s':>10}{'with s':>9}{'cost':>8}  target")
    for export_format, compression in [("CSV", "NONE"), ("CSV", "GZIP"), ("PARQUET", "ZSTD")]:
        without, with_progress = [], []
        for _ in range(repeat):
            without.append(timed(ours, export_format, compression, resources))
            export_id = str(uuid.uuid4())
            resources["export_store"].get_store().insert(export_id, "default", {"source": {"table": "payment.charges"}})
            with_progress.append(timed(ours, export_format, compression, resources, export_id))
        plain, reported = statistics.median(without), statistics.median(with_progress)
        cost = (reported - plain) / plain
        print(
            f"{export_format + '/' + compression:<16}{plain:>10.2f}{reported:>9.2f}{cost:>8.1%}  < 2% "
            f"{'ok' if cost < 0.02 else 'MISSED'}",
            flush=True,
        )


def ours_job(
    export_format: str, compression: str, max_rows_per_file: int | None = None, order_by: str | None = None
) -> None:
    """The same export as a whole Dagster run (adds Dagster's per-run overhead)."""
    from export_pipelines.orchestration.jobs import export_job

    request = {"source": {"table": "payment.charges"}, "format": export_format, "compression": compression}
    if max_rows_per_file:
        request["max_rows_per_file"] = max_rows_per_file
    if order_by:
        request["order_by"] = [order_by]
    result = export_job.execute_in_process(run_config=request)
    assert result.success


def timed(function, *args) -> float:
    return timed_result(function, *args)[0]


def timed_result(function, *args) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def hashing_cpu_seconds(path: Path) -> float:
    """CPU seconds of what ours hashes and the baseline does not: every byte of the file twice with
    SHA-256 (the file's hash for the manifest, each part's for S3's check of it)."""
    import hashlib

    data = path.read_bytes()
    started = time.process_time()
    hashlib.sha256(data).digest()
    hashlib.sha256(data).digest()
    return time.process_time() - started


def busy_core_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every process, the S3 server's included)."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def s3_server_cpu_seconds() -> float:
    """CPU seconds spent so far by the S3 server this benchmark started (SeaweedFS's `weed`)."""
    import psutil

    servers = [child for child in psutil.Process().children(recursive=True) if child.name() == "weed"]
    return sum(server.cpu_times().user + server.cpu_times().system for server in servers)


def timed_with_cpu(function, *args) -> tuple[float, float, float, Any]:
    """Seconds of `function`, the machine's busy CPU seconds meanwhile, the S3 server's, and what
    `function` returned."""
    server = s3_server_cpu_seconds()  # read outside the machine's window: finding the server costs CPU too
    busy = busy_core_seconds()
    seconds, result = timed_result(function, *args)
    busy = busy_core_seconds() - busy
    return seconds, busy, s3_server_cpu_seconds() - server, result


def peak_rss_of_export(
    rows: int, workdir: Path, environment: dict[str, str], order_by: str | None, pair: str = "CSV/GZIP", repeat: int = 1
) -> tuple[float, float, float, float]:
    """Peak RSS (MiB) of a fresh process running one export of `rows` rows in `pair` (a whole
    export_job run, in parts of at most 1,000,000 rows, ordered by `order_by` if given), and its
    seconds: the medians of `repeat` runs (a single run's peak moves by 10-30 MiB with how far
    writing gets ahead of S3), then the lowest and highest peak."""
    warehouse = workdir / f"rss-{rows}.duckdb"
    if not warehouse.exists():
        build_warehouse(warehouse, rows)
    runs = [_peak_rss_of_one_export(warehouse, rows, environment, order_by, pair) for _ in range(repeat)]
    peaks = [peak for peak, _ in runs]
    return statistics.median(peaks), statistics.median(seconds for _, seconds in runs), min(peaks), max(peaks)


def _peak_rss_of_one_export(
    warehouse: Path, rows: int, environment: dict[str, str], order_by: str | None, pair: str
) -> tuple[float, float]:
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--rss-child",
            f"--rss-pair={pair}",
            *([f"--rss-order-by={order_by}"] if order_by else []),
        ],
        env={**environment, "EXPORTS_WAREHOUSE": str(warehouse), "EXPORTS_MAX_ROWS": str(rows * 2)},
        capture_output=True,
        text=True,
        check=True,
    )
    peak, seconds = child.stdout.strip().splitlines()[-1].split()
    return float(peak), float(seconds)


def rss_child(pair: str, order_by: str | None) -> None:
    import logging

    logging.disable(logging.INFO)
    export_format, compression = pair.split("/")
    seconds = timed(ours_job, export_format, compression, 1_000_000, order_by)
    print(f"{peak_rss_mib():.0f} {seconds:.2f}")


def peak_rss_mib() -> float:
    """This process's peak RSS since it started its program. Not getrusage's ru_maxrss: Linux
    carries the forking parent's peak over into the child's across exec (this benchmark, holding
    about 950 MiB, made every child report at least that)."""
    status = Path("/proc/self/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--rss-rows",
        type=lambda sizes: [int(rows) for rows in sizes.split(",")],
        default="1000000,5000000",
        help="comma-separated sizes, e.g. 1000000,20000000",
    )
    parser.add_argument("--rss-repeat", type=int, default=3, help="fresh runs per peak RSS figure (the median)")
    parser.add_argument("--only", default=None, help="comma-separated pairs, e.g. CSV/NONE,PARQUET/ZSTD")
    parser.add_argument("--skip-shaping", action="store_true")
    parser.add_argument(
        "--drop-columns",
        type=lambda columns: columns.split(","),
        default=None,
        help="columns left out of the table, e.g. metadata,tags,created_at (where DuckDB writes other bytes than "
        "ours); the row shaping cases, which filter on them, are skipped",
    )
    parser.add_argument("--skip-progress", action="store_true")
    parser.add_argument("--rss-only", action="store_true", help="only the peak RSS figures")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rss-order-by", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rss-pair", default="CSV/GZIP", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        return rss_child(args.rss_pair, args.rss_order_by)

    import logging

    from export_pipelines.deploy.local_s3 import run_local_s3

    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        workdir = Path(tmp)
        warehouse = workdir / "warehouse.duckdb"
        if not args.rss_only:  # the memory runs build a warehouse per size
            build_warehouse(warehouse, args.rows, args.drop_columns)
        with run_local_s3(workdir / "s3", buckets=("exports",)) as s3:
            environment = {
                **os.environ,
                **s3.environment(),
                "EXPORTS_WAREHOUSE": str(warehouse),
                "EXPORTS_DATABASE_URL": f"sqlite:///{workdir / 'exports.db'}",
                "EXPORTS_MAX_ROWS": str(args.rows * 3),  # room for the expanded case
            }
            os.environ.update(environment)
            if args.rss_only:
                return print_peak_rss(args.rss_rows, workdir, environment, args.rss_repeat)
            from export_pipelines.orchestration.resources import default_resources

            client = s3.client()
            resources = default_resources()  # built once, like a run's resources (and the baseline's client)
            ours("CSV", "NONE", resources)  # warm up: the object store allocates its volumes on first write
            print(f"{args.rows:,} rows, median of {args.repeat}; limit = max(write-only, upload-only)")
            cores = os.cpu_count() or 1
            header = f"{'pair':<14}{'ours s':>8}{'write s':>9}{'upload s':>10}{'/limit':>8}{'base s':>8}{'/base':>7}"
            header += f"{'cpu s':>8}{'/cpu':>6}{'ours cpu':>10}{'srv cpu':>9}{'base cpu':>10}{'hash cpu':>10}"
            print(f"{header}{'MB':>8}{'base MB':>9}  targets")
            for export_format in FORMATS:
                for compression in COMPRESSIONS:
                    if args.only and f"{export_format}/{compression}" not in args.only.split(","):
                        continue
                    artifact = artifact_of(export_format, compression, resources, workdir)
                    runs = {
                        "ours": (ours, export_format, compression, resources),
                        "write": (write_only, export_format, compression, resources),
                        "upload": (upload_only, client, "exports", artifact),
                        "base": (baseline, warehouse, client, "exports", export_format, compression, workdir),
                    }
                    times: dict[str, list[float]] = {name: [] for name in runs}
                    busy: dict[str, list[float]] = {name: [] for name in runs}
                    server_busy: list[float] = []  # during ours
                    for _ in range(args.repeat):
                        for name, (run, *arguments) in runs.items():
                            seconds, cpu, server_cpu, result = timed_with_cpu(run, *arguments)
                            times[name].append(seconds)
                            busy[name].append(cpu)
                            if name == "ours":
                                server_busy.append(server_cpu)
                            if name == "base":
                                base_bytes = result
                    ours_bytes, hash_cpu = artifact.stat().st_size, hashing_cpu_seconds(artifact) / cores
                    artifact.unlink()
                    ours_s, write_s, upload_s, base_s = (statistics.median(times[k]) for k in times)
                    to_limit, to_base = ours_s / max(write_s, upload_s), ours_s / base_s
                    # Both halves on the same cores cannot take less than their CPU time shared out.
                    cpu_s = (statistics.median(busy["write"]) + statistics.median(busy["upload"])) / cores
                    ours_cpu = statistics.median(busy["ours"]) / cores
                    server_cpu = statistics.median(server_busy) / cores
                    base_cpu = statistics.median(busy["base"]) / cores
                    base_target = BASELINE_TARGETS.get(compression, 1.0)
                    verdict = "ok" if to_limit <= LIMIT_TARGET and to_base <= base_target else "MISSED"
                    print(
                        f"{export_format + '/' + compression:<14}{ours_s:>8.2f}{write_s:>9.2f}{upload_s:>10.2f}"
                        f"{to_limit:>8.2f}{base_s:>8.2f}{to_base:>7.2f}{cpu_s:>8.2f}"
                        f"{ours_s / cpu_s:>6.2f}{ours_cpu:>10.2f}{server_cpu:>9.2f}{base_cpu:>10.2f}{hash_cpu:>10.2f}"
                        f"{ours_bytes / 1e6:>8.1f}{base_bytes / 1e6:>9.1f}"
                        f"  <= {LIMIT_TARGET}, <= {base_target} {verdict}",
                        flush=True,
                    )
            if not args.skip_shaping and not args.drop_columns:
                shaping_cases(resources, args.repeat)
            if not args.skip_progress:
                progress_cost(resources, args.repeat)
            job_seconds = statistics.median(timed(ours_job, "PARQUET", "ZSTD") for _ in range(args.repeat))
            path_seconds = statistics.median(timed(ours, "PARQUET", "ZSTD", resources) for _ in range(args.repeat))
            print(f"Dagster run overhead (execute_in_process, PARQUET/ZSTD): {job_seconds - path_seconds:.2f}s per run")
            if not args.skip_rss:
                print_peak_rss(args.rss_rows, workdir, environment, args.rss_repeat)


def print_peak_rss(sizes: list[int], workdir: Path, environment: dict[str, str], repeat: int) -> None:
    print(f"\npeak RSS of a whole export_job run of {sizes[0]:,} rows as stored, every pair, median of {repeat}")
    for export_format in FORMATS:
        for compression in COMPRESSIONS:
            pair = f"{export_format}/{compression}"
            peak, seconds, lowest, highest = peak_rss_of_export(sizes[0], workdir, environment, None, pair, repeat)
            verdict = "ok" if peak <= RSS_TARGET_MIB else "MISSED"
            target = f"(target: <= {RSS_TARGET_MIB} MiB) {verdict}"
            print(f"{pair:<14}{peak:6.0f} MiB ({lowest:.0f}-{highest:.0f})  {seconds:6.1f} s  {target}", flush=True)
    print(f"\npeak RSS of a whole export_job run, CSV/GZIP, parts of <= 1,000,000 rows, median of {repeat}")
    for order_by in (None, "amount"):
        peaks = {rows: peak_rss_of_export(rows, workdir, environment, order_by, repeat=repeat) for rows in sizes}
        first = peaks[sizes[0]][0]
        for rows, (peak, seconds, lowest, highest) in peaks.items():
            print(
                f"{rows:>12,} rows {'ordered by ' + order_by if order_by else 'as stored':>18}  {peak:6.0f} MiB "
                f"({lowest:.0f}-{highest:.0f})  {seconds:6.1f} s  {peak / first:5.2f}x  (targets: <= {RSS_TARGET_MIB} "
                f"MiB at 1M, <= {RSS_GROWTH_TARGET}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
