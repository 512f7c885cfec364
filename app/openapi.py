"""The OpenAPI document, adjusted to what the service really sends.

FastAPI documents errors as ``application/json`` with its own validation schema; every error here
is ``application/problem+json`` with the :class:`app.schemas.Problem` shape, so each error
response (and a catch-all ``4XX``/``5XX``) is rewritten to say so.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.schemas import Problem
from app.v2.schemas import InferenceRequest, V2Error

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_CONTENT = {"application/problem+json": {"schema": _PROBLEM_REF}}
# Open Inference Protocol paths answer {"error": ...} as JSON; the shared middleware's 401/413
# there are problem+json bodies that carry `error` too.
_V2_ERROR_CONTENT = {
    "application/json": {"schema": {"$ref": "#/components/schemas/V2Error"}},
    **_PROBLEM_CONTENT,
}


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with a cached generator that documents problem+json errors."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas["V2Error"] = V2Error.model_json_schema()
        request = InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(request.pop("$defs", {}))
        schemas["InferenceRequest"] = request
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for path, operations in doc.get("paths", {}).items():
            v2 = path == "/v2" or path.startswith("/v2/")
            content = _V2_ERROR_CONTENT if v2 else _PROBLEM_CONTENT
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status, response in responses.items():
                    if status[0] in "45":
                        response["content"] = content
                responses.setdefault("4XX", {"description": "Client error", "content": content})
                responses.setdefault("5XX", {"description": "Server error", "content": content})
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
