"""Schemathesis against the app's own OpenAPI schema: no 500s, every response as declared."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402

from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from app.registry import build_registry  # noqa: E402
from app.store import Store  # noqa: E402
from tests.tiny_model import write_tiny_suite  # noqa: E402

_tmp = Path(tempfile.mkdtemp(prefix="medserve-fuzz-"))
_models = write_tiny_suite(_tmp / "models")
# A PACS URL nobody answers and no job workers: the study endpoints record jobs (202/200)
# instead of answering 503 pacs_not_configured, which schemathesis counts as a server error.
_settings = Settings(
    model_dir=_models,
    max_upload_bytes=2 * 1024 * 1024,
    data_dir=_tmp / "data",
    dicomweb_url="http://127.0.0.1:9/dicom-web",
    job_workers=0,
)
app = create_app(_settings)
app.state.registry = build_registry(_settings)  # what the lifespan does
app.state.store = Store(_settings.sqlalchemy_url)
app.state.store.migrate()

schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    # Every check but "schema-valid data is accepted": a schema cannot say what a decodable
    # DICOM is, so random bytes that fit `format: binary` rightly get 415/422.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
