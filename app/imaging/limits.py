"""Resource limits the readers enforce (taken from Settings by the service, defaults here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DecodeLimits:
    """Caps applied while decoding, before any large allocation.

    ``claim`` (the service's per-request memory ticket) is told how many bytes a reader is
    about to allocate, before it allocates them; it may wait for room or raise ``Overloaded``.
    """

    max_image_pixels: int = 64_000_000
    max_volume_voxels: int = 512 * 512 * 1024
    max_decompressed_bytes: int = 1024 * 1024 * 1024
    max_archive_entries: int = 4096
    claim: Callable[[int], None] | None = field(default=None, compare=False, repr=False)

    def reserve(self, nbytes: int) -> None:
        """Announce a large allocation (decoded pixels, an inflated archive)."""
        if self.claim is not None and nbytes > 0:
            self.claim(int(nbytes))
