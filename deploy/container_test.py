#!/usr/bin/env python3
"""The container acceptance run (``make container-test``): build the images with podman, run
the runtime image the way docker-compose.yml runs it, and test it from the outside.

Steps (each prints what it does; the first failure stops the run with the reason and the
service's log; every container and volume it started is removed, whatever happened):

 1. podman settings (deploy/podman_settings.py) and the local base image
    (deploy/make-base-image.sh, skipped when it exists).
 2. ``podman build --format docker`` of the ``runtime`` and ``integration`` targets from that
    base: localhost/medserve:latest and localhost/medserve-integration:latest.
 3. The image: size (< 1.5 GB), labels, HEALTHCHECK, VOLUME, no ENTRYPOINT; inside it no
    TensorFlow/Keras, no pytest, no compiler, no test code.
 4. Compose's way: read-only root, tmpfs /tmp, a named volume on the data folder only,
    cap-drop ALL, no-new-privileges, uid 10001, memory/cpu/pids limits, host networking on a
    free loopback port. Wait for its HEALTHCHECK (``podman healthcheck run``; podman runs none by
    itself without systemd), then ``pytest tests/integration`` from the integration image
    (read-only, unprivileged too) against it.
 5. The bare way: only ``--read-only --tmpfs /tmp``, nothing mounted: healthy, and the data
    folder is writable by the service user.
 6. What the service writes: the same image with a writable root, the suite again, then
    ``podman diff``: nothing may change outside /tmp and the data folder (a read-only root
    would only turn such a write into an error the suite might not see).
 7. The PACS profile, driven by **podman-compose** (PyPI, pinned, in a cached venv) with
    docker-compose.yml itself and a generated override for this machine: host networking on
    free loopback ports, Orthanc's ports in a mounted container.json. ``orthanc`` (the image
    localhost/medserve-orthanc:latest from deploy/orthanc/, read-only, cap-drop ALL, its
    storage on the named volume) and ``api`` (as compose runs it) come up healthy, then the
    ``integration`` service runs tests/integration, test_pacs.py included: a study C-STOREd
    into Orthanc, the Lua trigger's job done, its SEG and SR found in Orthanc by QIDO; this
    script checks them by QIDO from the host too, then ``podman-compose down -v``.

Environment: MEDSERVE_BASE_IMAGE (default localhost/medserve-base:bookworm; a registry image
such as python:3.11-slim-bookworm skips step 1's base), CONTAINER_TEST_PYTEST_ARGS (extra pytest
arguments for step 4), CONTAINER_TEST_CACHE (where podman-compose's venv is kept, default
/var/cache/medserve-container-test). Standard library only (podman-compose runs in its venv).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import podman_settings  # noqa: E402

BASE_IMAGE = os.environ.get("MEDSERVE_BASE_IMAGE", "localhost/medserve-base:bookworm")
RUNTIME = "localhost/medserve:latest"
INTEGRATION = "localhost/medserve-integration:latest"
ORTHANC = "localhost/medserve-orthanc:latest"
COMPOSE_FILE = ROOT / "docker-compose.yml"
# podman-compose from PyPI, pinned with its dependencies (Debian 12 has no package of it).
PODMAN_COMPOSE = ("podman-compose==1.6.0", "python-dotenv==1.2.4", "PyYAML==6.0.4")
CACHE = Path(os.environ.get("CONTAINER_TEST_CACHE", "/var/cache/medserve-container-test"))
MAX_IMAGE_BYTES = 1_500_000_000
DATA_DIR = "/var/lib/medserve"
UID = "10001"
# The service's upload limit here: 64 MiB (as the suite's own service) so that the suite's
# over-the-limit tests run too (compose's default, 256 MiB, is more than they send).
MAX_UPLOAD = 64 * 1024 * 1024
HEALTHY_WITHIN_S = 180.0
BUILD_WITHIN_S = 1800.0  # one image, cold (about 95 s here)
SUITE_WITHIN_S = 900.0  # tests/integration (about 10 s here)
LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.base.name",
    "org.opencontainers.image.licenses",
)
# Written by podman itself into every container (mount points, its own files), not by the service.
PODMAN_OWN = {
    "/etc",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/run",
    "/run/.containerenv",
    "/proc",
    "/sys",
    "/dev",
    "/dev/shm",
    "/tmp",
    DATA_DIR,
}
# Run in the service's container: write and remove a file in the data folder, print the uid.
DATA_PROBE = (
    "import os; p = os.path.join(os.environ['MEDSERVE_DATA_DIR'], '.probe'); "
    "open(p, 'w').write('x'); os.remove(p); print(os.getuid())"
)
# Inside the runtime image: what must not be there.
IMAGE_PROBE = r"""
import importlib.util, json, os, shutil, sys
found = {}
found["modules"] = [m for m in ("tensorflow", "keras", "tf2onnx", "pytest", "_pytest", "training",
                                "tests") if importlib.util.find_spec(m)]
