"""A real medserve process for the Open Inference Protocol tests, and what they compare with.

The server is ``python -m app.cli serve`` with the committed models, an API key and an 8 MiB
body limit (so that a 413 is cheap to provoke); the clients are tritonclient's and kserve's,
unmodified, talking to it over loopback.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from app.config import Settings
from app.imaging.card import ModelCard
from app.imaging.preprocess import preprocess
from app.imaging.readers import decode_image, decode_volume
from app.registry import load_entry
from app.runtime import Runner
from tests.integration import media
from tests.integration.service import REPO_ROOT, MiB, running_service, service_env

MODELS = REPO_ROOT / "models"
MAX_UPLOAD = 8 * MiB


@dataclass(frozen=True)
class V2Server:
    url: str  # http://127.0.0.1:port
    key: str
    admin_key: str
    log: Path

    @property
    def host_port(self) -> str:  # tritonclient takes the URL without its scheme
        return self.url.removeprefix("http://")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="session")
def v2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V2Server]:
    key, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    env = service_env(
        MEDSERVE_MODEL_DIR=str(MODELS),
        MEDSERVE_API_KEYS=f"v2test:{key}",
        MEDSERVE_ADMIN_KEYS=admin_key,
        MEDSERVE_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
        MEDSERVE_JOB_WORKERS="0",
    )
    log = tmp_path_factory.mktemp("medserve-v2") / "service.log"
    with running_service(env, log) as (url, _proc):
        yield V2Server(url, key, admin_key, log)


@dataclass(frozen=True)
class Case:
    """One committed model: its card, an upload file of the kind its endpoint takes, and the
    tensor the service's own preprocessing makes of that file."""

    name: str
    endpoint: str
    card: ModelCard
    upload: bytes
    image_shape: tuple[int, ...]
    tensor: np.ndarray
    session: ort.InferenceSession
    runner: Runner  # what the server runs the model on (the same settings: app.runtime)

    @property
    def input_name(self) -> str:
        return str(self.session.get_inputs()[0].name)

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def direct(self, batch: np.ndarray) -> list[np.ndarray]:
        """The model's runtime on the tensor, outside the service, as the registry builds it:
        onnxruntime (its session options), or OpenVINO where the runtime setting picks it."""
        return [np.asarray(a) for a in self.runner.run(None, {self.input_name: batch})]


_UPLOADS: dict[str, Callable[[], bytes]] = {
    "pneumonia_xray": lambda: media.png8(media.chest_like(256, 240, max_value=255)).data,
    "covid_ct": lambda: media.ct_nifti(compressed=True),
    "brain_tumor_mri": lambda: media.tiff8(media.blob_image(160, 176, max_value=255)).data,
    "phantom_tumor_xray": lambda: media.tiff16(media.blob_image(256, 224, max_value=60000)).data,
}
MODEL_NAMES = sorted(_UPLOADS)


def _card(name: str) -> tuple[ModelCard, Path]:
    folder = max((MODELS / name).iterdir())
    return ModelCard.model_validate(json.loads((folder / "model_card.json").read_bytes())), folder


@pytest.fixture(scope="session")
def cases() -> dict[str, Case]:
    settings = Settings()
    out = {}
    for name, make in _UPLOADS.items():
        card, folder = _card(name)
        data = make()
        prep = card.input.preprocessing
        if prep.kind == "volume3d":
            item = decode_volume([data], settings.decode_limits)
        else:
            item = decode_image([data], settings.decode_limits, apply_voi_lut=prep.apply_voi_lut)
        tensor = preprocess(item, prep, card.input.layout)
        entry = load_entry(name, folder, settings)  # the server's settings: no MEDSERVE_*
        assert entry.ready and entry.session is not None and entry.runner is not None
        out[name] = Case(
            name, card.endpoint, card, data, item.shape, tensor, entry.session, entry.runner
        )
    return out
