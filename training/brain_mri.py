"""The brain-MRI slice: LGG FLAIR abnormality segmentation (``brain_tumor_mri``, ``/segment/mri``).

``train_brain_mri`` wires the ``kaggle_3m`` loader, the U-Net builder and the generic
``training.segmentation.run_binary_segmentation``; ``evaluate_brain_artifact`` re-checks an
exported artifact on a ``kaggle_3m`` folder through the service's registry and ONNX.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.imaging.card import Intensity, Preprocessing
from training.dicom_codes import BRAIN_MRI_DICOM, BRAIN_MRI_ROUTING
from training.pipeline import CardTemplate, RunInfo
from training.segmentation import (
    SegSplits,
    SegTrainConfig,
    evaluate_segmentation_artifact,
    export_segmentation_artifact,
    result_from_checkpoint,
    run_binary_segmentation,
)

log = logging.getLogger("medserve.training")

FLAIR_CHANNEL = 1  # kaggle_3m RGB = (pre-contrast, FLAIR, post-contrast)
SERIES_PATTERN = r"flair|t2.?fl|dark.?fluid"

BRAIN_CARD = CardTemplate(
    name="brain_tumor_mri",
    task="binary_segmentation",
    modality="MR",
    endpoint="/segment/mri",
    labels=("NO_LESION", "LESION"),
    dataset="kaggle_3m_lgg_flair",
    default_operating_point="balanced",
    intended_use=(
        "Research and demonstration: outlines FLAIR-hyperintense abnormality (lower-grade "
        "glioma) on one axial brain MRI FLAIR slice, and says whether the slice shows any. "
        "Not a diagnostic device; every mask needs review by a qualified reader."
    ),
    limitations=(
        "Reads the FLAIR image only: a 3-channel image is taken as (pre-contrast, FLAIR, "
        "post-contrast) and its second channel is used; a gray image or an MR DICOM slice is "
        "used as it is, whatever its sequence (a warning names a series description that does "
        "not look like FLAIR).",
        "One axial slice at a time, no 3D context; intensities are scaled per slice between "
        "the 0.5th and 99.5th percentiles, so a slice that is nearly all background or all "
        "lesion is scaled differently from the training slices.",
        "Trained for lower-grade glioma FLAIR abnormality (Buda et al., TCGA/TCIA layout); "
        "other lesions that are bright on FLAIR (demyelination, infarcts, oedema around "
        "metastases, small-vessel disease) may be outlined too, and enhancing high-grade "
        "tumour cores are out of scope.",
        "The mask comes from a low-resolution probability map resized bilinearly to the "
        "input's size: borders are smooth and lesions under a few pixels across at the model "
        "resolution may be missed.",
        "Operating points and calibration were fitted on a validation split of the same "
        "source; prevalence and calibration shift on other scanners and sites.",
    ),
    dicom=BRAIN_MRI_DICOM,
    routing=BRAIN_MRI_ROUTING,
)


def brain_preprocessing(size: int | tuple[int, int]) -> Preprocessing:
    """The card's preprocessing: the FLAIR channel, a per-slice 0.5/99.5 percentile window
    (MR intensities have no absolute scale; percentiles ignore single hot pixels that would set
    a min-max scale), bilinear resize to ``size`` (a 256 slice is halved for the 128 demo)."""
    h, w = (size, size) if isinstance(size, int) else size
    return Preprocessing(
        kind="image2d",
        size=[int(h), int(w)],
        channels=1,
        channel_index=FLAIR_CHANNEL,
        intensity=Intensity(method="percentile", low=0.5, high=99.5),
        resize="bilinear",
        expected_bits=8,
    )


def brain_conformance(splits: SegSplits) -> dict[str, Any]:
    """What the training slices looked like: MR, FLAIR, and the image sides seen."""
    sides = [s for split in (splits.train, splits.val) for shape in split.shapes for s in shape]
    return {
        "modalities": ["MR"],
        "series_description_pattern": SERIES_PATTERN,
        "image_side_range": [min(sides), max(sides)],
    }


def train_brain_mri(
    data_dir: Path,
    out_root: Path = Path("models"),
    version: str = "1.0.0",
    *,
    size: int = 128,
    base_filters: int = 16,
    depth: int = 4,
    dropout: float = 0.1,
    batch_norm: bool = True,
    config: SegTrainConfig | None = None,
    synthetic: bool = False,
    test_data: Path | None = None,
    run_dir: Path | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.15,
    overwrite: bool = False,
    from_checkpoint: bool = False,
) -> Path:
    """The brain-MRI slice end to end; returns ``out_root/brain_tumor_mri/<version>``.

    ``from_checkpoint``: skip training and export the best checkpoint of ``run_dir``'s finished
    run (same data, options and seed) again."""
    from training.datasets.brain_mri import load
    from training.models.unet import build

    config = config or SegTrainConfig()
    prep = brain_preprocessing(size)
    splits = load(
        Path(data_dir),
        prep,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=config.seed,
        test_root=test_data,
    )
    log.info("splits %s", splits.sizes)
    options: dict[str, Any] = {
        "depth": depth,
        "base_filters": base_filters,
        "batch_norm": batch_norm,
        "dropout": dropout,
        "upsampling": "transpose",
    }
    shape = (prep.size[0], prep.size[1], prep.channels)
    info = RunInfo(
        synthetic=synthetic,
        seed=config.seed,
        arch="unet",
        arch_options=options,
        extra={
            "val_fraction": val_fraction,
            "test_data": "separate folder" if test_data else "patients of the training folder",
            "input_channel": "FLAIR (channel 1 of pre/FLAIR/post)",
        },
    )
    run_dir = Path(run_dir) if run_dir else Path("runs") / BRAIN_CARD.name / version
    if from_checkpoint:
        return export_segmentation_artifact(
            result=result_from_checkpoint(lambda: build(shape, **options), run_dir, config),
            template=BRAIN_CARD,
            prep=prep,
            splits=splits,
            config=config,
            out_root=Path(out_root),
            version=version,
            info=info,
            conformance=brain_conformance(splits),
            overwrite=overwrite,
        )
    return run_binary_segmentation(
        template=BRAIN_CARD,
        prep=prep,
        splits=splits,
        build_fn=lambda: build(shape, **options),
        config=config,
        out_root=Path(out_root),
        version=version,
        run_dir=run_dir,
        info=info,
        conformance=brain_conformance(splits),
        overwrite=overwrite,
    )


def evaluate_brain_artifact(model_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Every slice of ``data_dir`` (a ``kaggle_3m`` folder) through the exported artifact."""
    import json

    from app.imaging.card import CARD_FILE, ModelCard
    from training.datasets.brain_mri import load_all

    card = ModelCard.model_validate(json.loads((Path(model_dir) / CARD_FILE).read_bytes()))
    split = load_all(Path(data_dir), card.input.preprocessing)
    metrics = evaluate_segmentation_artifact(Path(model_dir), split)
    metrics["split"] = "all slices of the folder"
    return metrics


