#!/usr/bin/env python3
"""Write the two podman settings these build machines need into containers.conf, idempotently.

    python3 deploy/podman_settings.py [/etc/containers/containers.conf]

- ``[containers] default_ulimits = []``: podman's default RLIMIT_NOFILE is refused here.
- ``[engine] runtime = "runc"``: crun refuses this kernel's hybrid cgroups.

Other settings and comments in the file are kept; a key already set is replaced in place, a
missing key is added under its table, a missing table is appended. Standard library only (it
runs before any venv exists).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DEFAULT_PATH = Path("/etc/containers/containers.conf")
SETTINGS: dict[str, dict[str, str]] = {
    "containers": {"default_ulimits": "[]"},
    "engine": {"runtime": '"runc"'},
}
_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$")


def _value_lines(lines: list[str], i: int) -> int:
    """How many lines the ``key = value`` at ``lines[i]`` spans (an array may go on for
    several; brackets inside quoted strings are not counted)."""
    depth, n = 0, 0
    while i + n < len(lines):
        text = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", lines[i + n]).split("#", 1)[0]
        if n == 0:
            text = text.split("=", 1)[1]
        depth += text.count("[") - text.count("]")
        n += 1
        if depth <= 0:
            return n
    return n


def apply(text: str, settings: dict[str, dict[str, str]] = SETTINGS) -> str:
    """``text`` (a containers.conf) with every ``settings[table][key] = value`` in force."""
    lines = text.splitlines()
    for table, values in settings.items():
        for key, value in values.items():
            wanted = f"{key} = {value}"
            key_re = re.compile(rf"^\s*{re.escape(key)}\s*=")
            start = next(
                (i for i, line in enumerate(lines) if (m := _TABLE.match(line)) and m[1] == table),
                None,
            )
            if start is None:
                if lines and lines[-1].strip():
                    lines.append("")
                lines += [f"[{table}]", wanted]
                continue
            end = next((i for i in range(start + 1, len(lines)) if _TABLE.match(lines[i])), None)
            end = len(lines) if end is None else end
            found = [i for i in range(start + 1, end) if key_re.match(lines[i])]
            for i in reversed(found):  # a key given twice is a TOML error: keep one
                del lines[i : i + _value_lines(lines, i)]
            lines.insert(found[0] if found else start + 1, wanted)
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT_PATH
    before = path.read_text() if path.exists() else ""
    after = apply(before)
    if after == before:
        print(f"podman settings: {path} already has them")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(after)
    print(f'podman settings: wrote default_ulimits = [] and runtime = "runc" into {path}')
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
