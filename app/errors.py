"""Domain errors and the contract's error table.

Framework-free: readers in ``app.imaging`` raise these, ``app.main`` renders each one as
``application/problem+json`` (RFC 9457). A ``detail`` must never hold a file name, a path, a
DICOM tag value or a stack trace: write it from what the code knows, not from the input.
"""

from __future__ import annotations

from typing import Any, ClassVar

# code -> (status, title), exactly the contract's table.
ERROR_TABLE: dict[str, tuple[int, str]] = {
    "bad_request": (400, "Bad request"),
    "unauthorized": (401, "Unauthorized"),
    "forbidden": (403, "Forbidden"),
    "not_found": (404, "Not found"),
    "not_acceptable": (406, "Not acceptable"),
    "request_timeout": (408, "Request timeout"),
    "payload_too_large": (413, "Payload too large"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "unsupported_transfer_syntax": (415, "Unsupported transfer syntax"),
    "invalid_image": (422, "Invalid image"),
    "image_too_large": (422, "Image too large"),
    "invalid_dicom": (422, "Invalid DICOM"),
    "invalid_volume": (422, "Invalid volume"),
    "inconsistent_series": (422, "Inconsistent series"),
    "unknown_operating_point": (422, "Unknown operating point"),
    "validation_error": (422, "Validation error"),
    "out_of_distribution": (422, "Out of distribution"),
    "model_not_ready": (503, "Model not ready"),
    "overloaded": (503, "Overloaded"),
    "pacs_not_configured": (503, "PACS not configured"),
    "internal_error": (500, "Internal server error"),
}


class MedserveError(Exception):
    """Base of every error that maps to a problem+json response."""

    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    @property
    def status(self) -> int:
        return ERROR_TABLE[self.code][0]

    @property
    def title(self) -> str:
        return ERROR_TABLE[self.code][1]


class BadRequest(MedserveError):
    code = "bad_request"


class Unauthorized(MedserveError):
    code = "unauthorized"


class Forbidden(MedserveError):
    code = "forbidden"


class PacsNotConfigured(MedserveError):
    code = "pacs_not_configured"


class NotFound(MedserveError):
    code = "not_found"


class NotAcceptable(MedserveError):
    code = "not_acceptable"


class RequestTimeout(MedserveError):
    code = "request_timeout"


class PayloadTooLarge(MedserveError):
    code = "payload_too_large"


class UnsupportedMediaType(MedserveError):
    code = "unsupported_media_type"


class UnsupportedTransferSyntax(MedserveError):
    code = "unsupported_transfer_syntax"


class InvalidImage(MedserveError):
    code = "invalid_image"


class ImageTooLarge(MedserveError):
    code = "image_too_large"


class InvalidDicom(MedserveError):
    code = "invalid_dicom"


class InvalidVolume(MedserveError):
    code = "invalid_volume"


class InconsistentSeries(MedserveError):
    code = "inconsistent_series"


class UnknownOperatingPoint(MedserveError):
    code = "unknown_operating_point"


class ValidationFailed(MedserveError):
    code = "validation_error"


class ModelNotReady(MedserveError):
    code = "model_not_ready"


class Overloaded(MedserveError):
    code = "overloaded"


class OutOfDistribution(MedserveError):
    """The input lies outside the model's training distribution and the policy refuses it;
    ``extra`` carries ``ood`` (score, threshold, in_distribution) for the problem body."""

    code = "out_of_distribution"