found["compilers"] = [c for c in ("cc", "gcc", "g++", "c++", "clang", "make", "cmake", "ld", "as")
                      if shutil.which(c)]
test_code = []
for top in ("/app", "/opt/venv/lib/python3.11/site-packages/app"):
    for d, dirs, files in os.walk(top):
        test_code += [os.path.join(d, n) for n in dirs + files
                      if n in ("tests", "conftest.py") or n.startswith("test_")]
for d, dirs, files in os.walk("/opt/venv/lib/python3.11/site-packages"):
    test_code += [os.path.join(d, n) for n in dirs if n == "tests"]
found["test_code"] = test_code
found["app_top"] = sorted(os.listdir("/app"))
print(json.dumps(found))
"""


class Failed(Exception):
    """A check failed: the message says which and why."""


# Every image is built in Docker format (podman's OCI format drops HEALTHCHECK), with host
# networking for the package installs, from the local base.
PODMAN_BUILD = [
    "podman",
    "build",
    "--format",
    "docker",
    "--network",
    "host",
    "--build-arg",
    f"BASE_IMAGE={BASE_IMAGE}",
]


def say(msg: str) -> None:
    print(f"container-test: {msg}", flush=True)


def run(
    cmd: Sequence[str], *, check: bool = True, capture: bool = True, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            list(cmd), text=True, capture_output=capture, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise Failed(f"`{shlex.join(cmd)}` took over {timeout:.0f} s") from None
    if check and done.returncode != 0:
        out = ((done.stdout or "") + (done.stderr or "")).strip()[-4000:]
        raise Failed(f"`{shlex.join(cmd)}` exited {done.returncode}\n{out}")
    return done


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- build


def pip_build_args() -> list[str]:
    """The host's pip index settings that also work inside a build (http/https indexes, trusted
    hosts, a CA bundle: the local base carries this machine's added trust anchors)."""
    out: dict[str, str] = {}
    done = run([sys.executable, "-m", "pip", "config", "list"], check=False)
    config = {}
    for line in (done.stdout or "").splitlines():
        key, _, value = line.partition("=")
        config[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    for key in ("index-url", "extra-index-url", "trusted-host", "cert"):
        env = "PIP_" + key.upper().replace("-", "_")
        value = os.environ.get(env) or config.get(key, "")
        if key.endswith("index-url"):
            value = " ".join(u for u in value.split() if u.startswith(("http://", "https://")))
        if value and key == "cert":
            if not BASE_IMAGE.startswith("localhost/"):
                continue  # a registry base has its own store, not this host's
            value = "/etc/ssl/certs/ca-certificates.crt"  # where Debian's bundle lies in the base
        if value:
            out[env] = value
    return [a for k, v in sorted(out.items()) for a in ("--build-arg", f"{k}={v}")]


def build() -> None:
    if BASE_IMAGE.startswith("localhost/"):
        run(["bash", str(ROOT / "deploy" / "make-base-image.sh")], capture=False, timeout=1800)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    revision = run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=False).stdout.strip()
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain"], check=False).stdout.strip()
    created = run(["git", "-C", str(ROOT), "log", "-1", "--format=%cI"], check=False).stdout.strip()
    labels = {
        "version": project["version"],
        "revision": (revision or "unknown") + ("-dirty" if dirty else ""),
        "created": created or "unknown",
        "base.name": BASE_IMAGE,
    }
    common = [*PODMAN_BUILD, *pip_build_args()]
    for key, value in labels.items():
        # The Dockerfile's ARGs for these (what `docker build --build-arg` sets) and, because
        # podman 4.3's layer cache ignores build-arg values, the labels themselves too.
        arg = key.split(".")[0].upper().replace("BASE", "BASE_IMAGE")
        if arg != "BASE_IMAGE":
            common += ["--build-arg", f"{arg}={value}"]
        common += ["--label", f"org.opencontainers.image.{key}={value}"]
    for target, tag in (("runtime", RUNTIME), ("integration", INTEGRATION)):
        t0 = time.monotonic()
        say(f"building {tag} (target {target}, base {BASE_IMAGE})")
        cmd = [*common, "--target", target, "-t", tag, str(ROOT)]
        done = run(cmd, check=False, timeout=BUILD_WITHIN_S)
        if done.returncode != 0:
            log = (done.stdout + done.stderr).strip().splitlines()
            raise Failed(f"podman build of {target} failed:\n" + "\n".join(log[-60:]))
        say(f"built {tag} in {time.monotonic() - t0:.0f} s")
    # The Orthanc image: Debian's orthanc + orthanc-dicomweb and deploy/orthanc/ (its own
    # Dockerfile and context, as compose builds it), from the same base.
    t0 = time.monotonic()
    say(f"building {ORTHANC} (deploy/orthanc, base {BASE_IMAGE})")
    cmd = [*PODMAN_BUILD, "-t", ORTHANC, str(ROOT / "deploy" / "orthanc")]
    done = run(cmd, check=False, timeout=BUILD_WITHIN_S)
    if done.returncode != 0:
        log = (done.stdout + done.stderr).strip().splitlines()
        raise Failed("podman build of deploy/orthanc failed:\n" + "\n".join(log[-60:]))
    say(f"built {ORTHANC} in {time.monotonic() - t0:.0f} s")