# --------------------------------------------------------------------------- medserve-train


def cli_synth(args: Any) -> int:
    """``medserve-train synth brain_mri --out DIR --n N --seed S [--overwrite]``."""
    import json

    from training.synthetic import brain_mri

    cfg = brain_mri.SynthConfig(n=args.n, seed=args.seed)
    files = brain_mri.generate(Path(args.out), cfg, overwrite=args.overwrite)
    print(json.dumps({"written": len(files), "counts": brain_mri.counts(Path(args.out))}))
    return 0


def cli_train(args: Any) -> int:
    """``medserve-train train brain_mri --data DIR ...`` (the U-Net options of
    ``training.segmentation.add_train_arguments``)."""
    import json

    from training.segmentation import config_from_args

    path = train_brain_mri(
        Path(args.data),
        Path(args.out),
        args.version,
        size=args.size,
        base_filters=args.base_filters,
        depth=args.depth,
        dropout=args.dropout,
        batch_norm=not args.no_batch_norm,
        config=config_from_args(args),
        synthetic=args.synthetic,
        test_data=Path(args.test_data) if args.test_data else None,
        run_dir=Path(args.run_dir) if args.run_dir else None,
        val_fraction=args.val_fraction,
        overwrite=args.overwrite,
        from_checkpoint=args.from_checkpoint,
    )
    card = json.loads((path / "model_card.json").read_text())
    keys = ("dice", "iou", "dice_all", "dice_pooled", "auc", "sensitivity", "specificity")
    summary = {
        "artifact": str(path),
        "pixel_threshold": card["pixel_threshold"],
        "metrics": {k: card["metrics"][k] for k in keys},
        "calibration": card["calibration"],
        "operating_points": card["operating_points"],
        "training_seconds": card["training"]["training_seconds"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def cli_evaluate(args: Any) -> int:
    """``medserve-train evaluate brain_mri --model models/brain_tumor_mri/<v> --data DIR``."""
    import json

    metrics = evaluate_brain_artifact(Path(args.model), Path(args.data))
    metrics.pop("operating_points", None)
    print(json.dumps(metrics, indent=2))
    return 0
