"""The upload's sha256, hashed in a thread next to decoding, is the sha256 of the parts."""

from __future__ import annotations

import hashlib

from app.pipeline import upload_digest


def test_digest_of_small_and_large_uploads_equals_hashlib() -> None:
    small = [b"medserve"]
    large = [bytes(range(256)) * 8192, b"x" * 3_000_001]  # past the in-thread threshold
    for parts in (small, large, [b""], []):
        expected = hashlib.sha256(b"".join(parts)).hexdigest()
        assert upload_digest(parts).result(timeout=30) == expected
