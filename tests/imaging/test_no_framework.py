"""app.imaging must stay framework-free: training imports it, the service imports it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_imaging_imports_neither_fastapi_nor_tensorflow() -> None:
    code = (
        "import sys\n"
        "import app.imaging.readers, app.imaging.preprocess, app.imaging.card\n"
        "from app.imaging.readers import sniff, decode, decode_image, decode_volume\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'tensorflow', "
        "'starlette', 'keras'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
