"""API keys of the REST API (SPEC, "API keys"): a key is `<prefix>.<secret>`, an 8-character public
prefix and a secret of 43 random URL-safe characters; only the secret's SHA-256 is stored, and a
presented key is compared in constant time. A key without a project is a partner key."""

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from export_pipelines.store.database import as_utc
from export_pipelines.store.tables import api_keys

PREFIX_LENGTH = 8
SECRET_BYTES = 32  # token_urlsafe(32): 43 characters
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class ApiKey:
    """A key as the service knows it (never its secret)."""

    prefix: str
    project_id: str | None
    user_id: str
    user_name: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def partner(self) -> bool:
        return self.project_id is None

    def may_access(self, project_id: str) -> bool:
        return self.partner or self.project_id == project_id


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key(row: sa.RowMapping) -> ApiKey:
    return ApiKey(
        prefix=row["prefix"],
        project_id=row["project_id"],
        user_id=row["user_id"],
        user_name=row["user_name"],
        created_at=as_utc(row["created_at"]),
        revoked_at=as_utc(row["revoked_at"]),
    )


class ApiKeyStore:
    """Creates, checks, lists and revokes API keys in the service's database."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def create(self, user_id: str, project_id: str | None, user_name: str | None = None) -> tuple[str, ApiKey]:
        """A new key for `user_id`, scoped to `project_id` (None: a partner key). Returns the whole
        key, which is shown once and never stored, and what is stored of it."""
        if not user_id:
            raise ValueError("a key needs a user id")
        for _ in range(5):
            prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
            secret = secrets.token_urlsafe(SECRET_BYTES)
            try:
                with self.engine.begin() as connection:
                    connection.execute(
                        api_keys.insert().values(
                            prefix=prefix,
                            secret_sha256=_sha256(secret),
                            project_id=project_id,
                            user_id=user_id,
                            user_name=user_name,
                            created_at=datetime.now(UTC),
                        )
                    )
            except sa.exc.IntegrityError:
                continue  # that prefix exists already: draw another
            stored = self.get(prefix)
            assert stored is not None
            return f"{prefix}.{secret}", stored
        raise RuntimeError("could not draw an unused key prefix")

    def get(self, prefix: str) -> ApiKey | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix)).mappings().first()
        return _key(row) if row is not None else None

    def verify(self, presented: str) -> ApiKey | None:
        """The live key that `presented` is, or None (malformed, unknown, wrong secret or revoked)."""
        prefix, dot, secret = presented.strip().partition(".")
        if not dot or len(prefix) != PREFIX_LENGTH or not secret:
            return None
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix)).mappings().first()
        if row is None:
            # Hash anyway: an unknown prefix takes as long as a wrong secret.
            hmac.compare_digest(_sha256(secret), _sha256(""))
            return None
        if not hmac.compare_digest(_sha256(secret), row["secret_sha256"]) or row["revoked_at"] is not None:
            return None
        return _key(row)

    def list(self) -> list[ApiKey]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).mappings().all()
        return [_key(row) for row in rows]

    def revoke(self, prefix: str) -> bool:
        """End a key at once; False when there is no live key with that prefix."""
        with self.engine.begin() as connection:
            result = connection.execute(
                api_keys.update()
                .where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return result.rowcount == 1
