"""Suite-wide: the service's database lives in a temporary folder, never in the checkout."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.environ.get("MEDSERVE_DATA_DIR")
    os.environ["MEDSERVE_DATA_DIR"] = str(tmp_path_factory.mktemp("medserve-data"))
    yield
    if previous is None:
        os.environ.pop("MEDSERVE_DATA_DIR", None)
    else:
        os.environ["MEDSERVE_DATA_DIR"] = previous