# --------------------------------------------------------------------------- image checks


def check_image() -> None:
    info = json.loads(run(["podman", "image", "inspect", RUNTIME]).stdout)[0]
    size = int(info["Size"])
    say(f"{RUNTIME}: {size / 1e6:.0f} MB (limit {MAX_IMAGE_BYTES / 1e6:.0f} MB)")
    if size >= MAX_IMAGE_BYTES:
        raise Failed(f"the runtime image is {size} bytes, over {MAX_IMAGE_BYTES}")
    config = info.get("Config") or {}
    labels = config.get("Labels") or info.get("Labels") or {}
    missing = [k for k in LABELS if not labels.get(k) or labels[k] == "unknown"]
    if missing:
        raise Failed(f"labels not set on {RUNTIME}: {missing} (has {labels})")
    say("labels: " + ", ".join(f"{k.rsplit('.', 1)[-1]}={labels[k]}" for k in LABELS))
    health = info.get("Healthcheck") or config.get("Healthcheck") or {}
    if not health.get("Test"):
        raise Failed("no HEALTHCHECK in the image config (was it built with --format docker?)")
    if config.get("Entrypoint"):
        raise Failed(
            f"an ENTRYPOINT is in the way of `podman run IMAGE medserve ...`: "
            f"{config['Entrypoint']}"
        )
    if DATA_DIR not in (config.get("Volumes") or {}):
        raise Failed(f"{DATA_DIR} is not a VOLUME: {config.get('Volumes')}")
    env = dict(e.split("=", 1) for e in config.get("Env") or [])
    if env.get("MEDSERVE_DATA_DIR") != DATA_DIR:
        raise Failed(f"MEDSERVE_DATA_DIR is {env.get('MEDSERVE_DATA_DIR')!r}, not {DATA_DIR}")
    if config.get("User", "").split(":")[0] != UID:
        raise Failed(f"the image runs as {config.get('User')!r}, not {UID}")

    probe = run(
        [
            "podman",
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            RUNTIME,
            "python",
            "-c",
            IMAGE_PROBE,
        ]
    )
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    problems = {k: v for k, v in found.items() if k != "app_top" and v}
    if found["app_top"] != ["models"]:
        problems["app_top"] = found["app_top"]
    if problems:
        raise Failed(f"the runtime image holds what it must not: {problems}")
    which = run(
        [
            "podman",
            "run",
            "--rm",
            "--network",
            "none",
            RUNTIME,
            "sh",
            "-c",
            "command -v medserve && stat -c '%u:%g %a' " + DATA_DIR,
        ]
    ).stdout.split()
    if which[1] != f"{UID}:{UID}":
        raise Failed(f"{DATA_DIR} is owned by {which[1]}, not {UID}:{UID}")
    say(
        f"image: no TensorFlow, no pytest, no compiler, no test code; medserve at {which[0]}; "
        f"{DATA_DIR} {which[1]} mode {which[2]}"
    )


