"""Reading an upload into memory: multipart ``file`` parts or the raw body.

Parsed as the bytes arrive (python-multipart's streaming parser), never spooled to disk: nothing
uploaded touches the file system. The body-size limit is enforced by the middleware underneath.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.errors import BadRequest
from app.headers import header

FILE_FIELD = b"file"
MAX_FIELD_BYTES = 64 * 1024  # form fields other than files (nothing reads them)


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    is_file_field: bool = False


class _FormCollector:
    """Callbacks for MultipartParser that keep only the ``file`` parts, in order."""

    def __init__(self, max_parts: int) -> None:
        self.max_parts = max_parts
        self.count = 0
        self.files: list[bytes] = []
        self.finished = False
        self._part = _Part()
        self._field = b""
        self._value = b""

    def on_part_begin(self) -> None:
        self.count += 1
        if self.count > self.max_parts:
            raise BadRequest(f"too many parts in the multipart body (limit {self.max_parts})")
        self._part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._part.headers[self._field.strip().lower()] = self._value.strip()
        self._field, self._value = b"", b""

    def on_headers_finished(self) -> None:
        disposition = self._part.headers.get(b"content-disposition")
        if disposition is None:
            raise BadRequest("a multipart part has no Content-Disposition header")
        _, params = parse_options_header(disposition)
        self._part.is_file_field = params.get(b"name") == FILE_FIELD

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        part.size += end - start
        if part.is_file_field:
            part.chunks.append(data[start:end])
        elif part.size > MAX_FIELD_BYTES:
            raise BadRequest("a form field other than `file` is too large")

    def on_part_end(self) -> None:
        if self._part.is_file_field:
            self.files.append(b"".join(self._part.chunks))
        self._part = _Part()

    def on_end(self) -> None:
        self.finished = True


async def read_upload(request: Request, max_parts: int) -> list[bytes]:
    """The uploaded files as bytes: every multipart ``file`` part, or the raw body as one file."""
    content_type = header(request.scope, b"content-type") or ""
    media_type, params = parse_options_header(content_type)
    try:
        if media_type != b"multipart/form-data":
            return [await request.body()]
        boundary = params.get(b"boundary")
        if not boundary or len(boundary) > 200:
            raise BadRequest("multipart body without a valid boundary")
        collector = _FormCollector(max_parts)
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": collector.on_part_begin,
                "on_header_field": collector.on_header_field,
                "on_header_value": collector.on_header_value,
                "on_header_end": collector.on_header_end,
                "on_headers_finished": collector.on_headers_finished,
                "on_part_data": collector.on_part_data,
                "on_part_end": collector.on_part_end,
                "on_end": collector.on_end,
            },
        )
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except MultipartParseError:
        raise BadRequest("the multipart body is malformed") from None
    except ClientDisconnect:
        raise BadRequest("the client disconnected before the upload finished") from None
    if not collector.finished:
        raise BadRequest("the multipart body ends before its closing boundary")
    if not collector.files:
        raise BadRequest("no `file` part in the multipart body")
    return collector.files
