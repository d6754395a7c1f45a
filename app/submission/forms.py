"""Multipart form parsing with text fields decoded as strict UTF-8.

Starlette decodes a text field that is not valid in the declared charset as Latin-1 instead
(b"\\xff\\xfe" became "ÿþ"): a client's wrong bytes were stored as other text without a word.
Here they are a 422 that names the field.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from app.plumbing.errors import InvalidRequest


class StrictUTF8MultiPartParser(MultiPartParser):
    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is not None:
            return super().on_part_end()
        try:
            value = bytes(part.data).decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidRequest(
                f"form field {part.field_name!r} is not UTF-8 text (byte {error.start}: "
                f"{bytes(part.data[error.start : error.start + 1])!r}); send UTF-8",
                code="invalid_encoding",
                details={"field": part.field_name},
            ) from None
        self.items.append((part.field_name, value))


async def read_multipart(request: Request, *, max_files: int, max_fields: int) -> FormData:
    """The request's multipart form (the caller closes it); 415 when it is not multipart, 400 when malformed."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("send multipart/form-data", code="unsupported_media_type", status=415)
    parser = StrictUTF8MultiPartParser(request.headers, request.stream(), max_files=max_files, max_fields=max_fields)
    try:
        return await parser.parse()
    except MultiPartException as error:
        raise InvalidRequest(error.message, code="bad_request", status=400) from None
