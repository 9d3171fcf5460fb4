"""Strict text fields in multipart forms: a field that is not valid text in the request's charset (UTF-8 unless
the Content-Type says otherwise) is a 400, like any other malformed form.

Starlette decodes such a field as Latin-1 instead, so a name sent as broken UTF-8 would be stored as mojibake
with no error; the raw bytes exist only inside its parser, so that is where the check goes.
"""

from __future__ import annotations

from starlette import requests
from starlette.formparsers import MultiPartException, MultiPartParser


class StrictMultiPartParser(MultiPartParser):
    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode(self._charset)
            except (UnicodeDecodeError, LookupError) as exc:
                # Starlette answers a MultiPartException with a 400 and closes the spooled files
                raise MultiPartException(f"form field {part.field_name!r} is not valid {self._charset} text") from exc
        super().on_part_end()


def install() -> None:
    """Make Starlette's Request build this parser (it looks the class up in `starlette.requests`; a Starlette
    that stops doing so fails tests/gateway/test_hostile_input.py::test_invalid_utf8_in_a_form_field_is_refused)."""
    requests.MultiPartParser = StrictMultiPartParser  # type: ignore[misc]
