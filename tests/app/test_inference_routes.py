"""The inference routes end to end on tiny real ONNX models whose answers are known by hand."""

from __future__ import annotations

import asyncio
import base64
import io
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.errors import Overloaded
from app.imaging.encode import rle_decode
from app.limiter import InferenceLimiter
from app.main import create_app
from app.metrics import Metrics
from tests.app.test_http_basics import assert_problem
from tests.tiny_model import write_tiny_model


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[TestClient]:
    write_tiny_model(tmp_path, name="pneumonia_xray")
    write_tiny_model(tmp_path, name="brain_tumor_mri", segmenter=True)
    with TestClient(create_app(Settings(model_dir=tmp_path))) as client:
        yield client


HALF = np.zeros((16, 16), np.uint8)
HALF[:, 8:] = 255  # after min-max and an area resize to 8x8: mean 0.5 -> logit 0


def test_classification_contract(served: TestClient) -> None:
    resp = served.post("/classify/xray", content=png_bytes(HALF), headers={"X-Request-ID": "r1"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["request_id"] == "r1"
    assert body["model"]["name"] == "pneumonia_xray" and len(body["model"]["sha256"]) == 64
    assert body["input"]["format"] == "png" and body["input"]["shape"] == [16, 16]
    assert body["input"]["spacing_mm"] is None and len(body["input"]["sha256"]) == 64
    assert body["probability"] == pytest.approx(0.5, abs=1e-6)
    assert body["positive"] is True and body["label"] == "PNEUMONIA"
    assert body["operating_point"] == {
        "name": "balanced",
        "threshold": 0.5,
        "sensitivity": 0.9,
        "specificity": 0.9,
        "precision": None,
    }
    assert body["warnings"] == []
    assert set(body["timing_ms"]) == {"decode", "preprocess", "inference", "postprocess", "total"}


def test_calibrated_vs_uncalibrated(served: TestClient) -> None:
    dark = np.zeros((16, 16), np.uint8)
    dark[0, 0] = 255  # min-max -> nearly all zeros: mean 1/256 after area resize
    body = served.post(
        "/classify/xray?operating_point=high_sensitivity", content=png_bytes(dark)
    ).json()
    logit = 4.0 * (1 / 256 - 0.5)
    assert body["uncalibrated_probability"] == pytest.approx(sigmoid(logit), abs=1e-5)
    assert body["probability"] == pytest.approx(sigmoid(logit / 2.0), abs=1e-5)  # T = 2
    assert body["positive"] == (body["probability"] >= 0.2)
    assert body["operating_point"]["name"] == "high_sensitivity"


def test_multipart_equals_raw(served: TestClient) -> None:
    data = png_bytes(HALF)
    raw = served.post("/classify/xray", content=data).json()
    multi = served.post("/classify/xray", files={"file": ("x.png", data, "image/png")}).json()
    assert raw["probability"] == multi["probability"]
    assert raw["input"]["sha256"] == multi["input"]["sha256"]


def test_request_errors(served: TestClient) -> None:
    body = assert_problem(
        served.post("/classify/xray?operating_point=nope", content=b"x"),
        422,
        "unknown_operating_point",
    )
    assert "balanced" in str(body["detail"]) and "high_sensitivity" in str(body["detail"])
    assert_problem(served.post("/classify/xray", files={"other": ("a", b"1")}), 400, "bad_request")
    assert_problem(
        served.post(
            "/classify/xray", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}
        ),
        400,
        "bad_request",
    )
    assert_problem(served.post("/classify/ct", content=b"x"), 503, "model_not_ready")
    assert served.post("/classify/ct", content=b"x").headers["retry-after"]
    assert_problem(
        served.post("/segment/mri?mask_format=jpeg", content=b"x"), 422, "validation_error"
    )


def test_too_many_parts(served: TestClient) -> None:
    files = [("file", (f"{i}.dcm", b"x", "application/dicom")) for i in range(3000)]
    assert_problem(served.post("/classify/xray", files=files), 400, "bad_request")


def test_inference_exception_is_a_bare_500_and_service_recovers(
    served: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = served.app.state.registry.models["pneumonia_xray"]  # type: ignore[attr-defined]
    original = entry.run
    canary = "SECRET-DETAIL-XYZ"

    def broken(batch: np.ndarray) -> np.ndarray:
        entry.run = original
        raise RuntimeError(canary)

    entry.run = broken
    resp = served.post("/classify/xray", content=png_bytes(HALF))
    body = assert_problem(resp, 500, "internal_error")
    assert canary not in resp.text and body["detail"] == "Internal server error"
    err = capsys.readouterr().err
    assert canary not in err and resp.headers["x-request-id"] in err
    assert served.post("/classify/xray", content=png_bytes(HALF)).status_code == 200


def test_segmentation_json(served: TestClient) -> None:
    image = np.zeros((16, 24), np.uint8)
    image[4:12, 6:18] = 255
    resp = served.post("/segment/mri?mask_format=both", content=png_bytes(image))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    mask = body["mask"]
    assert (mask["height"], mask["width"]) == (16, 24)
    decoded = rle_decode(mask["rle"])
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask["png_base64"])))) == 255
    assert np.array_equal(decoded, png)
    truth = image == 255
    dice = 2 * (decoded & truth).sum() / (decoded.sum() + truth.sum())
    assert dice > 0.8
    assert mask["area_px"] == int(decoded.sum())
    x0, y0, x1, y1 = mask["bbox"]
    assert abs(x0 - 6) <= 2 and abs(x1 - 17) <= 2 and abs(y0 - 4) <= 2 and abs(y1 - 11) <= 2
    assert mask["centroid"] == pytest.approx([11.5, 7.5], abs=1.0)
    assert mask["area_mm2"] is None and mask["centroid_mm"] is None
    assert body["positive"] is True and body["label"] == "LESION"


