"""The model card: the one contract between training (writes it) and the service (reads it).

Everything needed to feed a model and read its output lives here, so ``app/`` hard-codes no size,
window, threshold or label. Training imports this module to write cards; the registry validates
every ``model_card.json`` against it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CARD_FILE = "model_card.json"
MODEL_FILE = "model.onnx"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Intensity(_Strict):
    """How raw values become model input values.

    - ``minmax``: per image, (x - min) / (max - min) → [0, 1].
    - ``percentile``: per image, window between the ``low``/``high`` percentiles → [0, 1].
    - ``window``: fixed window [``low``, ``high``] (e.g. HU −1000..400) → [0, 1].
    """

    method: Literal["minmax", "percentile", "window"]
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Intensity:
        if self.method != "minmax":
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"intensity {self.method!r} needs low < high")
            if self.method == "percentile" and not (self.low >= 0 and self.high <= 100):
                raise ValueError("percentiles must lie in [0, 100]")
        return self


Order = Literal["window_then_resize", "resize_then_window"]


class Preprocessing(_Strict):
    """Decode → tensor, fully described.

    ``size`` is ``[H, W]`` for 2D and ``[D, H, W]`` for volumes. ``channel_index`` picks one
    channel of a multi-channel image (e.g. FLAIR of a pre/FLAIR/post TIFF); otherwise colour
    inputs are converted to luminance. ``channels`` is how many the model takes (a gray image is
    repeated to 3 for an RGB-trained network). ``order`` (2D): whether the intensity window is
    found and applied on the image as decoded, then resized (``window_then_resize``, what a
    card without the field means), or on the image resized to ``size``
    (``resize_then_window``: the percentiles of the small image; cheaper on a large 16-bit
    frame). The two give different tensors, so the order is part of what a model was trained
    with.
    """

    kind: Literal["image2d", "volume3d"]
    size: list[int]
    channels: Literal[1, 3] = 1
    channel_index: int | None = None
    intensity: Intensity
    resize: Literal["nearest", "bilinear", "area", "trilinear"] = "bilinear"
    orientation: Literal["RAS", "LPS"] | None = None
    apply_voi_lut: bool = False
    expected_bits: int | None = Field(
        None, description="Bit depth the model was trained on (warn on others)"
    )
    order: Order = "window_then_resize"

    @model_validator(mode="after")
    def _size(self) -> Preprocessing:
        want = 2 if self.kind == "image2d" else 3
        if len(self.size) != want or any(s <= 0 for s in self.size):
            raise ValueError(f"{self.kind} needs {want} positive sizes")
        if self.kind == "volume3d" and self.order != "window_then_resize":
            raise ValueError("order resize_then_window is for 2D images")
        return self


class InputSpec(_Strict):
    layout: Literal["NHWC", "NCHW", "NDHWC", "NCDHW"]
    shape: list[int | None] = Field(description="Model input shape, None for the batch axis")
    dtype: Literal["float32"] = "float32"
    name: str | None = Field(None, description="ONNX input name (the first input if omitted)")
    preprocessing: Preprocessing


class OutputSpec(_Strict):
    labels: tuple[str, str] = Field(description="(negative, positive)")
    activation: Literal["sigmoid", "logit"] = Field(
        description="What the ONNX output holds: a probability or a logit"
    )
    name: str | None = None


class Calibration(_Strict):
    method: Literal["temperature", "none"]
    temperature: float = Field(1.0, gt=0)
    ece_before: float | None = None
    ece_after: float | None = None
    lesion_probability: str | None = Field(
        None, description="Segmentation: how the per-image lesion score is derived"
    )


class OperatingPoint(_Strict):
    threshold: float = Field(ge=0, le=1)
    sensitivity: float = Field(ge=0, le=1)
    specificity: float = Field(ge=0, le=1)
    precision: float | None = Field(None, ge=0, le=1)


class Training(_Strict):
    model_config = ConfigDict(extra="allow", frozen=True)

    dataset: str
    synthetic: bool
    split_sizes: dict[str, int]
    epochs: int
    seed: int
    framework_versions: dict[str, str]
    code_revision: str | None = None


class SelfTest(_Strict):
    """A seeded input and the output expected from it, checked when the model loads.

    The input is ``numpy.random.default_rng(seed).uniform(low, high, shape)`` as float32 with
    the model's input shape (batch 1); ``expected_first`` are the first values of the flattened
    output and ``expected_mean`` its mean.
    """

    seed: int
    low: float = 0.0
    high: float = 1.0
    expected_first: list[float] = Field(min_length=1, max_length=64)
    expected_mean: float
    atol: float = Field(1e-3, gt=0)

    def make_input(self, shape: list[int]) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rng.uniform(self.low, self.high, size=shape).astype(np.float32)

    def mismatch(self, output: np.ndarray) -> str | None:
        """None when ``output`` matches, else a short reason."""
        flat = np.asarray(output, dtype=np.float64).ravel()
        first = np.asarray(self.expected_first, dtype=np.float64)
        if flat.size < first.size:
            return f"output has {flat.size} values, expected at least {first.size}"
        err = float(np.max(np.abs(flat[: first.size] - first)))
        mean_err = abs(float(flat.mean()) - self.expected_mean)
        if not np.isfinite(err) or err > self.atol or mean_err > self.atol:
            return f"self-test output differs (max abs error {max(err, mean_err):.3g})"
        return None


class Conformance(_Strict):
    """What the training data looked like; inputs outside it are served with warnings.

    Each field is optional: a check runs only where the card states what was seen.
    """

    modalities: list[str] | None = Field(None, description="DICOM Modality values seen")
    view_positions: list[str] | None = Field(None, description="DICOM ViewPosition values seen")
    age_range_years: tuple[float, float] | None = None
    image_side_range: tuple[int, int] | None = Field(
        None, description="Smallest and largest image side (px) seen in training"
    )
    series_description_pattern: str | None = Field(
        None, description="Regular expression a matching SeriesDescription satisfies"
    )
    slice_thickness_range_mm: tuple[float, float] | None = None
    min_slices: int | None = None


class Coded(_Strict):
    """One coded concept as DICOM writes it: value, coding scheme (``SCT``, ``DCM``), meaning."""

    value: str = Field(min_length=1, max_length=64)
    scheme: str = Field(min_length=1, max_length=16)
    meaning: str = Field(min_length=1, max_length=64)


class SegmentCodes(_Strict):
    """The one segment a segmenter's DICOM Segmentation holds."""

    label: str = Field(min_length=1, max_length=64)
    category: Coded = Field(description="Segmented Property Category (e.g. SCT 49755003)")
    type: Coded = Field(description="Segmented Property Type (e.g. SCT 108369006 Neoplasm)")


