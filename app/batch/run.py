"""The Ray Data plan and ``medserve batch``.

Files: ``from_items`` (ids and paths) → ``map_batches(_prepare)`` (read the bytes, decode,
warnings, preprocess; Ray Data fuses it into the actors' processes) → ``map_batches(_Infer)``
in an actor pool (``compute=ray.data.ActorPoolStrategy(size=workers)``, the model loaded once
per actor on its runtime, ``app.runtime``; one run per Ray batch where the graph's batch
dimension is free) →
``map_batches(_finish)`` in tasks (postprocess, the row) → the driver writes a part every
``rows_per_part`` rows. Ray Data's streaming executor bounds what is in flight (backpressure:
tasks wait while the object store or the actors are full) and the actors take at most
``max_tasks_in_flight_per_actor`` batches ahead.

PACS: QIDO-RS lists the studies (driver); ``flat_map`` lists each study's series the card routes
to (tasks); an actor pool retrieves each series (WADO-RS), runs ``pipeline.analyze_series`` as
the jobs do, and with ``--stow`` stores the SEG/SR (STOW-RS) under UIDs derived from (study,
series, model), so a resumed or repeated run stores nothing twice.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import ray
import ray.data

from app.batch import output, sources, stages
from app.batch.progress import Progress
from app.config import Settings
from app.errors import MedserveError
from app.imaging.card import CARD_FILE, ModelCard
from app.imaging.postprocess import resolve_operating_point
from app.metrics import Metrics
from app.pacs.dicomweb import Pacs, PacsRejected, PacsUnavailable
from app.pacs.jobs import _part10
from app.registry import ModelEntry, _choose_version, load_entry

log = logging.getLogger("medserve.batch")


# --------------------------------------------------------------------------- stages on Ray


@lru_cache(maxsize=4)
def _card_entry(name: str, version: str, path: str) -> ModelEntry:
    """The model's card without a session (what the decode/postprocess tasks need); the
    actors load and verify the model itself."""
    card = ModelCard.model_validate(json.loads((Path(path) / CARD_FILE).read_bytes()))
    return ModelEntry(name=name, version=version, path=Path(path), card=card)


def _prepare(batch: dict[str, np.ndarray], model: dict[str, str], settings: Settings) -> Any:
    entry = _card_entry(model["name"], model["version"], model["path"])
    assert entry.card is not None
    shape = [1 if s is None else s for s in entry.card.input.shape][1:]
    tensors, infos, ok = [], [], []
    for path in batch["path"]:
        try:
            data = Path(str(path)).read_bytes()
        except OSError:
            tensor, info = None, {"error_code": "invalid_image", "error_detail": "unreadable"}
        else:
            tensor, info = stages.prepare(entry, data, settings.decode_limits)
        ok.append(tensor is not None)
        tensors.append(tensor[0] if tensor is not None else np.zeros(shape, np.float32))
        infos.append(json.dumps(info))
    return {
        "id": batch["id"],
        "path": batch["path"],
        "info": np.array(infos, dtype=object),
        "tensor": np.stack(tensors).astype(np.float32, copy=False),
        "ok": np.array(ok, dtype=bool),
    }


class _Infer:
    """One per actor: the model loaded, verified (sha256) and self-tested once."""

    def __init__(self, model: dict[str, str], settings: Settings) -> None:
        self.entry = load_entry(model["name"], Path(model["path"]), settings)
        if not self.entry.ready:
            raise RuntimeError(f"model not ready in a batch worker: {self.entry.reason}")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["ok"], dtype=bool)
        tensors = [batch["tensor"][i : i + 1] for i in np.flatnonzero(ok)]
        outputs, ood_scores, per_input_ms = stages.infer(self.entry, tensors)
        out_shape = outputs[0].shape[1:] if outputs else (1,)
        stacked = np.zeros((len(ok), *out_shape), np.float32)
        ood = np.full(len(ok), np.nan, np.float64)
        for i, o, score in zip(np.flatnonzero(ok), outputs, ood_scores, strict=True):
            stacked[i] = o[0]
            if score is not None:
                ood[i] = score
        return {
            "id": batch["id"],
            "path": batch["path"],
            "info": batch["info"],
            "output": stacked,
            "ok": ok,
            "inference_ms": np.full(len(ok), per_input_ms, np.float64),
            "ood_score": ood,
        }


def _finish(batch: dict[str, np.ndarray], model: dict[str, str], operating_point: str) -> Any:
    entry = _card_entry(model["name"], model["version"], model["path"])
    assert entry.card is not None
    rows = []
    for i in range(len(batch["id"])):
        info = json.loads(str(batch["info"][i]))
        if batch["ok"][i]:
            score = float(batch["ood_score"][i])
            row = stages.finish(
                entry,
                info,
                batch["output"][i : i + 1],
                operating_point,
                None if np.isnan(score) else score,
            )
            row["timing_inference_ms"] = float(batch["inference_ms"][i])
        else:
            row = info
        row.update(
            id=str(batch["id"][i]),
            path=str(batch["path"][i]),
            model_name=entry.name,
            model_version=entry.version,
            model_sha256=model["sha256"],
        )
        rows.append(row)
    return output.to_table(rows, entry.card.task == "binary_segmentation")


def _series_of(row: dict[str, Any], model: dict[str, str], settings: Settings) -> list[Any]:
    entry = _card_entry(model["name"], model["version"], model["path"])
    assert entry.card is not None
    study = str(row["study_instance_uid"])
    try:
        found = sources.routed_series(Pacs(settings), entry.card, study)
    except (PacsUnavailable, PacsRejected) as exc:
        return [
            {
                "id": study,
                "study_instance_uid": study,
                "series_instance_uid": "",
                "error_code": exc.code,
            }
        ]
    return [
        {
            "id": f"{study}/{s.uid}",
            "study_instance_uid": study,
            "series_instance_uid": s.uid,
            "error_code": "",
        }
        for s in found
    ]


class _Analyze:
    """One per actor: the model, a PACS client; a series per row (retrieve, analyse, store)."""

    def __init__(
        self, model: dict[str, str], settings: Settings, operating_point: str, stow: bool
    ) -> None:
        self.entry = load_entry(model["name"], Path(model["path"]), settings)
        if not self.entry.ready:
            raise RuntimeError(f"model not ready in a batch worker: {self.entry.reason}")
        self.settings = settings
        self.pacs = Pacs(settings)
        self.point = operating_point
        self.stow = stow
        self.metrics = Metrics()

    def _one(self, study: str, series: str, listing_error: str) -> dict[str, Any]:
        if listing_error:
            return {"error_code": listing_error, "error_detail": "the PACS failed"}
        try:
            parts = _part10(self.pacs.retrieve(study, series))
        except (PacsUnavailable, PacsRejected) as exc:
            return {"error_code": exc.code, "error_detail": str(exc)}
        row, dicom = stages.analyze(
            self.entry,
            parts,
            self.point,
            self.settings.decode_limits,
            self.metrics,
            study,
            series,
        )
        if self.stow and dicom is not None:
            try:
                self.pacs.store(study, pydicom.dcmread(io.BytesIO(dicom)))
            except (PacsUnavailable, PacsRejected) as exc:
                row.update(error_code=exc.code, error_detail=str(exc))
            else:
                row["stored_sop_instance_uid"] = stages.series_uids(
                    self.entry, study, series
                ).instance
        return row

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        assert self.entry.card is not None
        rows = []
        for i in range(len(batch["id"])):
            study = str(batch["study_instance_uid"][i])
            series = str(batch["series_instance_uid"][i])
            row = self._one(study, series, str(batch["error_code"][i]))
            row.update(
                id=str(batch["id"][i]),
                study_instance_uid=study,
                series_instance_uid=series or None,
                model_name=self.entry.name,
                model_version=self.entry.version,
                model_sha256=self.entry.sha256,
            )
            rows.append(row)
        return output.to_table(rows, self.entry.card.task == "binary_segmentation")


# --------------------------------------------------------------------------- the command


def _fail(message: str) -> int:
    print(f"medserve batch: {message}", file=sys.stderr)
    return 2


def start_ray(address: str | None, num_cpus: int | None) -> bool:
    """Connect to ``address``, or start an embedded Ray that ignores ``RAY_ADDRESS`` and any
    running cluster; True when this call started (and so must stop) it."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    return True


