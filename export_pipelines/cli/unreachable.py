"""One line for a command whose service is out of reach: the request database, S3, a download
link. The command exits 1 with it instead of a traceback; no password of a URL is shown."""

import sys
import urllib.error

from export_pipelines.settings import env


def unreachable(error: BaseException) -> str | None:
    """What to tell the user about `error`, when it is a service out of reach (else None)."""
    import sqlalchemy as sa

    from export_pipelines.store.database import database_problem

    if isinstance(error, sa.exc.DBAPIError):
        database = sa.make_url(env("EXPORTS_DATABASE_URL")).render_as_string(hide_password=True)
        return f"the request database {database} cannot be used: {database_problem(error)}"
    s3_errors = sys.modules.get("botocore.exceptions")  # loaded only by commands that use S3
    if s3_errors is not None and isinstance(error, s3_errors.BotoCoreError | s3_errors.ClientError):
        return f"S3 cannot be used: {error}"
    if isinstance(error, urllib.error.URLError):
        return f"a download link cannot be fetched: {error.reason}"
    return None
