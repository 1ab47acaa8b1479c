"""One settings object for every edge (CLI, API, dashboard). Paths default under ``SKINLESION_HOME``.

Environment variables ``SKINLESION_<FIELD>`` override any field, e.g. ``SKINLESION_HOME=/srv/skin``
or ``SKINLESION_DB_PATH=/tmp/x.duckdb``; ``SKINLESION_STORE_URL=postgresql://USER@HOST:PORT/DB`` puts
the store in PostgreSQL (several hosts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SKINLESION_", extra="ignore")

    home: Path = Path.cwd()
    data_dir: Path | None = None
    models_dir: Path | None = None
    db_path: Path | None = None
    #: the store: ``duckdb:///PATH`` (default: ``db_path``, one host) or
    #: ``postgresql://USER@HOST:PORT/DB`` (several hosts); see skinlesion.store.connection
    store_url: str | None = None
    thresholds_file: Path | None = None
    cache_dir: Path | None = None
    #: dashboard users (name, role, scrypt password hash); see skinlesion.auth
    users_file: Path | None = None
    device: str = "auto"
    #: what runs a neural version's network on the CPU: auto (the fastest gated export or eager),
    #: openvino, onnxruntime or torch (eager); see skinlesion.model.runtime
    runtime: Literal["auto", "openvino", "onnxruntime", "torch"] = "auto"
    #: API: largest accepted upload, and whether images are kept (for the review queue / retraining)
    max_upload_bytes: int = 20 * 1024 * 1024
    retain_images: bool = False
    #: seconds a process may serve an old route before re-reading it from the store
    route_ttl_s: float = 2.0
    #: seconds a process waits on a DuckDB lock held by another process before giving up
    busy_timeout_s: float = 10.0
    #: API: pixels decoded at once across requests (a request waits up to ``decode_wait_s`` for room,
    #: then gets 503 with Retry-After); at least the largest image accepted
    decode_budget_px: int = 40_000_000
    decode_wait_s: float = 10.0
    #: API rate limits (``limits`` notation: "N/second|minute|hour"): every request per client
    #: address, requests per API key, and failed key checks per address
    rate_limit_per_address: str = "600/minute"
    rate_limit_per_key: str = "300/minute"
    auth_failures_per_address: str = "20/minute"
    #: seconds an API process trusts a checked key (a key revoked elsewhere stops working within it)
    key_cache_ttl_s: float = 0.5

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        home = self.home.expanduser().resolve()
        self.home = home
        self.data_dir = self.data_dir or home / "data"
        self.models_dir = self.models_dir or home / "models"
        self.db_path = self.db_path or self.data_dir / "skinlesion.duckdb"
        self.store_url = self.store_url or f"duckdb://{self.db_path}"
        self.thresholds_file = self.thresholds_file or home / "thresholds.toml"
        self.cache_dir = self.cache_dir or self.data_dir / "cache"
        self.users_file = self.users_file or home / "users.toml"
        return self

    @property
    def retention_dir(self) -> Path | None:
        """Where retained images go; None while retention is off."""
        return self.data_dir / "images" if self.retain_images else None
