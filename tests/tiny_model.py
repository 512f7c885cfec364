"""A tiny real ONNX classifier and its card, built with onnx.helper (no TensorFlow).

Used by the registry and HTTP tests: the registry verifies, loads and self-tests it exactly as it
would a trained artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from app.endpoints import for_model
from app.imaging.card import SelfTest, sha256_file

SIZE = 8


def tiny_onnx(path: Path, scale: float = 4.0) -> None:
    """(N, 8, 8, 1) float32 -> (N, 1) logit = scale * (mean(x) - 0.5)."""
    w = numpy_helper.from_array(np.full((SIZE * SIZE, 1), scale / SIZE**2, np.float32), "w")
    b = numpy_helper.from_array(np.array([-scale / 2], np.float32), "b")
    shape = numpy_helper.from_array(np.array([-1, SIZE * SIZE], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["logit"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, SIZE, SIZE, 1])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, [None, 1])],
        initializer=[w, b, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def tiny_segmenter_onnx(path: Path) -> None:
    """(N, 8, 8, 1) float32 -> (N, 8, 8, 1): the pixel probability is the input value itself."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["prob"])],
        "tiny_seg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, SIZE, SIZE, 1])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [None, SIZE, SIZE, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def _code(value: str, meaning: str) -> dict[str, str]:
    return {"value": value, "scheme": "SCT", "meaning": meaning}


# The DICOM results' codes of every tiny model (a segment too, which classifiers ignore).
TINY_DICOM: dict[str, Any] = {
    "procedure": _code("363679005", "Imaging procedure"),
    "finding": _code("108369006", "Neoplasm"),
    "present": _code("52101004", "Present"),
    "absent": _code("272519000", "Absent"),
    "segment": {
        "label": "Test segment",
        "category": _code("49755003", "Morphologically abnormal structure"),
        "type": _code("108369006", "Neoplasm"),
    },
}


def _table_path(name: str) -> str | None:
    """The endpoint table's path for ``name``; None (served by /v2 only) for other names."""
    row = for_model(name)
    return row.path if row else None


def tiny_card(
    name: str,
    version: str,
    model_path: Path,
    input_shape: tuple[int, ...] = (1, SIZE, SIZE, 1),
    **overrides: Any,
) -> dict[str, Any]:
    session = ort.InferenceSession(model_path.read_bytes(), providers=["CPUExecutionProvider"])
    probe = SelfTest(seed=7, expected_first=[0.0], expected_mean=0.0)
    out = session.run(None, {"input": probe.make_input(list(input_shape))})[0].ravel()
    card: dict[str, Any] = {
        "name": name,
        "version": version,
        "task": "binary_classification",
        "modality": "XR",
        "endpoint": _table_path(name),
        "input": {
            "layout": "NHWC",
            "shape": [None, SIZE, SIZE, 1],
            "dtype": "float32",
            "preprocessing": {
                "kind": "image2d",
                "size": [SIZE, SIZE],
                "channels": 1,
                "intensity": {"method": "minmax"},
                "resize": "area",
            },
        },
        "output": {"labels": ["NORMAL", "PNEUMONIA"], "activation": "logit"},
        "calibration": {"method": "temperature", "temperature": 2.0},
        "operating_points": {
            "balanced": {"threshold": 0.5, "sensitivity": 0.9, "specificity": 0.9},
            "high_sensitivity": {"threshold": 0.2, "sensitivity": 0.99, "specificity": 0.5},
        },
        "default_operating_point": "balanced",
        "metrics": {"auc": 1.0},
        "training": {
            "dataset": "none (hand-built test model)",
            "synthetic": True,
            "split_sizes": {"train": 0},
            "epochs": 0,
            "seed": 0,
            "framework_versions": {"onnx": onnx.__version__},
        },
        "intended_use": "tests only",
        "limitations": ["not a medical model"],
        "files": {"model.onnx": sha256_file(model_path)},
        "self_test": {
            "seed": 7,
            "expected_first": [float(out[0])],
            "expected_mean": float(out.mean()),
        },
        "dicom": TINY_DICOM,
    }
    card.update(overrides)
    return card


def write_tiny_model(
    root: Path,
    name: str = "tiny_xray",
    version: str = "1.0.0",
    segmenter: bool = False,
    **overrides: Any,
) -> Path:
    """Write ``root/name/version/{model.onnx, model_card.json}``; returns the version folder.

    ``segmenter=True`` writes the identity "segmenter" with a segmentation card.
    """
    folder = root / name / version
    folder.mkdir(parents=True, exist_ok=True)
    if segmenter:
        tiny_segmenter_onnx(folder / "model.onnx")
        overrides = {
            "task": "binary_segmentation",
            "modality": "MR",
            "output": {"labels": ["NO_LESION", "LESION"], "activation": "sigmoid"},
            "pixel_threshold": 0.5,
            "calibration": {"method": "temperature", "temperature": 1.0},
            **overrides,
        }
    else:
        tiny_onnx(folder / "model.onnx")
    card = tiny_card(name, version, folder / "model.onnx", **overrides)
    (folder / "model_card.json").write_text(json.dumps(card, indent=2))
    return folder


def write_tiny_volume_classifier(
    root: Path, name: str = "covid_ct", version: str = "1.0.0"
) -> Path:
    """A (N, 4, 4, 4, 1) → (N, 1) logit = mean(x) classifier with a volume card."""
    folder = root / name / version
    folder.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(np.full((64, 1), 1 / 64, np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logit"]),
        ],
        "tiny_volume",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4, 4, 4, 1])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, [None, 1])],
        initializer=[w, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    card = tiny_card(name, version, path, input_shape=(1, 4, 4, 4, 1))
    card.update(
        modality="CT",
        output={"labels": ["NEGATIVE", "COVID19"], "activation": "logit"},
        input={
            "layout": "NDHWC",
            "shape": [None, 4, 4, 4, 1],
            "preprocessing": {
                "kind": "volume3d",
                "size": [4, 4, 4],
                "intensity": {"method": "window", "low": -1000, "high": 400},
                "resize": "trilinear",
            },
        },
    )
    (folder / "model_card.json").write_text(json.dumps(card, indent=2))
    return folder


def write_tiny_suite(root: Path) -> Path:
    """Tiny stand-ins under the four contract names, for tests about the HTTP layer itself."""
    write_tiny_model(root, name="pneumonia_xray")
    write_tiny_volume_classifier(root, name="covid_ct")
    write_tiny_model(root, name="brain_tumor_mri", segmenter=True)
    write_tiny_model(root, name="phantom_tumor_xray", segmenter=True, modality="XR")
    return root
