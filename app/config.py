"""Service configuration: one ``Settings`` object, environment prefix ``MEDSERVE_``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.imaging.limits import DecodeLimits

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
        description="Comma-separated API keys; empty disables authentication",
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
        0, ge=0, description="onnxruntime intra-op threads per session; 0 = one per core"
    )
    ort_inter_op_threads: int = Field(1, ge=1)
    max_concurrent_inferences: int = Field(2, ge=1, description="Inferences running at once")
    max_queued_inferences: int = Field(
        16, ge=0, description="Requests allowed to wait for an inference slot before 503"
    )
    retry_after_seconds: int = Field(5, ge=1, description="Retry-After on 503 responses")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _long_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        if any(len(k.get_secret_value()) < 16 for k in keys):
            raise ValueError("every API key must be at least 16 characters long")
        return keys

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(
            max_image_pixels=self.max_image_pixels,
            max_volume_voxels=self.max_volume_voxels,
            max_decompressed_bytes=self.max_decompressed_bytes,
            max_archive_entries=self.max_archive_entries,
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment (cached: one validation per process)."""
    return Settings()