def test_segmentation_empty_and_formats(served: TestClient) -> None:
    empty = np.full((10, 10), 7, np.uint8)  # flat: min-max gives all zeros -> no lesion
    body = served.post("/segment/mri", content=png_bytes(empty)).json()
    assert body["mask"]["area_px"] == 0 and body["mask"]["bbox"] is None
    assert body["mask"]["rle"]["counts"] == [100] and body["mask"]["png_base64"] is None
    assert body["positive"] is False
    none = served.post("/segment/mri?mask_format=none", content=png_bytes(empty)).json()
    assert none["mask"]["rle"] is None and none["mask"]["png_base64"] is None


def test_repeated_queries_and_accept_headers_answer_each_as_the_first_time(
    served: TestClient,
) -> None:
    """The validated query and the negotiated representation are kept per query string and
    per Accept header: each request still gets its own answer, and a bad one its error."""
    data = png_bytes(np.full((10, 10), 7, np.uint8))
    for _ in range(3):
        bad = served.post("/segment/mri?mask_format=jpeg", content=data)
        assert_problem(bad, 422, "validation_error")
        assert "mask_format" in bad.json()["detail"]
        none = served.post("/segment/mri?mask_format=none", content=data).json()
        assert none["mask"]["rle"] is None and none["mask"]["png_base64"] is None
        both = served.post("/segment/mri?mask_format=both", content=data).json()
        assert both["mask"]["rle"] is not None and both["mask"]["png_base64"] is not None
        refused = served.post("/segment/mri", content=data, headers={"Accept": "text/csv"})
        assert_problem(refused, 406, "not_acceptable")
        png = served.post("/segment/mri", content=data, headers={"Accept": "image/png"})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        # the same header on another endpoint: its own offers decide
        ct = served.post("/classify/xray", content=data, headers={"Accept": "image/png"})
        assert_problem(ct, 406, "not_acceptable")


def test_long_queries_and_accept_headers_are_answered_but_not_kept(served: TestClient) -> None:
    """A query string or Accept header longer than the cache's key limit (the client's, of
    any length) is validated and negotiated every time and never held in memory."""
    from app.routes import common

    data = png_bytes(np.full((10, 10), 7, np.uint8))
    pad = "&pad=" + "x" * 400
    accept = ", ".join(f"text/x-{i}" for i in range(60)) + ", image/png"
    assert len(pad) > common._CACHED_MAX and len(accept) > common._CACHED_MAX
    queries, choices = common._validated_query.cache_info(), common._preferred.cache_info()
    for _ in range(2):
        bad = served.post("/segment/mri?mask_format=jpeg" + pad, content=data)
        assert_problem(bad, 422, "validation_error")
        none = served.post("/segment/mri?mask_format=none" + pad, content=data).json()
        assert none["mask"]["rle"] is None
        png = served.post(
            "/segment/mri?mask_format=none" + pad, content=data, headers={"Accept": accept}
        )
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        refused = served.post("/segment/mri", content=data, headers={"Accept": accept[:-11]})
        assert_problem(refused, 406, "not_acceptable")
    assert common._validated_query.cache_info().currsize <= queries.currsize + 1  # "" only
    assert common._preferred.cache_info().currsize <= choices.currsize + 1  # "" only


