"""The page for trying the service in a browser: ``/`` and its assets under ``/ui/``.

Plain HTML, CSS and JavaScript shipped with the package (no build step, nothing fetched from
another origin). It holds no data: it calls the API with the key it is given, kept in memory.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse, HTMLResponse, Response

STATIC = Path(__file__).resolve().parents[1] / "static"
# The page and the model pages load nothing from elsewhere; the browser is told so too.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    """The page: pick a model, drop a file, read the answer."""
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


# ReDoc's bundle shows Redocly's logo from cdn.redoc.ly in its sidebar, and no option turns it
# off: the bundle is served with that one URL replaced by an empty data URL (the bundle then
# hides the broken image), so the page asks nothing of another origin. The policy says so too.
REDOC_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' blob:; worker-src 'self' blob:; font-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'"
)
_REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


@lru_cache(maxsize=1)
def _redoc_bundle() -> bytes:
    bundle = (Path(fastapi_offline.__file__).parent / "static" / "redoc.standalone.js").read_bytes()
    return bundle.replace(_REDOC_LOGO, b"data:,")


@router.get("/ui/redoc.standalone.js")
async def redoc_bundle() -> Response:
    return Response(_redoc_bundle(), media_type="text/javascript")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc from the package's assets (fastapi-offline), nothing from a CDN."""
    root = request.scope.get("root_path", "")
    page = get_redoc_html(
        openapi_url=f"{root}/openapi.json",
        title="medserve - ReDoc",
        redoc_js_url=f"{root}/ui/redoc.standalone.js",
        redoc_favicon_url=f"{root}/static-offline-docs/favicon.png",
        with_google_fonts=False,
    )
    page.headers.update({**SECURITY_HEADERS, "Content-Security-Policy": REDOC_CSP})
    return page


def mount_static(app: FastAPI) -> None:
    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")