# --------------------------------------------------------------------------- containers


class Run:
    """The containers and volumes this run started, removed at the end."""

    def __init__(self) -> None:
        self.tag = f"medserve-ct-{os.getpid()}"
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def volume(self, suffix: str) -> str:
        name = f"{self.tag}-{suffix}"
        run(["podman", "volume", "create", name])
        self.volumes.append(name)
        return name

    def start(self, suffix: str, options: Sequence[str], env: dict[str, str]) -> str:
        name = f"{self.tag}-{suffix}"
        envs = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        self.containers.append(name)
        run(["podman", "run", "-d", "--name", name, "--network", "host", *options, *envs, RUNTIME])
        return name

    def cleanup(self) -> None:
        for name in reversed(self.containers):
            run(["podman", "rm", "-f", "-t", "5", "-v", name], check=False)
        for name in self.volumes:
            run(["podman", "volume", "rm", "-f", name], check=False)


def logs(name: str, lines: int = 60) -> str:
    done = run(["podman", "logs", "--tail", str(lines), name], check=False)
    return (done.stdout + done.stderr).strip() or "(no output)"


def wait_healthy(name: str) -> float:
    """Seconds until ``podman healthcheck run`` passed (the image's own HEALTHCHECK)."""
    t0 = time.monotonic()
    while True:
        state = run(
            ["podman", "inspect", "--format", "{{.State.Status}}", name], check=False
        ).stdout.strip()
        if state not in ("running", "created", "configured"):
            raise Failed(f"{name} is {state or 'gone'} before it was healthy:\n{logs(name)}")
        if run(["podman", "healthcheck", "run", name], check=False).returncode == 0:
            return time.monotonic() - t0
        if time.monotonic() - t0 > HEALTHY_WITHIN_S:
            raise Failed(f"{name} not healthy after {HEALTHY_WITHIN_S:.0f} s:\n{logs(name)}")
        time.sleep(1.0)


def hardened(data_volume: str | None) -> list[str]:
    """docker-compose.yml's options for `api` (mem_limit 4g, cpus 2, pids_limit 256)."""
    opts = [
        "--read-only",
        "--tmpfs",
        "/tmp:rw,noexec,nosuid,nodev,size=64m",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        f"{UID}:{UID}",
        "--memory",
        "4g",
        "--cpus",
        "2",
        "--pids-limit",
        "256",
    ]
    if data_volume:
        opts += ["-v", f"{data_volume}:{DATA_DIR}"]
    return opts


def integration(port: int, key: str, pytest_args: Sequence[str]) -> float:
    t0 = time.monotonic()
    cmd = [
        "podman",
        "run",
        "--rm",
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,noexec,nosuid,nodev,size=64m",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--memory",
        "1g",
        "-e",
        f"MEDSERVE_URL=http://127.0.0.1:{port}",
        "-e",
        f"MEDSERVE_TEST_API_KEY={key}",
        "-e",
        f"MEDSERVE_TEST_MAX_UPLOAD_BYTES={MAX_UPLOAD}",
        "-e",
        "MEDSERVE_TEST_SERVER_WORKERS=1",
        INTEGRATION,
        "python",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "tests/integration",
        *pytest_args,
    ]
    try:
        done = subprocess.run(cmd, check=False, timeout=SUITE_WITHIN_S)
    except subprocess.TimeoutExpired:
        raise Failed(f"tests/integration took over {SUITE_WITHIN_S:.0f} s") from None
    if done.returncode != 0:
        raise Failed(
            f"tests/integration failed against the container (pytest exit "
            f"{done.returncode}; its output is above)"
        )
    return time.monotonic() - t0


def service_env(port: int, key: str) -> dict[str, str]:
    return {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MEDSERVE_API_KEYS": key,
        "MEDSERVE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
    }


