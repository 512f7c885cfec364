"""Real servers for tests: an Orthanc PACS and a PostgreSQL, each on 127.0.0.1 with free ports
and temporary folders, started and stopped by a context manager.

- ``orthanc(tmp, ...)`` yields an :class:`Orthanc` (Debian ``orthanc`` + ``orthanc-dicomweb``);
  ``stop()`` / ``start()`` take the same PACS down and up again on the same ports and storage.
- ``storescu(orthanc, files)`` sends DICOM files by C-STORE like a modality (dcmtk).
- ``postgres(tmp)`` yields an SQLAlchemy URL ``postgresql+psycopg://medserve@127.0.0.1:PORT/medserve``.

A missing binary skips the test with the ``apt-get`` line that installs it, and fails it under CI
(``tests/tools.py``). Processes are terminated (then killed) on the way out, also when the test
fails; their logs stay in ``tmp`` for the failure report.
"""

from __future__ import annotations

import contextlib
import enum
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.tools import require_tool

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def uvicorn_in_thread(app: Any, http: Any = None, lifespan: str = "off") -> Iterator[Any]:
    """A real uvicorn server on 127.0.0.1 with the service's protocol (``http``, default
    ``app.server.protocol_with(10.0)``) on uvloop, in a thread; yields the ``uvicorn.Server``."""
    import uvicorn

    from app.server import protocol_with

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        http=http or protocol_with(10.0),
        loop="uvloop",
        log_config=None,
        access_log=False,
        lifespan=lifespan,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(10)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (for error messages)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _unavailable(reason: str) -> None:
    """Skip with ``reason``; fail under CI (the rule of ``tests/tools.py``)."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _end_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait, then SIGKILL: the process is gone when this returns."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------------------------
# Orthanc


class _Default(enum.Enum):
    USER = "a user medserve with a generated password"


@dataclass
class Orthanc:
    """A running Orthanc process (Debian package) with the DICOMweb plugin, loopback only."""

    http_url: str  # http://127.0.0.1:PORT
    dicomweb_url: str  # http_url + "/dicom-web"
    http_port: int
    dicom_port: int
    aet: str
    username: str | None
    password: str | None
    log: Path  # stdout and stderr of every start, appended
    config: Path  # the configuration folder (Orthanc merges its *.json files)
    binary: str
    env: dict[str, str]
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def auth(self) -> tuple[str, str] | None:
        """Basic-auth credentials for httpx / requests, or None without users."""
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start Orthanc (same configuration, ports and storage) and wait until it answers."""
        if self.running:
            return
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.config,
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL); storage and index stay for ``start()``."""
        if self._proc is not None:
            _end_process(self._proc)
            self._proc = None

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until ``GET /system`` answers 200 (with auth) and the DICOM port accepts connections."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise RuntimeError(
                    f"Orthanc exited (code {code}) before it was ready; log {self.log}:\n"
                    + log_tail(self.log)
                )
            try:
                r = httpx.get(f"{self.http_url}/system", auth=self.auth, timeout=2.0)
                if r.status_code == 200 and _port_open(self.dicom_port):
                    return
                last = f"GET /system -> {r.status_code}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(
            f"Orthanc not ready after {timeout:.0f} s ({last}); log {self.log}:\n"
            + log_tail(self.log)
        )


def orthanc_config(
    tmp: Path,
    *,
    http_port: int,
    dicom_port: int,
    aet: str,
    lua_scripts: list[Path],
    stable_age: int,
    users: Mapping[str, str] | None,
) -> dict[str, object]:
    """The configuration of a test Orthanc: storage under ``tmp``, nothing outbound."""
    return {
        "Name": "medserve-test",
        "StorageDirectory": str(tmp / "storage"),
        "IndexDirectory": str(tmp / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "DicomCheckCalledAet": False,
        # Orthanc 1.10 binds all interfaces (no bind-address option); this refuses non-loopback
        # clients on HTTP. The test machine has loopback only.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": dict(users or {}),
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": {}},
        "StableAge": stable_age,
        "LuaScripts": [str(p.resolve()) for p in lua_scripts],
        # Nothing outbound but what a Lua script does on purpose.
        "DicomModalities": {},
        "OrthancPeers": {},
        "HttpProxy": "",
        "HttpTimeout": 10,
        "WebDavEnabled": False,
        "DicomTlsEnabled": False,
        "ExecuteLuaEnabled": False,
        "SaveJobs": False,
        "HttpThreadsCount": 10,
        "DicomThreadsCount": 2,
        "ConcurrentJobs": 1,
    }


def orthanc_json_keys(path: Path) -> set[str]:
    """The top-level keys of an Orthanc configuration file (JSON with // and /* */ comments)."""
    text = re.sub(
        r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/',
        lambda m: m.group(1) or "",
        path.read_text(),
        flags=re.DOTALL,
    )
    return set(json.loads(text))


@contextlib.contextmanager
def orthanc(
    tmp: Path,
    *,
    lua_scripts: list[Path] | None = None,
    env: Mapping[str, str] | None = None,
    stable_age: int = 2,
    users: Mapping[str, str] | Literal[_Default.USER] | None = _Default.USER,
    aet: str = "ORTHANC",
    config_files: list[Path] | None = None,
) -> Iterator[Orthanc]:
    """A real Orthanc on 127.0.0.1 with the DICOMweb plugin at ``/dicom-web/``.

    ``users``: the RegisteredUsers (the first one is the Orthanc's ``username``/``password``);
    by default one user ``medserve`` with a generated password; None (or ``{}``) turns
    authentication off. ``env`` is added to the process's environment (the parent's, without
    ``MEDSERVE_*``): the Lua trigger reads ``MEDSERVE_URL`` / ``MEDSERVE_API_KEY`` from it.
    ``config_files`` (e.g. ``deploy/orthanc/orthanc.json`` and ``medserve.lua``) are copied into
    the configuration folder; Orthanc merges the JSON ones with the test's, which leaves out
    every key they define (Orthanc refuses a key defined twice), so ``users`` must then match
    what they say. Storage, index, configuration and log live in ``tmp/orthanc``.
    """
    binary = require_tool("Orthanc", "orthanc")
    if not DICOMWEB_PLUGIN.is_file():
        _unavailable(f"{DICOMWEB_PLUGIN} not found: apt-get install -y orthanc-dicomweb")
    if users is _Default.USER:
        users = {"medserve": secrets.token_urlsafe(16)}
    username, password = next(iter(users.items())) if users else (None, None)
    folder = tmp / "orthanc"
    config_dir = folder / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    shipped: set[str] = set()
    for path in config_files or []:
        shutil.copyfile(path, config_dir / path.name)
        if path.suffix == ".json":
            shipped |= orthanc_json_keys(path)
    process_env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSERVE_")}
    process_env.update(env or {})
    log = folder / "orthanc.log"
    server: Orthanc | None = None
    try:
        # A port picked free can be taken before Orthanc binds it: pick again (new ports only on
        # the first start; a restart keeps them).
        for attempt in range(3):
            http_port, dicom_port = free_port(), free_port()
            config = orthanc_config(
                folder,
                http_port=http_port,
                dicom_port=dicom_port,
                aet=aet,
                lua_scripts=lua_scripts or [],
                stable_age=stable_age,
                users=users,
            )
            test_json = {k: v for k, v in config.items() if k not in shipped}
            (config_dir / "test.json").write_text(json.dumps(test_json, indent=2))
            http_url = f"http://127.0.0.1:{http_port}"
            server = Orthanc(
                http_url=http_url,
                dicomweb_url=f"{http_url}/dicom-web",
                http_port=http_port,
                dicom_port=dicom_port,
                aet=aet,
                username=username,
                password=password,
                log=log,
                config=config_dir,
                binary=binary,
                env=process_env,
            )
            log_size = log.stat().st_size if log.exists() else 0
            try:
                server.start()
                break
            except RuntimeError:
                with log.open("rb") as f:
                    f.seek(log_size)
                    port_taken = b"already in use" in f.read()
                if attempt == 2 or not port_taken:
                    raise
        assert server is not None
        yield server
    finally:
        if server is not None:
            server.stop()


def storescu(orthanc: Orthanc, files: list[Path], *, timeout: float = 60.0) -> None:
    """C-STORE ``files`` into ``orthanc`` with dcmtk's ``storescu``, like a modality would."""
    binary = require_tool("storescu", "dcmtk")
    if not files:
        raise ValueError("storescu: no files to send")
    cmd = [
        binary,
        "-aet", "MEDSERVETEST",
        "-aec", orthanc.aet,
        "-to", "10", "-ta", "10", "-td", "30",  # connection, ACSE and DIMSE timeouts (s)
        "127.0.0.1", str(orthanc.dicom_port),
        *[str(f) for f in files],
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"storescu did not finish within {timeout:.0f} s: {cmd}") from exc
    if done.returncode != 0 or "E: " in done.stderr:
        raise AssertionError(
            f"storescu failed (exit {done.returncode}) sending {len(files)} file(s) to "
            f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\n"
            f"Orthanc log:\n{log_tail(orthanc.log, 20)}"
        )


# --------------------------------------------------------------------------------------------
# PostgreSQL


def postgres_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: on PATH, else Debian's newest
    ``/usr/lib/postgresql/<version>/bin``; skip (fail under CI) when there is none."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    require_tool("initdb", "postgresql")  # skips or fails with the apt-get line
    raise AssertionError("unreachable")


def _kill_postmaster(data: Path) -> None:
    """SIGKILL the postmaster of ``data`` (its pid is the first line of postmaster.pid)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def postgres(tmp: Path, *, database: str = "medserve", user: str = "medserve") -> Iterator[str]:
    """A real PostgreSQL on 127.0.0.1 (trust auth, loopback only) with one empty database.

    Yields ``postgresql+psycopg://<user>@127.0.0.1:<port>/<database>``. PostgreSQL refuses to
    run as root, so as root the cluster belongs to the ``postgres`` system user and lives in a
    fresh folder under the system temp directory (pytest's ``tmp`` is private to root); the
    server log is copied to ``tmp/postgres.log`` at the end. The cluster is stopped
    (``pg_ctl stop -m fast``) and its folder removed on the way out.
    """
    bindir = postgres_bindir()
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if as_root:
        runuser = require_tool("runuser", "util-linux")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("no 'postgres' system user: apt-get install -y postgresql creates it")
            raise
        prefix = [runuser, "-u", "postgres", "--"]
    tmp.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="medserve-pg-")) if as_root else tmp / "postgres"
    base.mkdir(parents=True, exist_ok=True)
    data, sockets, log = base / "data", base / "sock", base / "postgres.log"
    if owner is not None:
        base.chmod(0o700)
        os.chown(base, owner.pw_uid, owner.pw_gid)

    def run(*args: str, timeout: float = 60.0) -> None:
        done = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed (exit {done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}\nserver log:\n{log_tail(log)}"
            )

    started = False
    try:
        sockets.mkdir()
        if owner is not None:
            os.chown(sockets, owner.pw_uid, owner.pw_gid)
        run(
            str(bindir / "initdb"),
            "-D", str(data),
            "-U", user,
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )  # fmt: skip
        for attempt in range(3):
            port = free_port()
            options = (
                f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                run(
                    str(bindir / "pg_ctl"),
                    "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start",
                )  # fmt: skip
                started = True
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database)
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/{database}"
    finally:
        try:
            if started:
                try:
                    run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
                except (RuntimeError, subprocess.TimeoutExpired):
                    _kill_postmaster(data)
                    raise
        finally:
            with contextlib.suppress(OSError):
                shutil.copyfile(log, tmp / "postgres.log")
            if as_root:
                shutil.rmtree(base, ignore_errors=True)
