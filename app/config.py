"""Service configuration: one ``Settings`` object, environment prefix ``MEDSERVE_``."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.imaging.limits import DecodeLimits
from app.runtime import RuntimeSetting

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Everything the service can be told from outside, validated once at start."""

    model_config = SettingsConfigDict(env_prefix="MEDSERVE_", extra="ignore", frozen=True)

    model_dir: Path = Field(Path("models"), description="Folder holding <name>/<version>/")
    model_versions: dict[str, str] = Field(
        default_factory=dict,
        description='Pin versions, JSON: {"pneumonia_xray": "1.0.0"}; otherwise highest wins',
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated API keys, each `name:key` or a bare key (named key1, key2, … by "
            "position); empty (and no admin keys) disables authentication"
        ),
    )
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Keys that may also read /audit (same form; they work everywhere)",
    )
    data_dir: Path = Field(Path("data"), description="Where the default SQLite database lives")
    database_url: str | None = Field(
        None,
        description=(
            "SQLAlchemy URL of the jobs/audit database (default: SQLite under data_dir; "
            "postgresql+psycopg://… for several processes)"
        ),
    )
    dicomweb_url: str | None = Field(
        None, description="The PACS's DICOMweb root, e.g. http://orthanc:8042/dicom-web"
    )
    dicomweb_username: str | None = None
    dicomweb_password: SecretStr | None = None
    dicomweb_token: SecretStr | None = Field(None, description="Bearer token for the PACS")
    dicomweb_timeout_seconds: float = Field(
        30.0, gt=0, description="Connect and read timeout of every DICOMweb call"
    )
    job_workers: int = Field(1, ge=0, description="Jobs run at once in this process (0: none)")
    job_poll_seconds: float = Field(1.0, gt=0, description="How often idle workers look for jobs")
    job_lease_seconds: float = Field(
        15.0, gt=0, description="A running job whose lease lapses is taken up by another worker"
    )
    job_retry_max_seconds: float = Field(30.0, gt=0, description="Backoff cap between retries")
    job_give_up_seconds: float = Field(
        600.0, gt=0, description="A job fails only after this long of consecutive PACS failures"
    )
    max_upload_bytes: int = Field(256 * MiB, gt=0, description="Request body limit in bytes")
    max_image_pixels: int = Field(
        64_000_000, gt=0, description="Decoded 2D pixel limit (decompression bombs)"
    )
    max_volume_voxels: int = Field(
        512 * 512 * 1024, gt=0, description="Decoded 3D voxel limit, checked before allocation"
    )
    max_decompressed_bytes: int = Field(
        1024 * MiB, gt=0, description="Limit on what a zip or gzip upload may expand to"
    )
    max_archive_entries: int = Field(4096, gt=0, description="Entries allowed in a zip upload")
    max_upload_parts: int = Field(2048, gt=0, description="Multipart parts allowed per request")
    ort_intra_op_threads: int = Field(
        0,
        ge=0,
        description=(
            "Threads per model (onnxruntime intra-op threads, OpenVINO's INFERENCE_NUM_THREADS); "
            "0 = one per core"
        ),
    )
    ort_inter_op_threads: int = Field(1, ge=1)
    ort_spin_when_alone: bool = Field(
        True,
        description=(
            "A model on onnxruntime also loads a second session whose threads spin during a "
            "run, used while its request is the only inference in flight (lower latency one "
            "request at a time; the sleeping session otherwise, so concurrent requests keep "
            "the cores). Costs about 10 MB per model"
        ),
    )
    ort_pin_when_alone: bool = Field(
        True,
        description=(
            "During a run on the spinning session (the only inference in flight) the calling "
            "thread and each onnxruntime intra-op thread run on a core of their own: left to "
            "the scheduler, the intra-op thread often shared the caller's core while the other "
            "stayed idle, and the run took two to three times as long. Only where a model's "
            "threads are as many as the cores the process may use; off by default with "
            "several worker processes (they would pin to the same cores)"
        ),
    )
    runtime: RuntimeSetting = Field(
        "auto",
        description=(
            "What runs the models: onnxruntime, openvino (OpenVINO's CPU plugin in f32, as many "
            "threads as onnxruntime), or auto (OpenVINO for the models where it measured "
            "faster, app/runtime.py; onnxruntime for the others and when openvino is not "
            "installed). A model on OpenVINO whose outputs differ from onnxruntime's by more "
            "than 1e-4 at load runs on onnxruntime, with the reason on /models"
        ),
    )
    model_runtimes: dict[str, RuntimeSetting] = Field(
        default_factory=dict,
        description='Per-model runtime, JSON: {"covid_ct": "onnxruntime"}; otherwise `runtime`',
    )
    graph_rewrite: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "A model on onnxruntime serves its graph with each channel Concat that feeds one "
            "Conv split into a Conv per part, summed (app/graph.py; the same outputs within "
            "1e-4, checked at load): on for every model, off, or auto (the models where it "
            "measured faster: AUTO_GRAPH_REWRITE in app/graph.py)"
        ),
    )
    max_concurrent_inferences: int = Field(2, ge=1, description="Inferences running at once")
    max_queued_inferences: int = Field(
        16, ge=0, description="Requests allowed to wait for an inference slot before 503"
    )
    inline_max_ms: float = Field(
        10.0,
        ge=0,
        description=(
            "A request that is the only one admitted runs on the event loop's own thread, "
            "without the hand-off to a worker thread and back (0.2-0.3 ms), when runs of its "
            "kind (the same path, query and media types, a body at most twice their average "
            "and at most 2 MiB) "
            "have taken at most this many milliseconds on average; 0 turns it off. Meanwhile "
            "the service reads no other request"
        ),
    )
    retry_after_seconds: int = Field(5, ge=1, description="Retry-After on 503 responses")
    max_inflight_bytes: int = Field(
        1536 * MiB,
        gt=0,
        description=(
            "Memory budget of the requests in flight: bodies being received and images or "
            "volumes being decoded (sized for a 4 GB container)"
        ),
    )
    admission_timeout_seconds: float = Field(
        30.0, gt=0, description="How long a request waits for room in the budget before 503"
    )
    read_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description=(
            "A request whose headers are not complete, or whose body makes no progress, for "
            "this long is answered 408 (body) or closed (headers)"
        ),
    )
    keep_alive_seconds: int = Field(5, ge=1, description="Idle keep-alive connections close")
    max_connections: int = Field(
        4096, ge=1, description="Open connections (and tasks) before uvicorn answers 503"
    )
    explain_budget_ms: float = Field(
        2000.0,
        gt=0,
        description=(
            "Time an explain=occlusion answer may spend on forward passes: the occlusion grid "
            "is the finest whose passes fit, at the latency measured when the model loaded"
        ),
    )
    explain_batch: int = Field(
        8, ge=1, description="Occluded inputs per session.run when explaining (batch size)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    ood_policy: Literal["warn", "refuse"] = Field(
        "warn",
        description=(
            "An input the model card's OOD check finds out of distribution is answered with a "
            "warning (warn) or refused with 422 out_of_distribution (refuse)"
        ),
    )

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _long_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        if any(len(split_key(k.get_secret_value(), "")[1]) < 16 for k in keys):
            raise ValueError("every API key must be at least 16 characters long")
        return keys

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def named_keys(self) -> dict[str, tuple[str, bool]]:
        """key → (name, is_admin) for every configured key (API keys, then admin keys)."""
        out: dict[str, tuple[str, bool]] = {}
        for prefix, keys, admin in (
            ("key", self.api_keys, False),
            ("admin", self.admin_keys, True),
        ):
            for index, secret in enumerate(keys, start=1):
                name, key = split_key(secret.get_secret_value(), f"{prefix}{index}")
                out[key] = (name, admin or out.get(key, ("", False))[1])
        return out

    @property
    def sqlalchemy_url(self) -> str:
        """The jobs/audit database: the setting, or SQLite under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'medserve.db').resolve()}"

    @property
    def decode_limits(self) -> DecodeLimits:
        return self.decode_limits_with(None)

    def decode_limits_with(self, claim: Callable[[int], None] | None) -> DecodeLimits:
        """The decode limits with a request's memory ticket ``claim`` (``DecodeLimits.claim``):
        one object per upload, not a second one made by ``dataclasses.replace``."""
        return DecodeLimits(
            max_image_pixels=self.max_image_pixels,
            max_volume_voxels=self.max_volume_voxels,
            max_decompressed_bytes=self.max_decompressed_bytes,
            max_archive_entries=self.max_archive_entries,
            claim=claim,
        )

    @property
    def intra_op_threads(self) -> int:
        """Threads per onnxruntime session: the setting, or the cores this process may use."""
        if self.ort_intra_op_threads:
            return self.ort_intra_op_threads
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)


_KEY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def split_key(text: str, default_name: str) -> tuple[str, str]:
    """``name:key`` → (name, key); a bare key → (default_name, key)."""
    name, sep, key = text.partition(":")
    if sep and _KEY_NAME.match(name) and key:
        return name, key
    return default_name, text


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment (cached: one validation per process)."""
    return Settings()
