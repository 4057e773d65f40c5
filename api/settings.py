"""The API's settings: CLUSTERER_API_* environment variables (documented in the README),
validated when read. The shared service settings (database, cache, Kafka, prefix) come from
stream.settings so the API reads the same state the worker writes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stream.settings import Settings, SettingsError

READ, ADMIN = "read", "admin"


@dataclass(frozen=True)
class ApiSettings:
    service: Settings = field(default_factory=Settings)
    host: str = "0.0.0.0"
    port: int = 8000
    read_tokens: frozenset[str] = frozenset()
    admin_tokens: frozenset[str] = frozenset()
    open: bool = False
    """run without authentication: only when explicitly asked (CLUSTERER_API_OPEN=true)"""
    max_request_bytes: int = 1 << 20
    max_upload_bytes: int = 64 << 20
    rate_per_minute: int = 600
    rate_burst: int = 100
    list_limit_max: int = 500
    detail_members_max: int = 100_000
    cache_seconds: float = 2.0
    """how long a cluster list or search answer may be served from Redis"""
    data_root: Path | None = None
    job_runners: int = 1
    """batch job runner threads in this process (0: this API only accepts jobs)"""
    job_lease_seconds: float = 30.0
    job_checkpoint_items: int = 20_000
    pg_pool_max: int = 8
    kafka_timeout_seconds: float = 2.0

    @property
    def auth_enabled(self) -> bool:
        return not self.open

    def role_of(self, token: str) -> str | None:
        """admin, read or None; constant-time comparisons against every configured token."""
        import hmac

        role = None
        for t in self.admin_tokens:
            if hmac.compare_digest(t.encode(), token.encode()):
                role = ADMIN
        if role is None:
            for t in self.read_tokens:
                if hmac.compare_digest(t.encode(), token.encode()):
                    role = READ
        return role

    @classmethod
    def from_env(cls, **overrides: object) -> ApiSettings:
        """Overrides (keyword per field) win over the environment."""
        e = os.environ
        service = Settings.from_env()
        read = set(_csv(e.get("CLUSTERER_API_TOKENS", "")))
        admin = set(_csv(e.get("CLUSTERER_API_ADMIN_TOKENS", "")))
        token_file = e.get("CLUSTERER_API_TOKEN_FILE")
        if token_file:
            r, a = read_token_file(Path(token_file))
            read |= r
            admin |= a
        root = e.get("CLUSTERER_API_DATA_ROOT")
        values: dict[str, object] = {
            "service": service,
            "host": e.get("CLUSTERER_API_HOST", cls.host),
            "port": _int(e, "CLUSTERER_API_PORT", cls.port),
            "read_tokens": frozenset(read),
            "admin_tokens": frozenset(admin),
            "open": _bool(e, "CLUSTERER_API_OPEN", cls.open),
            "max_request_bytes": _int(e, "CLUSTERER_API_MAX_REQUEST_BYTES", cls.max_request_bytes),
            "max_upload_bytes": _int(e, "CLUSTERER_API_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            "rate_per_minute": _int(e, "CLUSTERER_API_RATE_PER_MINUTE", cls.rate_per_minute),
            "rate_burst": _int(e, "CLUSTERER_API_RATE_BURST", cls.rate_burst),
            "list_limit_max": _int(e, "CLUSTERER_API_LIST_LIMIT_MAX", cls.list_limit_max),
            "detail_members_max": _int(
                e, "CLUSTERER_API_DETAIL_MEMBERS_MAX", cls.detail_members_max
            ),
            "cache_seconds": _float(e, "CLUSTERER_API_CACHE_SECONDS", cls.cache_seconds),
            "data_root": Path(root) if root else None,
            "job_runners": _int(e, "CLUSTERER_API_JOB_RUNNERS", cls.job_runners),
            "job_lease_seconds": _float(
                e, "CLUSTERER_API_JOB_LEASE_SECONDS", cls.job_lease_seconds
            ),
            "job_checkpoint_items": _int(
                e, "CLUSTERER_API_JOB_CHECKPOINT_ITEMS", cls.job_checkpoint_items
            ),
            "pg_pool_max": _int(e, "CLUSTERER_API_PG_POOL_MAX", cls.pg_pool_max),
            "kafka_timeout_seconds": _float(
                e, "CLUSTERER_API_KAFKA_TIMEOUT_SECONDS", cls.kafka_timeout_seconds
            ),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**values)  # type: ignore[arg-type]
        s.validate()
        return s

    def validate(self) -> None:
        if not 1 <= self.port <= 65535:
            raise SettingsError("CLUSTERER_API_PORT must be between 1 and 65535")
        for name in (
            "max_request_bytes",
            "max_upload_bytes",
            "rate_per_minute",
            "rate_burst",
            "list_limit_max",
            "detail_members_max",
            "job_checkpoint_items",
            "pg_pool_max",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"CLUSTERER_API_{name.upper()} must be at least 1")
        for name in ("cache_seconds", "job_lease_seconds", "kafka_timeout_seconds"):
            if getattr(self, name) < 0:
                raise SettingsError(f"CLUSTERER_API_{name.upper()} must not be negative")
        if self.job_runners not in (0, 1):
            raise SettingsError("CLUSTERER_API_JOB_RUNNERS must be 0 or 1")
        if self.job_lease_seconds < 1:
            raise SettingsError("CLUSTERER_API_JOB_LEASE_SECONDS must be at least 1")
        if not self.open and not (self.read_tokens or self.admin_tokens):
            raise SettingsError(
                "no API token configured: set CLUSTERER_API_TOKENS / CLUSTERER_API_ADMIN_TOKENS"
                " or CLUSTERER_API_TOKEN_FILE, or CLUSTERER_API_OPEN=true to run without"
                " authentication"
            )
        if any(len(t) < 16 for t in self.read_tokens | self.admin_tokens):
            raise SettingsError("API tokens must be at least 16 characters long")
        if self.data_root is not None and not self.data_root.is_dir():
            raise SettingsError(f"CLUSTERER_API_DATA_ROOT={self.data_root} is not a directory")


def read_token_file(path: Path) -> tuple[set[str], set[str]]:
    """A secret file (Docker/Kubernetes secret mount): one `read <token>` or `admin <token>`
    per line; blank lines and `#` comments are ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"CLUSTERER_API_TOKEN_FILE {path} is unreadable: {exc}") from exc
    read: set[str] = set()
    admin: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("read", "admin"):
            raise SettingsError(
                f"CLUSTERER_API_TOKEN_FILE {path} line {n}: expected `read <token>` or"
                " `admin <token>`"
            )
        (admin if parts[0] == "admin" else read).add(parts[1])
    return read, admin


def _csv(raw: str) -> list[str]:
    return [t.strip() for t in raw.split(",") if t.strip()]


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not an integer") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a number") from exc
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(f"{name}={raw!r} is not a finite number")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise SettingsError(f"{name}={raw!r} is not a boolean (true/false)")
    return raw.lower() in ("1", "true", "yes")
