"""A request header read off the ASGI scope's list of raw headers.

What ``starlette.datastructures.Headers(scope=scope).get(name)`` gives (the first header of
that name, decoded as latin-1; the server gives the names in lower case), from a dictionary of
the raw headers made once per request and kept on the scope, instead of a ``Headers`` object
per lookup scanning the list and raising and catching a ``KeyError`` for each header the
request does not carry. The upload path looks up nine headers per request (issue 18).
"""

from __future__ import annotations

from starlette.types import Scope

_KEY = "medserve.headers"  # scope key: (the raw header list it was made from, its dictionary)


def header(scope: Scope, name: bytes) -> str | None:
    """The request's first ``name`` header (``name`` in lower case), or None."""
    raw = scope["headers"]
    kept = scope.get(_KEY)
    if kept is None or kept[0] is not raw:  # first lookup, or the list was replaced since
        # reversed: where a name occurs twice the first occurrence is the one kept
        kept = (raw, dict(reversed(raw if isinstance(raw, list | tuple) else list(raw))))
        scope[_KEY] = kept
    value: bytes | None = kept[1].get(name)
    return None if value is None else value.decode("latin-1")
