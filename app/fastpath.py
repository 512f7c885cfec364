"""The upload routes' own ASGI stack, ahead of Starlette's and FastAPI's.

A ``POST`` to an upload path (``app.routes.common.lean_route``) goes through the service's own
middleware (request context, API key, body limit) straight to its route; everything else goes
through the app's whole stack as before. What the upload routes skip is what does nothing for
them: Starlette's ServerErrorMiddleware (the request context already answers an unhandled
error with a problem+json 500, and it is the outer one), FastAPI's exception telemetry
(OpenTelemetry, not configured here) and body-size layer (no ``max_body_size`` is set; the
service's own limit is the body-limit middleware), Starlette's ExceptionMiddleware (the route
maps exceptions itself, with the same handlers, set on the scope below), FastAPI's
AsyncExitStack (the lean routes have no dependencies) and the router's walk over every route
to find the path. Each of those layers is an await, a closure around ``send`` and a few
dictionary lookups; after a model's run has evicted the caches, the request paid for them
again on every upload (issue 18).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class UploadFastPath:
    """``app``'s middleware stack with the upload routes dispatched by their path first.

    ``wrap`` builds the service's own middleware around an ASGI app (the same classes, in the
    same order, as ``app.main`` adds them); ``handlers`` are the app's exception handlers,
    which the route applies as it would under Starlette's ExceptionMiddleware."""

    def __init__(
        self,
        stack: ASGIApp,
        routes: Sequence[Route],
        handlers: Mapping[Any, Callable[..., Any]],
        wrap: Callable[[ASGIApp], ASGIApp],
    ) -> None:
        self.stack = stack
        # as Starlette's ExceptionMiddleware files them: by exception class and by status
        # (the app's own handlers cover HTTPException, which that middleware adds by default)
        by_class = {k: v for k, v in handlers.items() if not isinstance(k, int)}
        by_status = {k: v for k, v in handlers.items() if isinstance(k, int)}
        self._handlers = (by_class, by_status)
        self._routes = {route.path: route for route in routes}
        self._fast = wrap(self._route)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes[scope["path"]]
        scope["starlette.exception_handlers"] = self._handlers
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        scope["route"] = route
        await route.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in self._routes
            and not scope.get("root_path")
        ):
            await self._fast(scope, receive, send)
            return
        await self.stack(scope, receive, send)