def run(args: argparse.Namespace, settings: Settings) -> int:
    """The whole command: 0 when every input has its row (error rows included)."""
    if args.model_dir:
        settings = settings.model_copy(update={"model_dir": Path(args.model_dir)})
    if args.batch_size < 1 or args.rows_per_part < 1 or (args.workers or 1) < 1:
        return _fail("--batch-size, --rows-per-part and --workers must be positive")
    folder = settings.model_dir / args.model
    if not folder.is_dir():
        return _fail("no such model in the model dir")
    version, reason = _choose_version(folder, settings.model_versions.get(args.model))
    if version is None:
        return _fail(f"model not ready: {reason}")
    entry = load_entry(args.model, folder / version, settings)
    if not entry.ready or entry.card is None:
        return _fail(f"model not ready: {entry.reason}")
    try:
        point, _ = resolve_operating_point(entry.card, args.operating_point)
    except MedserveError as exc:
        return _fail(exc.detail or exc.title)
    pacs_input = sources.is_pacs(args.input)
    if args.stow and not pacs_input:
        return _fail("--stow needs PACS input (pacs:<QIDO query>)")
    if pacs_input and not settings.dicomweb_url:
        return _fail("PACS input needs MEDSERVE_DICOMWEB_URL")
    model = {
        "name": entry.name,
        "version": version,
        "path": str((folder / version).resolve()),
        "sha256": str(entry.sha256),
    }
    manifest = {
        "model": {k: model[k] for k in ("name", "version", "sha256")},
        "operating_point": point,
        "input": "pacs" if pacs_input else str(args.input),
    }
    try:
        out = output.Output(args.output, manifest, args.resume)
        done = out.done_ids()
        if pacs_input:
            pacs = Pacs(settings)
            found = sources.studies(pacs, sources.qido_filters(args.input))
            records: list[dict[str, Any]] = [{"study_instance_uid": s} for s in found]
        else:
            records = [r for r in sources.file_records(args.input) if r["id"] not in done]
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    except (PacsUnavailable, PacsRejected) as exc:
        return _fail(str(exc))
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    started = start_ray(args.ray_address, args.num_cpus)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.enable_auto_log_stats = False
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        cpus = max(1, int(resources.get("CPU", 1)))
        workers = args.workers or max(1, cpus // 2)
        threads = max(1, cpus // (2 * workers))
        worker_settings = settings.model_copy(update={"ort_intra_op_threads": threads})
        progress = Progress(None if pacs_input else len(records))
        if records:
            ds = _plan(records, model, worker_settings, point, args, workers, done)
            for table in ds.iter_batches(batch_size=args.rows_per_part, batch_format="pyarrow"):
                if table.num_rows:
                    out.write(table)
                    progress.update(table.num_rows)
        progress.close()
    finally:
        if started:
            ray.shutdown()
    return 0


def _plan(
    records: list[dict[str, Any]],
    model: dict[str, str],
    settings: Settings,
    point: str,
    args: argparse.Namespace,
    workers: int,
    done: set[str],
) -> Any:
    blocks = max(1, min(len(records), math.ceil(len(records) / args.batch_size)))
    # Ray's own annotations do not know fn_kwargs: the plan is typed Any
    ds: Any = ray.data.from_items(records, override_num_blocks=blocks)
    pool = ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2)
    if sources.is_pacs(args.input):
        ds = ds.flat_map(_series_of, fn_kwargs={"model": model, "settings": settings})
        if done:
            ds = ds.filter(lambda row: row["id"] not in done)
        return ds.map_batches(
            _Analyze,
            batch_size=1,
            compute=pool,
            num_cpus=1,
            fn_constructor_kwargs={
                "model": model,
                "settings": settings,
                "operating_point": point,
                "stow": args.stow,
            },
        )
    ds = ds.map_batches(
        _prepare,
        batch_size=args.batch_size,
        batch_format="numpy",
        fn_kwargs={"model": model, "settings": settings},
    )
    ds = ds.map_batches(
        _Infer,
        batch_size=args.batch_size,
        batch_format="numpy",
        compute=pool,
        num_cpus=1,
        fn_constructor_kwargs={"model": model, "settings": settings},
    )
    return ds.map_batches(
        _finish,
        batch_size=args.batch_size,
        batch_format="numpy",
        fn_kwargs={"model": model, "operating_point": point},
    )


def main(args: argparse.Namespace) -> int:
    """``medserve batch`` after argument parsing: settings from the environment."""
    from pydantic import ValidationError

    try:
        settings = Settings()
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        return _fail(f"invalid settings: {fields}")
    return run(args, settings)
