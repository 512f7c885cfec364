"""``medserve`` command line: ``medserve serve --host --port``, ``medserve batch ...``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from pydantic import ValidationError

from app.batch.cli import add_arguments as add_batch_arguments


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.config import get_settings
    from app.logs import configure_logging
    from app.server import protocol_with

    if args.model_dir:
        os.environ["MEDSERVE_MODEL_DIR"] = args.model_dir
    try:
        settings = get_settings()  # validate before any worker starts
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        print(f"medserve: invalid settings: {fields}", file=sys.stderr)
        for e in exc.errors():
            print(f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}", file=sys.stderr)
        return 2
    if args.workers > 1 and settings.sqlalchemy_url.startswith("sqlite"):
        print(
            "medserve: several workers need PostgreSQL (MEDSERVE_DATABASE_URL="
            "postgresql+psycopg://…); SQLite is for one process",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings.log_level)
    raise_open_files_limit(settings.max_connections)
    pinning_for_workers(args.workers)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=30,
        # The same HTTP stack whatever else is installed: httptools with a header deadline
        # (app/server.py), on uvloop (a pinned dependency; the hand-offs between the event
        # loop and the inference threads cost less: MRI slice 2 % faster side by side).
        http=protocol_with(settings.read_timeout_seconds),
        loop="uvloop",
        timeout_keep_alive=settings.keep_alive_seconds,
        limit_concurrency=settings.max_connections,
    )
    return 0


def pinning_for_workers(workers: int) -> None:
    """With several worker processes each would pin its runs alone to the same lowest cores
    (``Settings.ort_pin_when_alone``): unless the setting is given, they leave their threads
    to the scheduler (the workers inherit this environment)."""
    if workers > 1:
        os.environ.setdefault("MEDSERVE_ORT_PIN_WHEN_ALONE", "false")


def raise_open_files_limit(connections: int) -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (Debian's soft default, 1024, is below the
    connection cap); a warning when even the hard limit cannot hold the cap."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and soft < connections + 64:
        print(
            f"medserve: open-files limit {soft} is below MEDSERVE_MAX_CONNECTIONS "
            f"({connections}) plus files; connections past it are refused by the kernel",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medserve", description="medical imaging inference")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the HTTP service")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("MEDSERVE_WORKERS", "1")))
    serve.add_argument("--model-dir", default=None, help="overrides MEDSERVE_MODEL_DIR")
    batch = sub.add_parser("batch", help="batch inference over an archive (Ray Data, Parquet)")
    add_batch_arguments(batch)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "batch":
        try:
            from app.batch.run import main as batch_main
        except ImportError:
            print("medserve batch needs the batch extra: pip install 'medserve[batch]'")
            return 2
        return batch_main(args)
    return 2  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