def test_segmentation_png_and_overlay(served: TestClient) -> None:
    image = np.zeros((12, 12), np.uint8)
    image[2:6, 2:6] = 255
    resp = served.post("/segment/mri", content=png_bytes(image), headers={"Accept": "image/png"})
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    mask = np.asarray(Image.open(io.BytesIO(resp.content)))
    assert mask.shape == (12, 12) and set(np.unique(mask)) <= {0, 255}
    assert resp.headers["x-medserve-positive"] == "true"
    over = served.post(
        "/segment/mri?overlay=true", content=png_bytes(image), headers={"Accept": "image/png"}
    )
    rgb = np.asarray(Image.open(io.BytesIO(over.content)))
    assert rgb.shape == (12, 12, 3) and (rgb == [255, 48, 48]).all(axis=2).any()


def test_limiter_refuses_past_capacity() -> None:
    limiter = InferenceLimiter(max_concurrent=1, max_queued=1, retry_after=3, metrics=Metrics())

    async def scenario() -> None:
        import threading

        gate = threading.Event()
        first = asyncio.create_task(limiter.run(gate.wait, 5))
        second = asyncio.create_task(limiter.run(gate.wait, 5))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as info:
            await limiter.run(gate.wait, 5)
        assert info.value.headers["Retry-After"] == "3"
        gate.set()
        assert await first and await second
        assert limiter.pending == 0
        assert await limiter.run(lambda: 42) == 42

    asyncio.run(scenario())


def test_limiter_runs_in_its_threads_with_the_callers_context_and_a_cancel_keeps_the_slot() -> None:
    import contextvars
    import threading

    limiter = InferenceLimiter(max_concurrent=1, max_queued=2, retry_after=3, metrics=Metrics())
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def where() -> tuple[str, str]:
        return var.get(), threading.current_thread().name

    async def scenario() -> None:
        var.set("request-1")
        value, thread = await limiter.run(where)
        assert value == "request-1" and thread.startswith("medserve-infer")
        gate, started, finished = threading.Event(), threading.Event(), threading.Event()

        def slow() -> None:
            started.set()
            gate.wait(5)
            finished.set()

        first = asyncio.create_task(limiter.run(slow))
        await asyncio.sleep(0)
        assert await asyncio.to_thread(started.wait, 5)
        first.cancel()
        await asyncio.sleep(0.05)
        second = asyncio.create_task(limiter.run(lambda: finished.is_set()))
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()  # the slot is held while slow() runs
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second is True  # it ran only once slow() had returned
        limiter.close()
        assert await limiter.run(lambda: 42) == 42  # after close: new threads
        limiter.close()

    asyncio.run(scenario())


def test_upload_paths_are_dispatched_by_their_lean_routes_which_answer_as_fastapis_do(
    served: TestClient,
) -> None:
    """Each upload path is served by a plain Starlette route ahead of FastAPI's (whose route
    stays for the OpenAPI document); without the lean routes FastAPI's give the same answers,
    the same 422 for a bad parameter, the same 405."""
    from starlette.routing import Route

    app = served.app
    routes = app.router.routes  # type: ignore[attr-defined]
    lean = [r for r in routes if type(r) is Route and r.path.startswith(("/classify", "/segment"))]
    assert {r.path for r in lean} == {
        "/classify/xray",
        "/classify/ct",
        "/segment/mri",
        "/segment/xray",
    }
    assert routes[: len(lean)] == lean
    image = np.zeros((16, 16), np.uint8)
    image[4:10, 5:12] = 255
    calls = [
        ("/segment/mri?mask_format=both&operating_point=balanced", png_bytes(image), 200),
        ("/segment/mri?overlay=1&unknown=x", png_bytes(image), 200),
        ("/classify/xray?explain=occlusion", png_bytes(HALF), 200),
        ("/segment/mri?mask_format=jpeg", b"x", 422),
        ("/classify/xray?operating_point=" + "x" * 65, b"x", 422),
        ("/classify/xray?explain=lime", b"x", 422),
    ]

    def answers() -> list[object]:
        out: list[object] = []
        for path, body, status in calls:
            resp = served.post(path, content=body, headers={"X-Request-ID": "same"})
            assert resp.status_code == status, (path, resp.text)
            doc = resp.json()
            doc.pop("timing_ms", None)
            out.append(doc)
        resp = served.get("/segment/mri", headers={"X-Request-ID": "same"})
        out.append((resp.status_code, resp.headers.get("allow"), resp.json()))
        return out

    lean_answers = answers()
    metrics = served.get("/metrics").text  # the lean routes' answers under their templates
    assert 'medserve_requests_total{endpoint="/segment/mri",status="200"} 2.0' in metrics
    assert 'medserve_requests_total{endpoint="/classify/xray",status="422"} 2.0' in metrics
    del routes[: len(lean)]
    app.middleware_stack = app.middleware_stack.stack  # type: ignore[attr-defined]
    assert answers() == lean_answers  # FastAPI's routes, through the whole stack
    assert lean_answers[-1][0] == 405


