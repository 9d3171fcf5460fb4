"""What a multipart upload becomes before anything looks at it: a `Photo` (type sniffed from the bytes when the
client did not say), its size and type checks, and the plain-text checks of form fields. Used by enrolment,
imports and the gate alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request, UploadFile

from services.common.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from services.contracts.images import ACCEPTED_CONTENT_TYPES, MAX_IMAGE_BYTES
from services.gateway.schemas import CONTROL_CHARS
from services.gateway.text import MAX_CHARS, normalise_name, normalise_ticket


@dataclass(frozen=True)
class Photo:
    filename: str | None
    content_type: str
    data: bytes


def check_image(photo: Photo, *, what: str = "photo") -> None:
    if not photo.data:
        raise BadRequest(f"{what} {photo.filename or ''} is empty".replace("  ", " "))
    if len(photo.data) > MAX_IMAGE_BYTES:
        raise PayloadTooLarge(f"{what} is larger than {MAX_IMAGE_BYTES} bytes")
    if photo.content_type not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"{what} type {photo.content_type!r} is not one of {', '.join(ACCEPTED_CONTENT_TYPES)}"
        )


def clean_text(value: str, field: str) -> str:
    """Stripped and free of control characters (a NUL would be a 500 in Postgres), bidi controls and invisible
    characters, else 400 `invalid_text`; normalised as `text.py` says (ticket codes NFKC, the rest NFC)."""
    if CONTROL_CHARS.search(value):
        raise BadRequest(f"{field} must not contain control, bidi or invisible characters", code="invalid_text")
    value = normalise_ticket(value) if field == "ticket_code" else normalise_name(value.strip())
    if not value:
        raise BadRequest(f"{field} must not be empty", code="invalid_text")
    if CONTROL_CHARS.search(value) or len(value) > MAX_CHARS:  # NFKC can expand, or compose into one of them
        raise BadRequest(f"{field} is not valid text once normalised (NFKC/NFC)", code="invalid_text")
    return value


_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))


def sniff_type(declared: str | None, data: bytes) -> str:
    """The declared type, or for a generic one (`application/octet-stream`, none) what the bytes say."""
    declared = (declared or "").split(";")[0].strip().lower()
    if declared in ACCEPTED_CONTENT_TYPES:
        return declared
    if declared in ("", "application/octet-stream"):
        for magic, kind in _MAGIC:
            if data.startswith(magic):
                return kind
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return "image/webp"
    return declared or "application/octet-stream"


def single_valued(*fields: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing a form that repeats one of `fields`: FastAPI would silently keep one of the values
    (which ticket did the gate check?), so ambiguity is a 400 `duplicate_field`."""

    async def check(request: Request) -> None:
        form = await request.form()  # parsed once already for the endpoint's fields; this is the cached copy
        repeated = [f for f in fields if len(form.getlist(f)) > 1]
        if repeated:
            raise BadRequest(f"field(s) sent more than once: {', '.join(repeated)}", code="duplicate_field")

    return check


async def read_upload(upload: UploadFile) -> Photo:
    data = await upload.read(MAX_IMAGE_BYTES + 1)  # one byte over tells "too large" without reading it all
    return Photo(filename=upload.filename, content_type=sniff_type(upload.content_type, data), data=data)
