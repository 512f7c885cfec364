"""Resource limits the readers enforce (taken from Settings by the service, defaults here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecodeLimits:
    """Caps applied while decoding, before any large allocation."""

    max_image_pixels: int = 64_000_000
    max_volume_voxels: int = 512 * 512 * 1024
    max_decompressed_bytes: int = 1024 * 1024 * 1024
    max_archive_entries: int = 4096