def check_compose_way(r: Run) -> None:
    port, key = free_port(), secrets.token_urlsafe(32)
    name = r.start("api", hardened(r.volume("data")), service_env(port, key))
    say(f"{name}: compose's options on 127.0.0.1:{port}; waiting for HEALTHCHECK")
    say(f"healthy after {wait_healthy(name):.1f} s")
    extra = shlex.split(os.environ.get("CONTAINER_TEST_PYTEST_ARGS", "-q"))
    say(f"tests/integration passed in {integration(port, key, extra):.0f} s")
    uid = run(["podman", "exec", name, "python", "-c", DATA_PROBE]).stdout.strip()
    if uid != UID:
        raise Failed(f"the service runs as uid {uid}, not {UID}")
    wait_healthy(name)  # still healthy after the whole suite
    say(f"{name}: still healthy after the suite; uid {uid} writes the data volume")


def check_bare(r: Run) -> None:
    port = free_port()
    name = r.start(
        "bare", ["--read-only", "--tmpfs", "/tmp"], {"PORT": str(port), "HOST": "127.0.0.1"}
    )
    say(f"{name}: only --read-only --tmpfs /tmp, nothing mounted")
    say(f"healthy after {wait_healthy(name):.1f} s")
    uid = run(["podman", "exec", name, "python", "-c", DATA_PROBE]).stdout.strip()
    if uid != UID:
        raise Failed(f"the image's default user is uid {uid}, not {UID}")
    say(f"{name}: serves, and {DATA_DIR} (an anonymous volume) is writable by uid {uid}")
    run(["podman", "rm", "-f", "-t", "5", "-v", name], check=False)


def check_writes(r: Run) -> None:
    port, key = free_port(), secrets.token_urlsafe(32)
    opts = [o for o in hardened(r.volume("data-w")) if o != "--read-only"]
    name = r.start("writes", opts, service_env(port, key))
    say(f"{name}: writable root, to see what the service writes (podman diff)")
    wait_healthy(name)
    integration(port, key, ["-q", "-x"])
    changes = run(["podman", "diff", "--format", "json", name]).stdout
    parsed = json.loads(changes or "{}")
    paths = sorted({p for kind in ("changed", "added", "deleted") for p in parsed.get(kind) or []})
    outside = [
        p for p in paths if p not in PODMAN_OWN and not p.startswith(("/tmp/", DATA_DIR + "/"))
    ]
    if outside:
        raise Failed(f"the service wrote outside /tmp and {DATA_DIR}: {outside}")
    say(f"{name}: podman diff shows nothing outside /tmp and {DATA_DIR} ({paths})")


# --------------------------------------------------------------------------- PACS profile


def podman_compose() -> Path:
    """podman-compose in a venv under CACHE (made once, kept between runs)."""
    venv = CACHE / "podman-compose-venv"
    binary = venv / "bin" / "podman-compose"
    stamp = venv / ".installed"
    if not (binary.exists() and stamp.exists() and stamp.read_text() == " ".join(PODMAN_COMPOSE)):
        say(f"installing {' '.join(PODMAN_COMPOSE)} into {venv}")
        run([sys.executable, "-m", "venv", "--clear", str(venv)], timeout=300)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        run([*pip, "--disable-pip-version-check", *PODMAN_COMPOSE], timeout=600)
        stamp.write_text(" ".join(PODMAN_COMPOSE))
    return binary


def orthanc_config(http_port: int, dicom_port: int) -> str:
    """deploy/orthanc/container.json with this run's loopback ports, and remote access off
    (host networking: every client is on loopback; authentication stays on)."""
    text = (ROOT / "deploy" / "orthanc" / "container.json").read_text()
    for key, value in (
        ("HttpPort", str(http_port)),
        ("DicomPort", str(dicom_port)),
        ("RemoteAccessAllowed", "false"),
    ):
        text, n = re.subn(rf'("{key}"\s*:\s*)[^,\s]+', rf"\g<1>{value}", text)
        if n != 1:
            raise Failed(f"deploy/orthanc/container.json: no single {key} to set")
    return text


def _yaml(value: object) -> str:
    return json.dumps(value)  # JSON scalars and flow lists are YAML


