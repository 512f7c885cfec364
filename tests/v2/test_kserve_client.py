"""kserve's own ``InferenceRESTClient`` (protocol v2), unmodified, against a real medserve."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from tests.v2.conftest import Case, V2Server

kserve = pytest.importorskip("kserve")
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig  # noqa: E402
from kserve.protocol.infer_type import RequestedOutput  # noqa: E402


async def _session(server: V2Server, case: Case) -> None:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
    try:
        assert await client.is_server_live(server.url)
        assert await client.is_server_ready(server.url)
        assert await client.is_model_ready(server.url, case.name, headers=server.headers)
        assert not await client.is_model_ready(server.url, "no_such_model", headers=server.headers)
        want = case.direct(case.tensor)[0]
        for binary in (False, True):
            tensor = InferInput(case.input_name, list(case.tensor.shape), "FP32")
            tensor.set_data_from_numpy(case.tensor, binary_data=binary)
            request = InferRequest(
                case.name,
                [tensor],
                request_id="kserve-1",
                parameters={"medserve_postprocess": True},
                request_outputs=[
                    RequestedOutput(n, {"binary_data": binary})
                    for n in (case.output_names[0], "probability", "positive")
                ],
            )
            response = await client.infer(
                server.url, request, model_name=case.name, headers=server.headers
            )
            assert response.model_name == case.name and response.id == "kserve-1"
            outputs = {o.name: o.as_numpy() for o in response.outputs}
            np.testing.assert_array_equal(outputs[case.output_names[0]], want)
            assert 0.0 <= float(outputs["probability"][0]) <= 1.0
            assert outputs["positive"].dtype == np.bool_
        bad = InferInput(case.input_name, [1, 2], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 2), np.float32), binary_data=False)
        with pytest.raises(httpx.HTTPStatusError) as exc:
            await client.infer(
                server.url,
                InferRequest(case.name, [bad]),
                model_name=case.name,
                headers=server.headers,
            )
        assert exc.value.response.status_code == 400
        assert "shape" in exc.value.response.json()["error"]
    finally:
        await client.close()


def test_kserve_rest_client_v2(v2_server: V2Server, cases: dict[str, Case]) -> None:
    asyncio.run(_session(v2_server, cases["phantom_tumor_xray"]))
