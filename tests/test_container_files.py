"""The container files: Dockerfile, .dockerignore, docker-compose.yml, .env.example.

No Docker engine is needed: the Dockerfile is parsed as text (stages and instructions), the
compose file with PyYAML, and where a Compose CLI is on PATH it must accept the file
(``config`` needs no engine).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PODMAN_SETTINGS = ROOT / "deploy" / "podman_settings.py"

HEAVY = re.compile(r"tensorflow|keras|\btf2onnx\b|\[(?:[^\]]*,)?\s*train\s*[,\]]|\['train'\]")
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake)\b")


# --------------------------------------------------------------------------- Dockerfile parsing


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]

    @property
    def text(self) -> str:
        return "\n".join(f"{k} {a}" for k, a in self.instructions)


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions (continuations joined, comments dropped) grouped by ``FROM``."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comment lines may sit inside a continuation too
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)

    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = args.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif keyword == "ARG" and not stages:
            continue  # global build arguments before the first FROM
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1].instructions.append((keyword, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def _stage(stages: list[Stage], name: str) -> Stage:
    found = [s for s in stages if s.name == name]
    assert found, f"no stage named {name!r}: {[s.name for s in stages]}"
    return found[0]


def global_args(text: str) -> dict[str, str | None]:
    """The ``ARG name[=default]`` lines before the first ``FROM``."""
    out: dict[str, str | None] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.upper().startswith("FROM "):
            break
        if line.upper().startswith("ARG "):
            name, eq, default = line[4:].strip().partition("=")
            out[name] = default.strip("\"'") if eq else None
    return out


def test_dockerfile_is_multi_stage(stages: list[Stage], final: Stage) -> None:
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    assert all(s.name for s in stages), "every stage is named"
    copied = [a for a in final.args("COPY") if a.startswith("--from=")]
    sources = {re.match(r"--from=(\S+)", a)[1] for a in copied}  # type: ignore[index]
    assert sources, "the runtime stage copies from a builder stage"
    assert not any(re.match(r"(--\S+\s+)*\.\s", a) for a in final.args("COPY")), (
        "the runtime stage must not COPY the whole context"
    )


def test_every_stage_builds_from_the_base_image_argument(stages: list[Stage]) -> None:
    """One Dockerfile for Docker Hub's python:3.11-slim-bookworm (the default) and the local
    Debian base of deploy/make-base-image.sh (--build-arg BASE_IMAGE=...)."""
    assert global_args(DOCKERFILE.read_text()).get("BASE_IMAGE") == "python:3.11-slim-bookworm"
    for stage in stages:
        assert stage.base in ("${BASE_IMAGE}", "$BASE_IMAGE"), (stage.name, stage.base)


def test_runs_call_python3_11_or_a_venv(stages: list[Stage]) -> None:
    """Debian's base has ``python3.11`` but no ``python``/``pip`` commands; both bases have
    ``python3.11``, and installs go into a venv (Debian's Python is externally managed)."""
    bare = re.compile(r"(?:^|&&|;|\|\|)\s*(?:python3?|pip3?)\s")
    for stage in stages:
        for run in stage.args("RUN"):
            assert not bare.search(run), f"{stage.name}: {run[:120]}"


def test_builder_installs_only_the_serve_extra(stages: list[Stage], final: Stage) -> None:
    sources = {
        re.match(r"--from=(\S+)", a)[1]  # type: ignore[index]
        for a in final.args("COPY")
        if a.startswith("--from=")
    }
    builders = [s for s in stages if s.name in sources]
    assert builders
    installs = " ".join(" ".join(b.args("RUN")) for b in builders)
    assert "pip install" in installs
    assert "serve" in installs, "the builder installs the serve extra"
    for stage in builders:
        assert not HEAVY.search(stage.text), f"stage {stage.name} installs training deps"
        assert "'dev'" not in stage.text and "[dev" not in stage.text


def test_no_stage_installs_tensorflow(stages: list[Stage]) -> None:
    for stage in stages:
        assert not HEAVY.search(stage.text), f"stage {stage.name} pulls training dependencies"


def test_runtime_stage_has_no_compilers_and_no_pip_installs(final: Stage) -> None:
    for run in final.args("RUN"):
        assert not COMPILERS.search(run), run
        assert "pip install" not in run and "apt-get install" not in run, run


def test_runtime_runs_as_a_fixed_non_root_user(final: Stage) -> None:
    users = final.args("USER")
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users
    assert user.isdigit() and int(user) >= 1000, "a fixed numeric uid (for volume permissions)"


def test_runtime_healthcheck_readiness_without_curl(final: Stage) -> None:
    checks = final.args("HEALTHCHECK")
    assert len(checks) == 1, checks
    assert "/health/ready" in checks[0] and "urllib" in checks[0], checks[0]
    assert "curl" not in checks[0] and "wget" not in checks[0], checks[0]


def _env_settings(stage: Stage) -> dict[str, str]:
    out = {}
    for args in stage.args("ENV"):
        for name, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', args):
            out[name] = value.strip('"')
    return out


def test_healthcheck_reads_the_port_from_the_environment(final: Stage) -> None:
    """`medserve serve` listens on $PORT (its CLI's default); the check asks the same port."""
    check = final.args("HEALTHCHECK")[0]
    assert "os.environ" in check and "'PORT'" in check, check
    assert ":8000/" not in check, "the port is not hard-coded"
    assert _env_settings(final).get("PORT") == "8000"


def test_runtime_exposes_8000_and_serves_on_all_interfaces(final: Stage) -> None:
    assert any("8000" in a.split() for a in final.args("EXPOSE")), final.args("EXPOSE")
    env = _env_settings(final)
    assert env.get("HOST") == "0.0.0.0" and env.get("PORT") == "8000", env
    assert not final.args("ENTRYPOINT"), "no ENTRYPOINT in the way of `run IMAGE medserve ...`"
    cmd = json.loads(final.args("CMD")[-1])
    assert cmd[:2] == ["medserve", "serve"], cmd
    assert "--port" not in cmd and "--host" not in cmd, "HOST/PORT come from the environment"


def test_runtime_data_folder_is_a_volume_of_the_service_user(final: Stage) -> None:
    data_dir = _env_settings(final).get("MEDSERVE_DATA_DIR")
    assert data_dir and data_dir.startswith("/"), "MEDSERVE_DATA_DIR points at the data folder"
    volumes = " ".join(final.args("VOLUME"))
    assert data_dir in volumes, (data_dir, volumes)
    user = final.args("USER")[-1].split(":")[0]
    assert any(
        data_dir in run and (f"-o {user}" in run or f"chown {user}" in run)
        for run in final.args("RUN")
    ), f"{data_dir} is created owned by {user}"


def test_runtime_environment(final: Stage) -> None:
    env = " ".join(final.args("ENV"))
    for setting in (
        "PYTHONDONTWRITEBYTECODE=1",
        "ORT_DISABLE_TELEMETRY=1",
        "OPENBLAS_NUM_THREADS=1",
        "MEDSERVE_MODEL_DIR=",
        "MEDSERVE_WORKERS=",
        "MEDSERVE_ORT_INTRA_OP_THREADS=",
    ):
        assert setting in env, f"{setting} missing from the runtime ENV"
    assert any("models" in a for a in final.args("COPY")), "the demo models are baked in"
    labels = " ".join(final.args("LABEL"))
    for label in ("org.opencontainers.image.title", "org.opencontainers.image.version"):
        assert label in labels, label


def test_integration_stage_runs_the_suite_without_tensorflow(stages: list[Stage]) -> None:
    stage = _stage(stages, "integration")
    cmd = " ".join(stage.args("CMD") + stage.args("ENTRYPOINT"))
    assert "pytest" in cmd and "tests/integration" in cmd, cmd
    assert not HEAVY.search(stage.text)
    users = stage.args("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), users


def test_exec_forms_are_valid_json(stages: list[Stage]) -> None:
    """A malformed JSON array silently becomes a shell-form command (PID 1 = /bin/sh, no
    SIGTERM to the service): every exec form must parse."""
    for stage in stages:
        for keyword, args in stage.instructions:
            if keyword == "HEALTHCHECK":
                args = args.split(" CMD ", 1)[1].strip()
            if keyword in ("CMD", "ENTRYPOINT", "HEALTHCHECK"):
                assert args.startswith("["), f"{stage.name}: {keyword} in shell form"
                value = json.loads(args)
                assert isinstance(value, list) and all(isinstance(v, str) for v in value)


# --------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, lines: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = _pattern_regex(pattern)
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        "data/chest_xray/train/a.png",
        "runs/2024-01-01/log.txt",
        "outputs/plot.png",
        "models/pneumonia_xray/1.0.0/saved_model/saved_model.pb",
        "app/__pycache__/main.cpython-311.pyc",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/app.json",
        ".ruff_cache/0.1/x",
        "medserve.egg-info/PKG-INFO",
        "tests/data/golden_rle.json",
        "tests/app/test_http_basics.py",
        "training/train.py",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert dockerignored(path, DOCKERIGNORE.read_text().splitlines()), path


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "app/main.py",
        "app/imaging/readers/dicom.py",
        "models/pneumonia_xray/1.0.0/model.onnx",
        "models/pneumonia_xray/1.0.0/model_card.json",
        "tests/__init__.py",
        "tests/integration/conftest.py",
    ],
)
def test_dockerignore_lets_in(path: str) -> None:
    assert not dockerignored(path, DOCKERIGNORE.read_text().splitlines()), path


