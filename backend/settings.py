"""Server settings, read once from the environment and checked at startup.

Every setting is documented in the README's settings table. A bad value stops the server with a message
that names the variable and shows a valid example, instead of failing later inside a request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ServerSettings", "SettingsError"]

_DEFAULT_MODEL_DIR = Path("~/.local/share/prelabel").expanduser()


class SettingsError(ValueError):
    """An environment variable holds a value prelabel cannot use."""


@dataclass(frozen=True)
class ServerSettings:
    """Process-wide settings (per-project settings come from ``extra_params``)."""

    model_dir: Path = _DEFAULT_MODEL_DIR
    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    local_files_document_root: Path | None = None
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    webhook_secret: str | None = None
    media_timeout: float = 30.0
    media_max_bytes: int = 64 * 1024 * 1024
    media_max_pixels: int = 120_000_000
    media_allowed_hosts: frozenset[str] = frozenset()
    media_workers: int = 8
    decode_budget_pixels: int = 256_000_000
    max_body_bytes: int = 64 * 1024 * 1024
    max_tasks: int = 10_000
    max_config_bytes: int = 1024 * 1024
    predict_budget: float = 85.0
    fit_debounce: float = 3.0
    job_page_size: int = 100
    handoff: bool = True
    device: str = "auto"
    dtype: str = "auto"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    preload_projects: int = 3
    load_workers: int = 1
    model_wait: float = 90.0
    embedding_cache_items: int = 32
    embedding_cache_mb: int = 2048
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        """Read settings from ``env`` (default: ``os.environ``); unset or empty variables keep defaults."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, kind: type, default: float) -> Any:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number like {kind(default)!r}, got {raw!r}") from None
            if value <= 0:
                raise SettingsError(f"{name} must be positive, got {raw!r}")
            return value

        def count(name: str, default: int) -> int:
            """A non-negative whole number; ``true``/``false`` read as the default/0 (older boolean settings)."""
            raw = (get(name) or str(default)).lower()
            if raw in ("true", "yes", "false", "no"):
                return default if raw in ("true", "yes") else 0
            if not raw.isdigit():
                raise SettingsError(f"{name} must be a whole number like {default}, got {raw!r}")
            return int(raw)

        defaults_raw = get("PRELABEL_DEFAULTS")
        try:
            defaults = json.loads(defaults_raw) if defaults_raw else {}
        except json.JSONDecodeError as exc:
            raise SettingsError(
                f'PRELABEL_DEFAULTS must be JSON like {{"detection": {{"model": "owlv2"}}}}: {exc}'
            ) from None
        if not isinstance(defaults, dict):
            raise SettingsError(f"PRELABEL_DEFAULTS must be a JSON object, got {defaults_raw!r}")

        url = get("LABEL_STUDIO_URL")
        if url and not url.startswith(("http://", "https://")):
            raise SettingsError(f"LABEL_STUDIO_URL must start with http:// or https://, got {url!r}")
        if get("LABEL_STUDIO_API_KEY") and not url:
            raise SettingsError(
                "LABEL_STUDIO_API_KEY needs LABEL_STUDIO_URL: the key is only ever sent to that URL "
                "(without both, prelabel uses the hostname and token Label Studio sends in /setup)"
            )
        root = get("LOCAL_FILES_DOCUMENT_ROOT")
        if root and not Path(root).is_dir():
            raise SettingsError(f"LOCAL_FILES_DOCUMENT_ROOT must be an existing directory, got {root!r}")
        user, password = get("BASIC_AUTH_USER"), get("BASIC_AUTH_PASS")
        if bool(user) != bool(password):
            raise SettingsError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        hosts = frozenset(
            h.strip().lower() for h in (get("PRELABEL_MEDIA_ALLOWED_HOSTS") or "").split(",") if h.strip()
        )
        return cls(
            model_dir=Path(get("MODEL_DIR") or cls.model_dir).expanduser(),
            label_studio_url=url.rstrip("/") if url else None,
            label_studio_api_key=get("LABEL_STUDIO_API_KEY"),
            local_files_document_root=Path(root).resolve() if root else None,
            basic_auth_user=user,
            basic_auth_pass=password,
            webhook_secret=get("PRELABEL_WEBHOOK_SECRET"),
            media_timeout=number("PRELABEL_MEDIA_TIMEOUT", float, cls.media_timeout),
            media_max_bytes=number("PRELABEL_MEDIA_MAX_BYTES", int, cls.media_max_bytes),
            media_max_pixels=number("PRELABEL_MEDIA_MAX_PIXELS", int, cls.media_max_pixels),
            media_allowed_hosts=hosts,
            media_workers=number("PRELABEL_MEDIA_WORKERS", int, cls.media_workers),
            decode_budget_pixels=number("PRELABEL_DECODE_BUDGET_MPX", int, cls.decode_budget_pixels // 10**6) * 10**6,
            max_body_bytes=number("PRELABEL_MAX_BODY_MB", int, cls.max_body_bytes >> 20) << 20,
            max_tasks=number("PRELABEL_MAX_TASKS", int, cls.max_tasks),
            max_config_bytes=number("PRELABEL_MAX_CONFIG_KB", int, cls.max_config_bytes >> 10) << 10,
            predict_budget=number("PRELABEL_PREDICT_BUDGET", float, cls.predict_budget),
            fit_debounce=number("PRELABEL_FIT_DEBOUNCE", float, cls.fit_debounce),
            job_page_size=number("PRELABEL_JOB_PAGE_SIZE", int, cls.job_page_size),
            handoff=bool(count("PRELABEL_HANDOFF", 1)),
            device=get("PRELABEL_DEVICE") or cls.device,
            dtype=get("PRELABEL_DTYPE") or cls.dtype,
            defaults=defaults,
            preload_projects=count("PRELABEL_PRELOAD", cls.preload_projects),
            load_workers=number("PRELABEL_LOAD_WORKERS", int, cls.load_workers),
            model_wait=number("PRELABEL_MODEL_WAIT", float, cls.model_wait),
            embedding_cache_items=number("PRELABEL_EMBEDDING_CACHE_ITEMS", int, cls.embedding_cache_items),
            embedding_cache_mb=number("PRELABEL_EMBEDDING_CACHE_MB", int, cls.embedding_cache_mb),
            log_level=(get("LOG_LEVEL") or cls.log_level).upper(),
        )
