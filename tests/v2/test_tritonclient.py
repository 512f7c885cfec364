"""tritonclient[http], unmodified, against a real medserve: health, metadata, inference in
JSON and binary for every committed model, the calibrated decision, and the errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http._client as triton_client_module
from tritonclient.utils import InferenceServerException

from tests.integration import media
from tests.v2.conftest import MAX_UPLOAD, MODEL_NAMES, Case, V2Server

POSTPROCESSED = ["probability", "positive", "threshold", "label"]
OOD = ["ood_score", "in_distribution"]  # after those (and the mask) when the card has `ood`


@pytest.fixture(scope="module")
def client(v2_server: V2Server) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(v2_server.host_port, network_timeout=120.0)
    yield c
    c.close()


def _input(case: Case, batch: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(case.input_name, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def _batch(case: Case, n: int = 2) -> np.ndarray:
    """The preprocessed upload, then n-1 seeded tensors of the same shape (a real batch)."""
    rng = np.random.default_rng(7)
    rest = rng.uniform(0, 1, size=(n - 1, *case.tensor.shape[1:])).astype(np.float32)
    return np.concatenate([case.tensor, rest])


# --------------------------------------------------------------------------- health, metadata


def test_server_health_and_metadata(
    client: triton.InferenceServerClient, v2_server: V2Server
) -> None:
    assert client.is_server_live()  # no key: /v2/health/* are public like /health/*
    assert client.is_server_ready()
    meta = client.get_server_metadata(headers=v2_server.headers)
    assert meta["name"] == "medserve"
    assert "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_ready_and_metadata(
    client: triton.InferenceServerClient, v2_server: V2Server, cases: dict[str, Case], name: str
) -> None:
    case = cases[name]
    h = v2_server.headers
    assert client.is_model_ready(name, headers=h)
    assert client.is_model_ready(name, case.card.version, headers=h)
    assert not client.is_model_ready(name, "0.0.0-absent", headers=h)
    meta = client.get_model_metadata(name, headers=h)
    assert meta["name"] == name and meta["versions"] == [case.card.version]
    assert meta["platform"] == "onnxruntime_onnx"
    graph_in = case.session.get_inputs()[0]
    assert meta["inputs"] == [
        {
            "name": graph_in.name,
            "datatype": "FP32",
            "shape": [-1 if not isinstance(d, int) else d for d in graph_in.shape],
        }
    ]
    assert meta["inputs"][0]["shape"][1:] == case.card.input.shape[1:]
    assert [o["name"] for o in meta["outputs"]] == case.output_names
    assert client.get_model_metadata(name, case.card.version, headers=h) == meta


# --------------------------------------------------------------------------- raw tensors


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_raw_outputs_equal_onnxruntime(
    client: triton.InferenceServerClient,
    v2_server: V2Server,
    cases: dict[str, Case],
    name: str,
    binary: bool,
) -> None:
    case = cases[name]
    batch = _batch(case)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in case.output_names]
    result = client.infer(
        name,
        [_input(case, batch, binary)],
        outputs=outputs,
        request_id="req-1",
        headers=v2_server.headers,
    )
    response = result.get_response()
    assert response["model_name"] == name and response["model_version"] == case.card.version
    assert response["id"] == "req-1"
    for got_name, want in zip(case.output_names, case.direct(batch), strict=True):
        got = result.as_numpy(got_name)
        assert got is not None and got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_no_requested_outputs_means_every_graph_output(
    client: triton.InferenceServerClient, v2_server: V2Server, cases: dict[str, Case], name: str
) -> None:
    case = cases[name]
    result = client.infer(name, [_input(case, case.tensor, True)], headers=v2_server.headers)
    assert [o["name"] for o in result.get_response()["outputs"]] == case.output_names
    np.testing.assert_array_equal(
        result.as_numpy(case.output_names[0]), case.direct(case.tensor)[0]
    )


def test_compressed_request_and_response(
    client: triton.InferenceServerClient, v2_server: V2Server, cases: dict[str, Case]
) -> None:
    case = cases["covid_ct"]
    want = case.direct(case.tensor)[0]
    for algorithm in ("gzip", "deflate"):
        for binary in (False, True):
            result = client.infer(
                case.name,
                [_input(case, case.tensor, binary)],
                headers=v2_server.headers,
                request_compression_algorithm=algorithm,
                response_compression_algorithm=algorithm,
            )
            np.testing.assert_array_equal(result.as_numpy(case.output_names[0]), want)


# --------------------------------------------------------------------------- the decision


def _upload(v2_server: V2Server, case: Case, point: str) -> dict[str, Any]:
    r = httpx.post(
        v2_server.url + case.endpoint,
        content=case.upload,
        params={"operating_point": point},
        headers=v2_server.headers,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_postprocessed_outputs_equal_the_upload_endpoint(
    client: triton.InferenceServerClient,
    v2_server: V2Server,
    cases: dict[str, Case],
    name: str,
    binary: bool,
) -> None:
    case = cases[name]
    segmenter = case.card.task == "binary_segmentation"
    for point in sorted(case.card.operating_points):
        answer = _upload(v2_server, case, point)
        params: dict[str, Any] = {"medserve_postprocess": True, "operating_point": point}
        if segmenter:
            params["medserve_mask_height"], params["medserve_mask_width"] = case.image_shape
        names = [*case.output_names, *POSTPROCESSED, *(["mask"] if segmenter else []), *OOD]
        result = client.infer(
            name,
            [_input(case, case.tensor, binary)],
            outputs=[triton.InferRequestedOutput(n, binary_data=binary) for n in names],
            parameters=params,
            headers=v2_server.headers,
        )
        assert result.get_response()["parameters"] == {"operating_point": point}
        probability = result.as_numpy("probability")
        assert probability.dtype == np.float64 and probability.shape == (1,)
        assert round(float(probability[0]), 6) == answer["probability"]
        assert result.as_numpy("positive").tolist() == [answer["positive"]]
        assert result.as_numpy("threshold").tolist() == [answer["operating_point"]["threshold"]]
        label = result.as_numpy("label")[0]
        assert (label.decode() if isinstance(label, bytes) else label) == answer["label"]
        score = result.as_numpy("ood_score")
        assert score.dtype == np.float64 and round(float(score[0]), 4) == answer["ood"]["score"]
        assert result.as_numpy("in_distribution").tolist() == [answer["ood"]["in_distribution"]]
        if segmenter:
            mask = result.as_numpy("mask")
            assert mask.dtype == np.uint8 and mask.shape == (1, *case.image_shape)
            rle = answer["mask"]["rle"]
            want = media.decode_rle(rle["counts"], *rle["size"])
            np.testing.assert_array_equal(mask[0].astype(bool), want)
            assert int(mask.sum()) == answer["mask"]["area_px"]


def test_a_segmenter_mask_is_not_trivially_empty(
    client: triton.InferenceServerClient, v2_server: V2Server, cases: dict[str, Case]
) -> None:
    """The mask comparison above means something: on at least one model some pixel is set
    at the lowest threshold, and the mask at the model's size is the default."""
    areas = []
    for name in ("brain_tumor_mri", "phantom_tumor_xray"):
        case = cases[name]
        points = case.card.operating_points
        low = min(points, key=lambda p: points[p].threshold)
        result = client.infer(
            name,
            [_input(case, case.tensor, True)],
            parameters={"medserve_postprocess": True, "operating_point": low},
            headers=v2_server.headers,
        )
        mask = result.as_numpy("mask")
        assert mask.shape == (1, *case.card.input.preprocessing.size)
        areas.append(int(mask.sum()))
    assert max(areas) > 0, areas


