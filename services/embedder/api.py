"""HTTP endpoints: thin wrappers over FacePipeline. Bodies are size-checked while streaming, never buffered
unbounded: Content-Length is checked first and the stream is counted as it arrives."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from services.common.errors import ERROR_RESPONSES, BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from services.common.health import Health
from services.common.internal_auth import declare_in_openapi
from services.contracts import images as limits
from services.contracts.embedder import EmbedResponse, QualityProfile
from services.contracts.liveness import LivenessResponse, TurnDirection
from services.contracts.models import ModelDescriptor
from services.embedder.imaging import EmptyBody
from services.embedder.liveness import check_burst
from services.embedder.pipeline import FacePipeline

# Room for multipart boundaries and part headers on top of the image itself.
MULTIPART_OVERHEAD = 64 * 1024
OCTET_STREAM = "application/octet-stream"

router = APIRouter()
protected = [declare_in_openapi()]  # the middleware enforces it; this tells OpenAPI


def get_pipeline(request: Request) -> FacePipeline:
    return request.app.state.pipeline  # type: ignore[no-any-return]


PipelineDep = Annotated[FacePipeline, Depends(get_pipeline)]


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _accepted(mime: str) -> bool:
    return mime in limits.ACCEPTED_CONTENT_TYPES or mime == OCTET_STREAM


async def _read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("invalid Content-Length") from None
        if size > limit:
            raise PayloadTooLarge(f"body is {size} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:  # chunked or lying clients: stop reading at the limit
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse_form(request: Request, body: bytes, *, max_files: int) -> FormData:
    """Parse the bytes already read (and bounded) instead of letting the form parser read the socket."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=max_files, max_fields=16)
    except Exception as exc:
        raise BadRequest(f"malformed multipart body: {exc}", code="invalid_multipart") from None


async def _part_bytes(part: object, limit: int, *, what: str, code: str, accepted: str) -> bytes:
    """One file part's bytes: a file, of an accepted type, within the image limit."""
    if not isinstance(part, UploadFile):
        raise Unprocessable(f"{what} must be a file part", code=code)
    mime = _mime(part.content_type)
    if mime and not _accepted(mime):
        raise UnsupportedMediaType(f"{what} has content type {mime!r}; send {accepted}")
    data = await part.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"{what} exceeds {limit} bytes")
    return data


async def _image_from_multipart(request: Request, body: bytes, limit: int) -> bytes:
    form = await _parse_form(request, body, max_files=1)
    try:
        part = form.get("image")
        if part is None:
            raise Unprocessable("multipart body has no file field 'image'", code="missing_image")
        return await _part_bytes(part, limit, what="the image part", code="missing_image", accepted="an image")
    finally:
        await form.close()


async def read_image(request: Request, limit: int) -> bytes:
    """The image bytes of a raw-body or multipart (field `image`) request."""
    mime = _mime(request.headers.get("content-type"))
    if mime == "multipart/form-data":
        body = await _read_bounded(request, limit + MULTIPART_OVERHEAD)
        if not body:
            raise EmptyBody("the request carries no image")
        return await _image_from_multipart(request, body, limit)
    if not _accepted(mime):
        accepted = ", ".join((*limits.ACCEPTED_CONTENT_TYPES, "multipart/form-data"))
        raise UnsupportedMediaType(f"content type {mime or '(none)'!r} is not accepted; use one of {accepted}")
    return await _read_bounded(request, limit)


@router.post(
    "/v1/embed",
    response_model=EmbedResponse,
    dependencies=protected,
    responses=ERROR_RESPONSES,
    summary="Detect faces, score their quality and embed them",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                **{ct: {"schema": {"type": "string", "format": "binary"}} for ct in limits.ACCEPTED_CONTENT_TYPES},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}
                },
            },
        }
    },
)
async def embed(
    request: Request,
    pipeline: PipelineDep,
    profile: Annotated[QualityProfile, Query(description="enrol: strict, gate: lax")] = QualityProfile.GATE,
    max_faces: Annotated[int | None, Query(ge=1, le=100, description="largest N faces returned")] = None,
    min_face_size: Annotated[
        int | None, Query(ge=12, le=4096, description="smallest face reported, in original pixels")
    ] = None,
) -> EmbedResponse:
    data = await read_image(request, pipeline.settings.max_image_bytes)
    return await pipeline.aembed_image(data, profile=profile, max_faces=max_faces, min_face_size=min_face_size)


async def _frames_from_multipart(request: Request, body: bytes, max_frames: int, limit: int) -> list[bytes]:
    # Room for more parts than allowed, so that too many frames get their own clear answer; the body is bounded.
    form = await _parse_form(request, body, max_files=4 * max_frames)
    try:
        frames: list[bytes] = []
        for part in form.getlist("frames"):
            data = await _part_bytes(part, limit, what="a frame", code="invalid_frame", accepted="JPEG, PNG or WebP")
            if not data:
                raise EmptyBody("a frame part is empty")
            frames.append(data)
        return frames
    finally:
        await form.close()


@router.post(
    "/v1/liveness",
    response_model=LivenessResponse,
    dependencies=protected,
    responses=ERROR_RESPONSES,
    summary="Check a burst of frames for a live head turning the asked way (presentation-attack detection)",
    description="multipart/form-data with 4-12 (settings) file parts named `frames`, in capture order, each a "
    "JPEG, PNG or WebP within the image limits, all of one size; the body is bounded as a whole. The verdict is "
    "`live`, `presentation_attack` (the face moved as a plane: print, screen) or `liveness_failed` (see "
    "`failure`). `face` is the most frontal frame's face with its gate-profile embedding, present when the "
    "geometry passed.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["frames"],
                        "properties": {"frames": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    }
                }
            },
        }
    },
)
async def liveness(
    request: Request,
    pipeline: PipelineDep,
    direction: Annotated[TurnDirection, Query(description="the turn asked of the subject, in their own terms")],
) -> LivenessResponse:
    rules = pipeline.settings.liveness
    if _mime(request.headers.get("content-type")) != "multipart/form-data":
        raise UnsupportedMediaType("send the burst as multipart/form-data with one 'frames' part per frame")
    body = await _read_bounded(request, rules.max_burst_bytes + MULTIPART_OVERHEAD)
    if not body:
        raise EmptyBody("the request carries no frames")
    frames = await _frames_from_multipart(request, body, rules.max_frames, pipeline.settings.max_image_bytes)
    if len(frames) < rules.min_frames:
        raise Unprocessable(f"{len(frames)} frames; send at least {rules.min_frames}", code="too_few_frames")
    if len(frames) > rules.max_frames:
        raise Unprocessable(f"{len(frames)} frames; send at most {rules.max_frames}", code="too_many_frames")
    return await check_burst(pipeline, frames, direction)


@router.get("/v1/model", response_model=ModelDescriptor, dependencies=protected, responses={401: ERROR_RESPONSES[401]})
async def model(pipeline: PipelineDep) -> ModelDescriptor:
    return pipeline.descriptor


@router.get("/healthz", response_model=Health, tags=["ops"])
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["ops"], responses={503: {"model": Health}})
async def readyz(pipeline: PipelineDep) -> Health | JSONResponse:
    checks = {"models": pipeline.state, "model_id": pipeline.model.descriptor.id, "device": pipeline.model.device}
    if pipeline.ready:
        return Health(status="ok", checks=checks)
    return JSONResponse(status_code=503, content=Health(status="not_ready", checks=checks).model_dump())
