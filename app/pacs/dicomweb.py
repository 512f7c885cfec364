"""The PACS over DICOMweb, through dicomweb-client: QIDO-RS series of a study, WADO-RS one
series, STOW-RS results. Every call has a timeout; the client's own retrying is off (jobs back
off themselves). Nothing is written to disk."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from app.config import Settings

# dicomweb-client and urllib3 log request URLs (which hold study and series UIDs) at DEBUG and
# some failures at WARNING: UIDs never reach medserve's logs.
logging.getLogger("dicomweb_client").setLevel(logging.CRITICAL + 1)
logging.getLogger("urllib3").setLevel(logging.ERROR)

_MODALITY, _SERIES_UID, _INSTANCES = "00080060", "0020000E", "00201209"


class PacsUnavailable(Exception):
    """The PACS did not answer in time, refused the connection or failed (5xx, 401/403, 429):
    worth retrying. ``code`` is stable, the message never holds a UID."""

    code = "pacs_unavailable"


class PacsRejected(Exception):
    """The PACS answered but refused the request for good (4xx, a STOW failure)."""

    code = "pacs_rejected"


@dataclass(frozen=True)
class SeriesInfo:
    uid: str
    modality: str | None
    instances: int | None


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


class Pacs:
    """One DICOMweb endpoint with the service's credentials."""

    def __init__(self, settings: Settings) -> None:
        assert settings.dicomweb_url is not None
        session = requests.Session()
        headers = {}
        if settings.dicomweb_token is not None:
            headers["Authorization"] = f"Bearer {settings.dicomweb_token.get_secret_value()}"
        elif settings.dicomweb_username is not None:
            password = settings.dicomweb_password
            session.auth = (
                settings.dicomweb_username,
                password.get_secret_value() if password else "",
            )
        timeout = settings.dicomweb_timeout_seconds
        self.client = DICOMwebClient(
            url=settings.dicomweb_url.rstrip("/"),
            session=session,
            headers=headers or None,
            timeout=(timeout, timeout),
        )
        self.client.set_http_retry_params(retry=False)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PacsUnavailable(
                f"{what}: the PACS did not answer ({type(exc).__name__})"
            ) from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status >= 500 or status in (401, 403, 408, 429):
                raise PacsUnavailable(f"{what}: the PACS answered HTTP {status}") from None
            raise PacsRejected(f"{what}: the PACS answered HTTP {status}") from None
        except (ValueError, OSError) as exc:  # malformed multipart / JSON from the PACS
            raise PacsUnavailable(f"{what}: unreadable answer ({type(exc).__name__})") from None

    def series(self, study_uid: str) -> list[SeriesInfo]:
        """QIDO-RS: the study's series with their modality and instance count (None where the
        PACS does not say)."""
        found = self._call(
            "QIDO-RS",
            self.client.search_for_series,
            study_instance_uid=study_uid,
            fields=["Modality", "SeriesInstanceUID", "NumberOfSeriesRelatedInstances"],
        )
        out = []
        for item in found or []:
            uid = _value(item, _SERIES_UID)
            if not uid:
                continue
            count = _value(item, _INSTANCES)
            out.append(
                SeriesInfo(
                    str(uid),
                    str(_value(item, _MODALITY) or "") or None,
                    int(count) if count is not None else None,
                )
            )
        return out

    def retrieve(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """WADO-RS: every instance of one series (in memory)."""
        datasets = self._call(
            "WADO-RS",
            self.client.retrieve_series,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
        )
        return list(datasets)

    def store(self, study_uid: str, dataset: Dataset) -> None:
        """STOW-RS one result into its study; a SOP instance the PACS already holds (a job
        taken up again) is no failure."""
        answer = self._call(
            "STOW-RS", self.client.store_instances, datasets=[dataset], study_instance_uid=study_uid
        )
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            reasons = {int(getattr(item, "FailureReason", 0)) for item in failed}
            # 0xA700 (out of resources) and 0xC000-class processing failures may pass; the rest
            # (e.g. 0x0110 processing failure, 0xA900 mismatch) are final.
            if reasons & {0xA700, 0xA701, 0xA702}:
                raise PacsUnavailable("STOW-RS: the PACS is out of resources")
            raise PacsRejected("STOW-RS: the PACS refused the result")