# --------------------------------------------------------------------------- docker-compose.yml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (add it to the dev extra)")
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_compose_api_service_is_hardened(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["read_only"] is True
    assert any(str(t).split(":")[0] == "/tmp" for t in api["tmpfs"]), api["tmpfs"]
    assert [c.upper() for c in api["cap_drop"]] == ["ALL"], api["cap_drop"]
    assert any(
        str(o).replace(" ", "") in ("no-new-privileges:true", "no-new-privileges")
        for o in api["security_opt"]
    ), api["security_opt"]
    assert not api.get("privileged"), "never privileged"
    limits = api.get("deploy", {}).get("resources", {}).get("limits", {})
    assert api.get("mem_limit") or limits.get("memory"), "a memory limit"
    assert api["restart"] in ("unless-stopped", "always", "on-failure"), api["restart"]


def test_compose_api_writes_only_tmp_and_the_data_volume(
    compose: dict[str, Any], final: Stage
) -> None:
    api = compose["services"]["api"]
    data_dir = _env_settings(final)["MEDSERVE_DATA_DIR"]
    assert _env(api).get("MEDSERVE_DATA_DIR", data_dir) == data_dir
    mounts = [str(v) for v in api.get("volumes", [])]
    writable = [m for m in mounts if not m.endswith(":ro")]
    assert [m.split(":")[1] for m in writable] == [data_dir], mounts
    named = writable[0].split(":")[0]
    assert named in (compose.get("volumes") or {}), f"{named} is a named volume"


def test_compose_api_service_build_ports_health(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    build = api["build"]
    context = build if isinstance(build, str) else build["context"]
    assert context in (".", "./"), build
    ports = [str(p) for p in api["ports"]]
    assert ports and all(p.endswith(":8000") for p in ports), ports
    assert all("127.0.0.1" in p for p in ports), "published on loopback unless told otherwise"
    test = api["healthcheck"]["test"]
    assert "/health/ready" in (test if isinstance(test, str) else " ".join(test)), test


def test_compose_api_key_comes_from_the_environment(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    keys = _env(api).get("MEDSERVE_API_KEYS", "")
    env_files = api.get("env_file", [])
    env_files = [env_files] if isinstance(env_files, str) else env_files
    assert keys.startswith("${MEDSERVE_API_KEYS") or ".env" in [str(f) for f in env_files], (
        "MEDSERVE_API_KEYS must come from .env / the environment, never be written in the file"
    )


def test_compose_integration_profile(compose: dict[str, Any], stages: list[Stage]) -> None:
    integration = compose["services"]["integration"]
    assert "test" in integration["profiles"]
    assert integration["depends_on"]["api"]["condition"] == "service_healthy"
    env = _env(integration)
    assert env["MEDSERVE_URL"] == "http://api:8000"
    assert "MEDSERVE_API_KEYS" in env or "MEDSERVE_TEST_API_KEY" in env
    build = integration["build"]
    assert isinstance(build, dict) and build["target"] in {s.name for s in stages}, build
    assert compose["services"]["api"]["build"]["target"] == stages[-1].name


def test_env_example_has_a_placeholder_key() -> None:
    values = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    keys = [k for k in values["MEDSERVE_API_KEYS"].split(",") if k]
    assert keys and all(len(k) >= 16 for k in keys), "keys of at least 16 characters"
    assert "secrets.token_urlsafe" in ENV_EXAMPLE.read_text()


# --------------------------------------------------------------------------- Compose CLI


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        done = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if done.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="module")
def compose_cli() -> list[str]:
    cli = _compose_cli()
    if cli is None:  # skip here, fail under CI (.ci/run installs Debian's docker-compose)
        return [require_tool("docker-compose", "docker-compose")]
    return cli


def _config(cli: list[str], env_file: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDSERVE_", "COMPOSE_"))}
    cmd = [*cli, "--env-file", str(env_file), "-f", str(COMPOSE), "--profile", "test", "config"]
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_compose_cli_accepts_the_file(compose_cli: list[str], tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    done = _config(compose_cli, env_file)
    assert done.returncode == 0, done.stderr
    assert "integration" in done.stdout and "read_only: true" in done.stdout, done.stdout


def test_compose_refuses_to_start_without_api_keys(compose_cli: list[str], tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# no keys\n")
    done = _config(compose_cli, env_file)
    assert done.returncode != 0
    assert "MEDSERVE_API_KEYS" in done.stderr + done.stdout


# --------------------------------------------------------------------------- podman settings


def _podman_settings() -> Any:
    spec = importlib.util.spec_from_file_location("podman_settings", PODMAN_SETTINGS)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_podman_settings_are_added_once_and_keep_the_rest() -> None:
    settings = _podman_settings()
    before = (
        '# site settings\n[containers]\nlog_driver = "k8s-file"\ndefault_ulimits = [\n'
        ']\n\n[network]\nnetwork_backend = "cni"\n\n[engine]\nruntime = "crun"\n'
        'runtime = "crun"\n'
    )
    after = settings.apply(before)
    assert settings.apply(after) == after, "idempotent"
    tomllib = pytest.importorskip("tomllib")
    parsed = tomllib.loads(after)
    assert parsed["containers"] == {"log_driver": "k8s-file", "default_ulimits": []}, after
    assert parsed["engine"] == {"runtime": "runc"}
    assert parsed["network"] == {"network_backend": "cni"}
    assert after.startswith("# site settings\n")
    fresh = tomllib.loads(settings.apply(""))
    assert fresh == {"containers": {"default_ulimits": []}, "engine": {"runtime": "runc"}}


def test_ci_runs_make_test_first_then_the_container_run() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "make test" in lines and "make container-test" in lines, lines
    assert lines.index("make test") < lines.index("make container-test")
    assert "container-test:" in (ROOT / "Makefile").read_text()


# --------------------------------------------------------------------------- PACS profile

ORTHANC_DOCKERFILE = ROOT / "deploy" / "orthanc" / "Dockerfile"


def test_compose_orthanc_service_is_the_pacs_profile(compose: dict[str, Any]) -> None:
    """Orthanc only with `--profile pacs`, built from deploy/orthanc/ (no third-party image),
    the build's BASE_IMAGE passed through with the Dockerfile's own default."""
    orthanc = compose["services"]["orthanc"]
    assert orthanc["profiles"] == ["pacs"], "api must keep working without Orthanc"
    build = orthanc["build"]
    assert str(build["context"]).rstrip("/") in ("deploy/orthanc", "./deploy/orthanc"), build
    default = global_args(ORTHANC_DOCKERFILE.read_text()).get("BASE_IMAGE")
    assert default == "debian:bookworm-slim"
    arg = str(build["args"]["BASE_IMAGE"])
    assert arg.startswith("${") and arg.endswith(f":-{default}}}"), arg
    assert "orthanc" in orthanc["image"] and "/" not in orthanc["image"].split(":")[0], (
        "a local tag, never pulled from a registry"
    )
    assert "pacs" not in compose["services"]["api"].get("profiles", []), "api is in every profile"


def test_compose_orthanc_storage_is_a_named_volume(compose: dict[str, Any]) -> None:
    orthanc = compose["services"]["orthanc"]
    mounts = [str(v) for v in orthanc["volumes"]]
    storage = [m for m in mounts if m.split(":")[1] == "/var/lib/orthanc/db"]
    assert storage, mounts
    assert storage[0].split(":")[0] in (compose.get("volumes") or {}), "a named volume"
    assert "/var/lib/orthanc/db" in ORTHANC_DOCKERFILE.read_text(), "the image's VOLUME"


def test_compose_orthanc_is_unprivileged_and_wired_to_api(compose: dict[str, Any]) -> None:
    orthanc = compose["services"]["orthanc"]
    assert [c.upper() for c in orthanc["cap_drop"]] == ["ALL"]
    assert not orthanc.get("privileged")
    assert orthanc.get("read_only") is True
    assert orthanc.get("mem_limit"), "a memory limit"
    env = _env(orthanc)
    assert env["MEDSERVE_URL"] == "http://api:8000"
    assert env["ORTHANC_MEDSERVE_PASSWORD"].startswith("${ORTHANC_MEDSERVE_PASSWORD")
    assert env["MEDSERVE_API_KEY"].startswith("${"), "the trigger's key comes from .env"
    ports = [str(p) for p in orthanc.get("ports", [])]
    assert all(p.startswith("${ORTHANC_") and "127.0.0.1" in p for p in ports), (
        "published on loopback unless told otherwise"
    )
    test = orthanc["healthcheck"]["test"]
    assert "$" not in " ".join(test if isinstance(test, list) else [test]), (
        "podman-compose keeps $$ as it is: the health check is a script in the image"
    )


def test_compose_api_dicomweb_settings_come_from_the_environment(compose: dict[str, Any]) -> None:
    """Without the PACS block of .env the URL is empty (study endpoints answer 503); with it,
    api logs into Orthanc as medserve with the password the orthanc service gets."""
    env = _env(compose["services"]["api"])
    assert env["MEDSERVE_DICOMWEB_URL"] == "${MEDSERVE_DICOMWEB_URL:-}"
    assert env["MEDSERVE_DICOMWEB_USERNAME"].endswith(":-medserve}")
    assert env["MEDSERVE_DICOMWEB_PASSWORD"].startswith("${ORTHANC_MEDSERVE_PASSWORD")
    integration = _env(compose["services"]["integration"])
    assert integration["MEDSERVE_TEST_ORTHANC_URL"] == "${MEDSERVE_TEST_ORTHANC_URL:-}", (
        "the PACS test stores a study: only when asked to"
    )
    assert integration["MEDSERVE_TEST_ORTHANC_PASSWORD"].startswith("${ORTHANC_MEDSERVE_PASSWORD")


def test_env_example_documents_the_pacs_block() -> None:
    text = ENV_EXAMPLE.read_text()
    for name in (
        "COMPOSE_PROFILES=pacs",
        "MEDSERVE_DICOMWEB_URL=http://orthanc:8042/dicom-web",
        "ORTHANC_MEDSERVE_PASSWORD=",
        "MEDSERVE_ORTHANC_API_KEY=",
        "MEDSERVE_TEST_ORTHANC_URL=http://orthanc:8042",
    ):
        assert name in text, name
    active = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert not any(ln.startswith(("COMPOSE_PROFILES", "MEDSERVE_DICOMWEB_URL")) for ln in active), (
        "without the PACS by default"
    )


def test_integration_image_has_storescu_and_the_pacs_test(stages: list[Stage]) -> None:
    stage = _stage(stages, "integration")
    assert any("apt-get install" in r and "dcmtk" in r for r in stage.args("RUN")), stage.text
    assert (ROOT / "tests" / "integration" / "test_pacs.py").is_file()
    assert not stage.args("ENTRYPOINT")


def test_compose_cli_accepts_the_pacs_profile(compose_cli: list[str], tmp_path: Path) -> None:
    """The whole file with both profiles, the PACS block of .env.example switched on."""
    env_file = tmp_path / "env"
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        for name in ("COMPOSE_PROFILES=", "MEDSERVE_DICOMWEB_URL=", "MEDSERVE_TEST_ORTHANC_URL="):
            if line.startswith(f"# {name}"):
                line = line[2:]
        lines.append(line)
    lines.append("ORTHANC_MEDSERVE_PASSWORD=a-test-password-0123456789")
    env_file.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDSERVE_", "COMPOSE_"))}
    cmd = [*compose_cli, "--env-file", str(env_file), "-f", str(COMPOSE), "--profile", "pacs"]
    done = subprocess.run(
        [*cmd, "--profile", "test", "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "medserve-orthanc" in done.stdout and "http://orthanc:8042/dicom-web" in done.stdout


def test_container_test_drives_the_pacs_profile_with_compose() -> None:
    text = (ROOT / "deploy" / "container_test.py").read_text()
    assert "localhost/medserve-orthanc:latest" in text
    assert "podman-compose==" in text, "a pinned podman-compose"
    assert '"down", "-v"' in text, "the compose project is removed with its volumes"