class DicomCodes(_Strict):
    """The codes the DICOM results (SEG, SR) use; the service types none of them."""

    procedure: Coded = Field(description="Procedure reported (TID 1500)")
    finding: Coded = Field(description="The finding the model decides on")
    present: Coded = Field(description="Value of the finding when positive")
    absent: Coded = Field(description="Value of the finding when negative")
    segment: SegmentCodes | None = Field(None, description="Segmenters: the segment")


class Routing(_Strict):
    """Which DICOM series the model takes when a study is analysed. A series the PACS does not
    describe (no modality, no instance count) is never excluded for what it does not say."""

    modalities: list[str] = Field(min_length=1, description="DICOM Modality values taken")
    min_instances: int | None = Field(None, ge=1, description="Fewest instances in a series")

    def accepts(self, modality: str | None, instances: int | None) -> bool:
        if modality is not None and modality.upper() not in {m.upper() for m in self.modalities}:
            return False
        return not (
            self.min_instances is not None
            and instances is not None
            and instances < self.min_instances
        )


class OodSpec(_Strict):
    """Out-of-distribution check (``app.imaging.ood``): the model's extra ONNX output
    ``output`` (pooled features, appended last), joined with statistics of the input tensor on
    ``input_grid`` (one cell count per spatial axis), scored against ``statistics_file``
    (listed in ``files``); ``score > threshold`` is out of distribution. The measured figures
    (false-alarm rate, AUROC per kind, sizes) are kept as extra fields."""

    model_config = ConfigDict(extra="allow", frozen=True)

    method: Literal["mahalanobis"]
    output: str = Field(min_length=1, description="Name of the extra ONNX output (features)")
    statistics_file: str = Field(min_length=1)
    input_grid: list[int] = Field(min_length=2, max_length=3)
    threshold: float = Field(description="score > threshold: out of distribution")
    far: float | None = Field(None, ge=0, le=1, description="False-alarm rate on validation")
    auroc: float | None = Field(None, ge=0, le=1, description="On the OOD set made at export")
    statistics_version: int | None = Field(
        None, ge=1, description="The input statistics the file was fitted with (None: 1)"
    )

    @field_validator("input_grid")
    @classmethod
    def _grid(cls, grid: list[int]) -> list[int]:
        if any(g < 1 for g in grid):
            raise ValueError("input_grid cells must be positive")
        return grid


class ModelCard(_Strict):
    """``model_card.json``: every field the contract lists."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    version: str
    task: Literal["binary_classification", "binary_segmentation"]
    modality: str
    endpoint: str | None = Field(
        None, description="The upload path serving the model (app/endpoints.py); null: /v2 only"
    )
    input: InputSpec
    output: OutputSpec
    calibration: Calibration
    operating_points: dict[str, OperatingPoint] = Field(min_length=1)
    default_operating_point: str
    pixel_threshold: float | None = Field(None, gt=0, lt=1)
    metrics: dict[str, object]
    training: Training
    intended_use: str
    limitations: list[str]
    files: dict[str, str] = Field(description="file name -> sha256 (hex)")
    self_test: SelfTest
    conformance: Conformance = Field(default_factory=Conformance)
    dicom: DicomCodes | None = Field(None, description="Codes for DICOM results (SEG/SR)")
    routing: Routing | None = Field(None, description="Series taken when a study is analysed")
    ood: OodSpec | None = Field(None, description="Out-of-distribution check")

    @field_validator("files")
    @classmethod
    def _files(cls, files: dict[str, str]) -> dict[str, str]:
        if MODEL_FILE not in files:
            raise ValueError(f"files must list {MODEL_FILE}")
        for name, digest in files.items():
            if "/" in name or "\\" in name or name.startswith("."):
                raise ValueError("file names must be plain names inside the version folder")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError("sha256 must be 64 lowercase hex digits")
        return files

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if self.default_operating_point not in self.operating_points:
            raise ValueError("default_operating_point is not one of operating_points")
        if self.task == "binary_segmentation" and self.pixel_threshold is None:
            raise ValueError("a segmentation card needs pixel_threshold")
        if self.task == "binary_segmentation" and self.dicom and self.dicom.segment is None:
            raise ValueError("a segmentation card's dicom section needs a segment")
        if self.ood is not None:
            if self.ood.statistics_file not in self.files:
                raise ValueError("the ood statistics file must be listed in files")
            if len(self.ood.input_grid) != len(self.input.preprocessing.size):
                raise ValueError("ood input_grid needs one cell count per spatial axis")
        return self

    @property
    def model_sha256(self) -> str:
        return self.files[MODEL_FILE]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
