"""Debian tools some tests need (installed by ``.ci/run``): skipped with a reason where absent,
except under CI (``CI`` set), where a missing tool fails the test instead of hiding it."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(command: str, package: str) -> str:
    """The path of ``command``; skip (fail under CI) when the Debian ``package`` is missing."""
    path = shutil.which(command)
    if path:
        return path
    reason = f"{command} not found: apt-get install -y {package} (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