def test_batch_postprocesses_each_item(
    client: triton.InferenceServerClient, v2_server: V2Server, cases: dict[str, Case]
) -> None:
    case = cases["pneumonia_xray"]
    batch = _batch(case, 3)
    result = client.infer(
        case.name,
        [_input(case, batch, True)],
        parameters={"medserve_postprocess": True},
        headers=v2_server.headers,
    )
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == [*case.output_names, *POSTPROCESSED, *OOD]
    assert result.as_numpy("probability").shape == (3,)
    single = client.infer(
        case.name,
        [_input(case, batch[2:3], True)],
        parameters={"medserve_postprocess": True},
        headers=v2_server.headers,
    )
    assert result.as_numpy("probability")[2] == single.as_numpy("probability")[0]


# --------------------------------------------------------------------------- errors


def _status(exc: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(exc.value.status())


def test_unknown_model(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    h = v2_server.headers
    assert not client.is_model_ready("no_such_model", headers=h)
    with pytest.raises(InferenceServerException) as exc:
        client.get_model_metadata("no_such_model", headers=h)
    assert _status(exc) == "404"
    x = np.zeros((1, 4), dtype=np.float32)
    tensor = triton.InferInput("image", [1, 4], "FP32")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as exc:
        client.infer("no_such_model", [tensor], headers=h)
    assert _status(exc) == "404"
    with pytest.raises(InferenceServerException) as exc:
        client.infer("pneumonia_xray", [tensor], model_version="0.0.0", headers=h)
    assert _status(exc) == "404"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_wrong_shape_and_datatype(
    client: triton.InferenceServerClient, v2_server: V2Server, cases: dict[str, Case], binary: bool
) -> None:
    case = cases["pneumonia_xray"]
    wrong_shape = np.zeros((1, 64, 64, 1), dtype=np.float32)
    with pytest.raises(InferenceServerException) as exc:
        client.infer(case.name, [_input(case, wrong_shape, binary)], headers=v2_server.headers)
    assert _status(exc) == "400" and "shape" in exc.value.message()
    fp64 = triton.InferInput(case.input_name, list(case.tensor.shape), "FP64")
    fp64.set_data_from_numpy(case.tensor.astype(np.float64), binary_data=binary)
    with pytest.raises(InferenceServerException) as exc:
        client.infer(case.name, [fp64], headers=v2_server.headers)
    assert _status(exc) == "400" and "datatype" in exc.value.message()
    wrong_name = triton.InferInput("not_the_input", list(case.tensor.shape), "FP32")
    wrong_name.set_data_from_numpy(case.tensor, binary_data=binary)
    with pytest.raises(InferenceServerException) as exc:
        client.infer(case.name, [wrong_name], headers=v2_server.headers)
    assert _status(exc) == "400"


def test_bad_parameters_and_outputs(
    client: triton.InferenceServerClient, v2_server: V2Server, cases: dict[str, Case]
) -> None:
    case = cases["brain_tumor_mri"]
    inputs = [_input(case, case.tensor, True)]
    h = v2_server.headers
    attempts: list[dict[str, Any]] = [
        {"parameters": {"medserve_postprocess": True, "operating_point": "no_such_point"}},
        {"parameters": {"medserve_postprocess": "yes"}},
        {"parameters": {"medserve_postprocess": True, "medserve_mask_height": 0}},
        {"outputs": [triton.InferRequestedOutput("probability")]},  # needs postprocess
        {"outputs": [triton.InferRequestedOutput("no_such_output")]},
        {"outputs": [triton.InferRequestedOutput(case.output_names[0], class_count=3)]},
    ]
    for kwargs in attempts:
        with pytest.raises(InferenceServerException) as exc:
            client.infer(case.name, inputs, headers=h, **kwargs)
        assert _status(exc) == "400", (kwargs, exc.value)


@pytest.fixture
def mangle(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Change what tritonclient sends: ``cut`` bytes off the body's end, or add ``extra`` to
    the Inference-Header-Content-Length it declares."""
    how: dict[str, Any] = {"cut": 0, "extra": 0}
    real = triton_client_module._get_inference_request

    def fake(*args: Any, **kwargs: Any) -> tuple[bytes, int | None]:
        body, json_size = real(*args, **kwargs)
        body = body[: len(body) - how["cut"]]
        return body, None if json_size is None else json_size + how["extra"]

    monkeypatch.setattr(triton_client_module, "_get_inference_request", fake)
    yield how


def test_truncated_binary_body(
    client: triton.InferenceServerClient,
    v2_server: V2Server,
    cases: dict[str, Case],
    mangle: dict[str, Any],
) -> None:
    case = cases["pneumonia_xray"]
    mangle["cut"] = 100
    with pytest.raises(InferenceServerException) as exc:
        client.infer(case.name, [_input(case, case.tensor, True)], headers=v2_server.headers)
    assert _status(exc) == "400" and "truncated" in exc.value.message()


def test_header_length_past_the_body(
    client: triton.InferenceServerClient,
    v2_server: V2Server,
    cases: dict[str, Case],
    mangle: dict[str, Any],
) -> None:
    case = cases["pneumonia_xray"]
    mangle["extra"] = 4 * case.tensor.size + 1
    with pytest.raises(InferenceServerException) as exc:
        client.infer(case.name, [_input(case, case.tensor, True)], headers=v2_server.headers)
    assert _status(exc) == "400" and "past the end" in exc.value.message()
    mangle["extra"] = 3  # inside the body: the JSON header is cut short or has bytes too many
    with pytest.raises(InferenceServerException) as exc:
        client.infer(case.name, [_input(case, case.tensor, True)], headers=v2_server.headers)
    assert _status(exc) == "400"


def test_auth_and_limits_answer_in_the_protocol(
    client: triton.InferenceServerClient, v2_server: V2Server, cases: dict[str, Case]
) -> None:
    case = cases["covid_ct"]
    with pytest.raises(InferenceServerException) as exc:
        client.infer(case.name, [_input(case, case.tensor, True)])  # no key
    assert _status(exc) == "401" and "API key" in exc.value.message()
    with pytest.raises(InferenceServerException) as exc:
        client.get_model_metadata(case.name, headers={"X-API-Key": "wrong-key-0123456789"})
    assert _status(exc) == "401"
    # a gzip body that inflates past the body limit
    big = np.zeros((MAX_UPLOAD // (4 * case.tensor.size) + 1, *case.tensor.shape[1:]), "f4")
    with pytest.raises(InferenceServerException) as exc:
        client.infer(
            case.name,
            [_input(case, big, True)],
            headers=v2_server.headers,
            request_compression_algorithm="gzip",
        )
    assert _status(exc) == "413"


def test_body_over_the_limit_is_413_with_error(v2_server: V2Server) -> None:
    r = httpx.post(
        v2_server.url + "/v2/models/covid_ct/infer",
        content=b"\0" * (MAX_UPLOAD + 1),
        headers={**v2_server.headers, "Inference-Header-Content-Length": "2"},
        timeout=60,
    )
    assert r.status_code == 413
    assert "limit" in r.json()["error"]


def test_no_answer_is_a_500(v2_server: V2Server) -> None:
    """Malformed bodies of every kind: a 4xx with an ``error`` string, never a 500."""
    h = {**v2_server.headers}
    url = v2_server.url + "/v2/models/pneumonia_xray/infer"
    shape = [1, 128, 128, 1]
    bodies: list[tuple[bytes, dict[str, str]]] = [
        (b"", {}),
        (b"not json", {}),
        (b"[1, 2]", {}),
        (b'{"inputs": []}', {}),
        (b'{"inputs": [{"name": "image", "shape": [1], "datatype": "FP32"}]}', {}),
        (b'{"inputs": [{"name": "image", "shape": "x", "datatype": "FP32", "data": []}]}', {}),
        (
            b'{"inputs": [{"name": "image", "shape": [1,128,128,1], "datatype": "FP32", '
            b'"data": ["a"]}]}',
            {},
        ),
        (
            b'{"inputs": [{"name": "image", "shape": [1,128,128,1], "datatype": "XX", '
            b'"data": [1]}]}',
            {},
        ),
        (
            b'{"inputs": [{"name": "image", "shape": [1,128,128,1], "datatype": "FP32", '
            b'"data": [1, 2]}]}',
            {},
        ),
        (b"{}", {"Inference-Header-Content-Length": "-1"}),
        (b"{}", {"Inference-Header-Content-Length": "abc"}),
        (b"\x1f\x8b garbage", {"Content-Encoding": "gzip"}),
        (b"{}", {"Content-Encoding": "br"}),
        (b'{"id": 5, "inputs": []}', {}),
    ]
    nan = np.full(shape, np.nan, dtype=np.float32).tobytes()
    header = (
        b'{"inputs": [{"name": "image", "shape": [1,128,128,1], "datatype": "FP32", '
        b'"parameters": {"binary_data_size": %d}}]}' % len(nan)
    )
    bodies.append((header + nan, {"Inference-Header-Content-Length": str(len(header))}))
    bodies.append((header + nan + b"xx", {"Inference-Header-Content-Length": str(len(header))}))
    for body, extra in bodies:
        r = httpx.post(url, content=body, headers={**h, **extra}, timeout=30)
        assert r.status_code == 400, (body[:80], r.status_code, r.text)
        assert isinstance(r.json()["error"], str) and r.json()["error"]
    for path in ("/v2/nothing", "/v2/models/pneumonia_xray/nothing"):
        r = httpx.get(v2_server.url + path, headers=h)
        assert r.status_code == 404 and r.json()["error"]
    r = httpx.get(v2_server.url + "/v2/models/pneumonia_xray/infer", headers=h)
    assert r.status_code == 405 and r.json()["error"]


def test_metrics_and_audit_see_v2(v2_server: V2Server, cases: dict[str, Case]) -> None:
    case = cases["pneumonia_xray"]
    c = triton.InferenceServerClient(v2_server.host_port)
    result = c.infer(
        case.name,
        [_input(case, case.tensor, True)],
        parameters={"medserve_postprocess": True},
        headers={**v2_server.headers, "X-Request-ID": "v2-audit-check"},
    )
    c.close()
    assert result.as_numpy("probability") is not None
    metrics = httpx.get(v2_server.url + "/metrics").text
    assert 'endpoint="/v2/models/{name}/infer"' in metrics
    assert 'medserve_inference_duration_seconds_count{model="pneumonia_xray"}' in metrics
    log = v2_server.log.read_text()
    assert '"path":"/v2/models/{name}/infer"' in log
    rows = httpx.get(v2_server.url + "/audit", headers={"X-API-Key": v2_server.admin_key}).json()[
        "rows"
    ]
    row = next(r for r in rows if r["request_id"] == "v2-audit-check")
    assert row["endpoint"] == "/v2/models/pneumonia_xray/infer" and row["status"] == "ok"
    assert row["key_name"] == "v2test"
    assert row["model"]["name"] == case.name and row["upload_sha256"]
    assert row["summary"]["probability"] == [round(float(result.as_numpy("probability")[0]), 6)]