def _upload_calls(served: TestClient) -> list[object]:
    """Answers of the upload routes, good and bad: 200s, 422 for a bad parameter, 415, 413
    from the body limit (declared and counted), 401 from the API key, a 405 for GET, and an
    unhandled error's 500; status, the headers that matter and the body (without timings)."""
    image = np.zeros((16, 16), np.uint8)
    image[4:10, 5:12] = 255
    key = {"X-API-Key": "fast-path-key-0123456789"}
    calls: list[tuple[str, str, bytes, dict[str, str]]] = [
        ("POST", "/segment/mri?mask_format=both", png_bytes(image), key),
        ("POST", "/classify/xray?explain=occlusion", png_bytes(HALF), key),
        ("POST", "/segment/mri?mask_format=jpeg", b"x", key),
        ("POST", "/classify/xray", b"GIF89a not an image", {**key, "Content-Type": "image/gif"}),
        ("POST", "/classify/xray", b"x" * 5000, key),
        ("POST", "/classify/ct", png_bytes(HALF), key),  # no such model here: 503
        ("POST", "/classify/xray", png_bytes(HALF), {}),
        ("GET", "/segment/mri", b"", key),
        ("POST", "/segment/xray", b"boom", key),
    ]
    out: list[object] = []
    for method, path, body, headers in calls:
        resp = served.request(
            method, path, content=body or None, headers={**headers, "X-Request-ID": "same"}
        )
        doc = resp.json()
        doc.pop("timing_ms", None)
        wanted = ("content-type", "x-request-id", "www-authenticate", "allow", "connection")
        out.append((resp.status_code, {h: resp.headers.get(h) for h in wanted}, doc))
    return out


def test_the_upload_routes_fast_path_answers_as_the_whole_stack_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A POST to an upload path goes through the service's own middleware straight to its
    route (``app.fastpath``), and nothing else takes that path; every answer, good or bad,
    is the one the app's whole stack gives."""
    import app.routes.segment as segment_routes

    write_tiny_model(tmp_path, name="pneumonia_xray")
    write_tiny_model(tmp_path, name="brain_tumor_mri", segmenter=True)
    write_tiny_model(tmp_path, name="phantom_tumor_xray", segmenter=True)
    real = segment_routes.segment

    def failing(entry: object, parts: list[bytes], *args: object, **kwargs: object) -> object:
        if parts and parts[0] == b"boom":
            raise RuntimeError("a bug")
        return real(entry, parts, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(segment_routes, "segment", failing)
    settings = Settings(
        model_dir=tmp_path,
        api_keys="fast-path-key-0123456789",  # type: ignore[arg-type]
        max_upload_bytes=4096,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as served:
        stack = served.app.middleware_stack  # type: ignore[attr-defined]
        whole = stack.stack
        seen: list[str] = []

        async def recording(scope: dict[str, object], receive: object, send: object) -> None:
            if scope["type"] == "http":
                seen.append(f"{scope['method']} {scope['path']}")
            await whole(scope, receive, send)

        stack.stack = recording
        fast = _upload_calls(served)
        assert seen == ["GET /segment/mri"]  # only the GET went through the whole stack
        served.app.middleware_stack = whole  # type: ignore[attr-defined]
        assert _upload_calls(served) == fast
    statuses = [status for status, _, _ in fast]  # type: ignore[misc]
    assert statuses == [200, 200, 422, 415, 413, 503, 401, 405, 500]


def test_behind_a_root_path_uploads_take_the_whole_stack_and_answer_the_same(
    tmp_path: Path,
) -> None:
    """Behind a proxy prefix (``root_path``) the fast path steps aside: the upload goes through
    the app's whole stack, and answers as it does without the prefix."""
    write_tiny_model(tmp_path, name="pneumonia_xray")
    app = create_app(Settings(model_dir=tmp_path))
    with TestClient(app, root_path="/api") as served:
        stack = served.app.middleware_stack  # type: ignore[attr-defined]
        whole = stack.stack
        seen: list[str] = []

        async def recording(scope: dict[str, object], receive: object, send: object) -> None:
            if scope["type"] == "http":
                seen.append(str(scope["path"]))
            await whole(scope, receive, send)

        stack.stack = recording
        resp = served.post("/classify/xray", content=png_bytes(HALF))
        assert resp.status_code == 200, resp.text
        assert len(seen) == 1 and seen[0].endswith("/classify/xray")
    with TestClient(create_app(Settings(model_dir=tmp_path))) as plain:
        other = plain.post("/classify/xray", content=png_bytes(HALF))
    a, b = resp.json(), other.json()
    for doc in (a, b):
        doc.pop("timing_ms"), doc.pop("request_id")
    assert a == b