def compose_override(api: int, http: int, orthanc_config_path: Path) -> str:
    """What differs on this machine from docker-compose.yml: host networking on loopback ports
    instead of the project network and published ports (``!reset`` drops those)."""
    suite = ["python", "-m", "pytest", "-p", "no:cacheprovider", "tests/integration", "-q"]
    return "\n".join(
        [
            "services:",
            "  api:",
            "    network_mode: host",
            "    ports: !reset []",
            "    environment:",
            "      HOST: 127.0.0.1",
            f"      PORT: {_yaml(str(api))}",
            "  orthanc:",
            "    network_mode: host",
            "    ports: !reset []",
            "    environment:",
            f"      MEDSERVE_URL: {_yaml(f'http://127.0.0.1:{api}')}",
            "    volumes:",
            f"      - {_yaml(f'{orthanc_config_path}:/etc/orthanc/container.json:ro')}",
            "  integration:",
            "    network_mode: host",
            "    environment:",
            f"      MEDSERVE_URL: {_yaml(f'http://127.0.0.1:{api}')}",
            f"    command: {_yaml(suite)}",
            "",
        ]
    )


class ComposeRun:
    """One podman-compose project (docker-compose.yml + this machine's override)."""

    def __init__(self, binary: Path, folder: Path, env_file: Path, override: Path) -> None:
        self.project = f"medserve-ct-{os.getpid()}"
        self.base = [
            str(binary),
            "-p",
            self.project,
            "--env-file",
            str(env_file),
            "-f",
            str(COMPOSE_FILE),
            "-f",
            str(override),
            "--profile",
            "pacs",
            "--profile",
            "test",
        ]
        # Nothing of the caller's environment may leak into the file's ${...}.
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MEDSERVE_", "ORTHANC_", "COMPOSE_"))
        }
        self.folder = folder

    def __call__(
        self, *args: str, timeout: float = 300.0, capture: bool = True, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [*self.base, *args]
        try:
            done = subprocess.run(
                cmd,
                cwd=self.folder,
                env=self.env,
                text=True,
                capture_output=capture,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise Failed(f"`podman-compose {' '.join(args)}` took over {timeout:.0f} s") from None
        if check and done.returncode != 0:
            out = ((done.stdout or "") + (done.stderr or "")).strip()[-4000:]
            raise Failed(f"`podman-compose {' '.join(args)}` exited {done.returncode}\n{out}")
        return done

    def container(self, service: str) -> str:
        names = run(
            [
                "podman",
                "ps",
                "-a",
                "--filter",
                f"label=io.podman.compose.project={self.project}",
                "--filter",
                f"label=io.podman.compose.service={service}",
                "--format",
                "{{.Names}}",
            ]
        ).stdout.split()
        if len(names) != 1:
            raise Failed(f"podman-compose started {names or 'no container'} for {service}")
        return names[0]

    def containers(self) -> list[str]:
        label = f"label=io.podman.compose.project={self.project}"
        done = run(["podman", "ps", "-a", "--filter", label, "--format", "{{.Names}}"], check=False)
        return done.stdout.split()

    def cleanup(self) -> None:
        self("down", "-v", "-t", "5", check=False, timeout=180)
        label = f"label=io.podman.compose.project={self.project}"
        for name in self.containers():  # whatever `down` left
            run(["podman", "rm", "-f", "-t", "5", "-v", name], check=False)
        done = run(["podman", "volume", "ls", "-q", "--filter", label], check=False)
        for volume in done.stdout.split():
            run(["podman", "volume", "rm", "-f", volume], check=False)
        done = run(["podman", "network", "ls", "-q", "--filter", label], check=False)
        for network in done.stdout.split():
            run(["podman", "network", "rm", "-f", network], check=False)


def qido_results(http: int, password: str) -> dict[str, int]:
    """Modality → number of medserve's series in the containerised Orthanc (from the host)."""
    auth = base64.b64encode(f"medserve:{password}".encode()).decode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    counts: dict[str, int] = {}
    for modality in ("SEG", "SR"):
        req = urllib.request.Request(
            f"http://127.0.0.1:{http}/dicom-web/series?Modality={modality}"
            "&includefield=Manufacturer",
            headers={"Accept": "application/dicom+json", "Authorization": f"Basic {auth}"},
        )
        with opener.open(req, timeout=10) as r:
            body = r.read()
        found = json.loads(body) if body else []
        counts[modality] = sum(
            1
            for s in found
            if str((s.get("00080070", {}).get("Value") or [""])[0]).lower() == "medserve"
        )
    return counts


def check_pacs_profile(folder: Path) -> None:
    binary = podman_compose()
    api, http, dicom = free_port(), free_port(), free_port()
    key, trigger_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    password = secrets.token_urlsafe(24)
    config = folder / "container.json"
    config.write_text(orthanc_config(http, dicom))
    config.chmod(0o644)
    env_file = folder / "env"
    env_file.write_text(
        "\n".join(
            [
                f"MEDSERVE_API_KEYS={key},orthanc:{trigger_key}",
                f"MEDSERVE_TEST_API_KEY={key}",
                f"MEDSERVE_MAX_UPLOAD_BYTES={MAX_UPLOAD}",
                f"MEDSERVE_DICOMWEB_URL=http://127.0.0.1:{http}/dicom-web",
                f"ORTHANC_MEDSERVE_PASSWORD={password}",
                f"MEDSERVE_ORTHANC_API_KEY={trigger_key}",
                f"MEDSERVE_TEST_ORTHANC_URL=http://127.0.0.1:{http}",
                f"MEDSERVE_TEST_ORTHANC_DICOM=127.0.0.1:{dicom}",
                "",
            ]
        )
    )
    override = folder / "host-network.override.yml"
    override.write_text(compose_override(api, http, config))
    compose = ComposeRun(binary, folder, env_file, override)
    try:
        say(
            f"podman-compose -p {compose.project}: orthanc (HTTP 127.0.0.1:{http}, DICOM "
            f"{dicom}) and api (127.0.0.1:{api}), docker-compose.yml + a host-network override"
        )
        compose("up", "-d", "--no-build", "orthanc", "api", timeout=300)
        for service in ("orthanc", "api"):
            name = compose.container(service)
            say(f"{name} healthy after {wait_healthy(name):.1f} s")
        orthanc = compose.container("orthanc")
        user = run(["podman", "exec", orthanc, "id", "-un"]).stdout.strip()
        info = json.loads(run(["podman", "inspect", orthanc]).stdout)[0]
        if user != "orthanc" or not info["HostConfig"].get("ReadonlyRootfs"):
            raise Failed(
                f"{orthanc} runs as {user!r}, read-only {info['HostConfig'].get('ReadonlyRootfs')}"
            )
        say(f"{orthanc}: user orthanc, read-only root, storage on the volume")
        t0 = time.monotonic()
        done = compose(
            "run",
            "--rm",
            "--no-deps",
            "integration",
            capture=False,
            check=False,
            timeout=SUITE_WITHIN_S,
        )
        if done.returncode != 0:
            raise Failed(
                f"tests/integration (with test_pacs.py) failed in the compose run (exit "
                f"{done.returncode}; its output is above)"
            )
        say(f"tests/integration with the PACS passed in {time.monotonic() - t0:.0f} s")
        counts = qido_results(http, password)
        if counts["SEG"] < 1 or counts["SR"] < 1:
            raise Failed(f"Orthanc holds {counts} medserve series, not a SEG and an SR")
        say(f"QIDO from the host: medserve's series in Orthanc: {counts}")
    except Failed:
        for name in compose.containers():
            say(f"log of {name}:\n{logs(name)}")
        raise
    finally:
        compose.cleanup()


@contextmanager
def timed(what: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    say(f"{what}: {time.monotonic() - t0:.0f} s")


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(f"container-test: stopped by signal {signum}")  # cleanup still runs


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    for tool in ("podman", "runc"):
        if run(["sh", "-c", f"command -v {tool}"], check=False).returncode != 0:
            say(f"FAILED: {tool} is not installed (apt-get install -y podman runc debootstrap)")
            return 1
    t0 = time.monotonic()
    r = Run()
    try:
        podman_settings.main(["podman_settings"])
        with timed("build"):
            build()
        check_image()
        with timed("compose-like run + tests/integration"):
            check_compose_way(r)
        check_bare(r)
        with timed("write check"):
            check_writes(r)
        with (
            timed("PACS profile (podman-compose: orthanc + api + integration)"),
            tempfile.TemporaryDirectory(prefix="medserve-ct-") as folder,
        ):
            check_pacs_profile(Path(folder))
    except Failed as exc:
        say(f"FAILED: {exc}")
        for name in r.containers:
            if run(["podman", "container", "exists", name], check=False).returncode == 0:
                say(f"log of {name}:\n{logs(name)}")
        return 1
    finally:
        r.cleanup()
    say(f"passed in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
