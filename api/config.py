"""Settings of the HTTP API only (env prefix ``TAGGER_API_``); shared knobs stay in shared.config."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """Limits and timers of the API process; tests build it directly, the app reads the environment."""

    model_config = SettingsConfigDict(env_prefix="TAGGER_API_", extra="ignore")

    max_batch: int = Field(500, ge=1, description="Most events one POST /v1/events may carry.")
    max_body_bytes: int = Field(
        1_000_000, ge=1, description="Largest request body, in bytes (checked on Content-Length and read)."
    )
    readiness_timeout_s: float = Field(
        1.0, gt=0, description="How long /readyz waits for the broker before calling it down."
    )
    key_cache_ttl_s: float = Field(
        5.0, ge=0, description="Seconds an API process trusts a key it verified without asking the "
        "database again; also the longest time a revoked key keeps working. 0: every request asks.",
    )
    key_cache_size: int = Field(1024, ge=1, description="Most verified keys an API process caches.")
    ingest_rounds: int = Field(
        1, ge=0, le=16, description="Outbox rounds (record and commit, publish, mark) one API process "
        "runs at once for POST /v1/events; requests arriving meanwhile share the next one (group "
        "commit). 0: each request its own round. More rounds in flight make smaller rounds: 2 was "
        "slower than 1 at every load measured (docs/BENCHMARKS.md).",
    )
    ingest_defer_marks: bool = Field(
        True, description="With group commit, answer a round once its events are recorded and "
        "published, and write their 'enqueued' marks with the next round's records (or as soon as "
        "the API is idle) instead of in a third round trip before the answer. A mark not yet "
        "written only means the sweeper may send that event once more (the worker de-duplicates).",
    )
