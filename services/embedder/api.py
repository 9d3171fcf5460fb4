"""HTTP endpoints: thin wrappers over FacePipeline. Bodies are size-checked while streaming, never buffered
unbounded: Content-Length is checked first and the stream is counted as it arrives."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from services.common.errors import ERROR_RESPONSES, BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from services.common.health import Health
from services.common.internal_auth import declare_in_openapi
from services.contracts import images as limits
from services.contracts.embedder import EmbedResponse, QualityProfile
from services.contracts.liveness import BURST_ID_PATTERN, BurstProgress, LivenessResponse, TurnDirection
from services.contracts.models import ModelDescriptor
from services.embedder.imaging import EmptyBody
from services.embedder.liveness import Streams, check_burst
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


_FRAMES_BODY = {
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
}
BurstId = Annotated[str, Path(pattern=BURST_ID_PATTERN, description="the gate's name for the burst")]
Offset = Annotated[int, Query(ge=0, le=64, description="frames of this burst sent before these")]


def get_streams(request: Request) -> Streams:
    return request.app.state.streams  # type: ignore[no-any-return]


StreamsDep = Annotated[Streams, Depends(get_streams)]


async def _burst_frames(request: Request, pipeline: FacePipeline) -> list[bytes]:
    rules = pipeline.settings.liveness
    if _mime(request.headers.get("content-type")) != "multipart/form-data":
        raise UnsupportedMediaType("send the burst as multipart/form-data with one 'frames' part per frame")
    body = await _read_bounded(request, rules.max_burst_bytes + MULTIPART_OVERHEAD)
    if not body:
        raise EmptyBody("the request carries no frames")
    frames = await _frames_from_multipart(request, body, rules.max_frames, pipeline.settings.max_image_bytes)
    if not frames:
        raise EmptyBody("the request carries no frames")
    return frames


def _bound(pipeline: FacePipeline, total: int, *, final: bool) -> None:
    rules = pipeline.settings.liveness
    if final and total < rules.min_frames:
        raise Unprocessable(f"{total} frames; send at least {rules.min_frames}", code="too_few_frames")
    if total > rules.max_frames:
        raise Unprocessable(f"{total} frames; send at most {rules.max_frames}", code="too_many_frames")


@router.post(
    "/v1/liveness",
    response_model=LivenessResponse,
    dependencies=protected,
    responses=ERROR_RESPONSES,
    summary="Check a burst of frames for a live head turning the asked way (presentation-attack detection)",
    description="multipart/form-data with 4-12 (settings) file parts named `frames`, in capture order, each a "
    "JPEG, PNG or WebP within the image limits, all of one size; the body is bounded as a whole. With `burst`, "
    "these are the last frames of a burst streamed to `/v1/liveness/bursts/{burst}/frames` (`offset` frames "
    "sent there; 404 `burst_unknown` where this process no longer has it, 409 `burst_out_of_step` where the count "
    "differs: send the whole burst). The verdict is `live`, `presentation_attack` (the face moved as a plane: "
    "print, screen) or `liveness_failed` (see `failure`). `face` is the most frontal frame's face with its "
    "gate-profile embedding, present when the geometry passed.",
    openapi_extra=_FRAMES_BODY,
)
async def liveness(
    request: Request,
    pipeline: PipelineDep,
    streams: StreamsDep,
    direction: Annotated[TurnDirection, Query(description="the turn asked of the subject, in their own terms")],
    burst: Annotated[
        str | None, Query(pattern=BURST_ID_PATTERN, description="a streamed burst's id: these frames end it")
    ] = None,
    offset: Offset = 0,
) -> LivenessResponse:
    frames = await _burst_frames(request, pipeline)
    if burst is None:
        _bound(pipeline, len(frames), final=True)
        return await check_burst(pipeline, frames, direction)
    check = streams.close(burst)  # ended here, whatever the answer: a retry sends the whole burst
    async with check.lock:
        check.expect(offset)
        _bound(pipeline, check.frames + len(frames), final=True)
        await check.add(frames)
        return await check.finish(direction)


@router.post(
    "/v1/liveness/bursts/{burst}/frames",
    response_model=BurstProgress,
    dependencies=protected,
    responses=ERROR_RESPONSES,
    summary="Stream a burst's frames as they are captured (the check of POST /v1/liveness?burst=, ahead of time)",
    description="multipart/form-data as `/v1/liveness`: the next frames of burst `burst`, `offset` frames having "
    "been sent before (0 begins it; 409 `burst_out_of_step` where that differs). They are decoded and the face "
    "tracked through them now, so that the end of the burst leaves little to do. The verdict comes with the last "
    "frames, at `POST /v1/liveness?burst=`.",
    openapi_extra=_FRAMES_BODY,
)
async def liveness_frames(
    request: Request, pipeline: PipelineDep, streams: StreamsDep, burst: BurstId, offset: Offset = 0
) -> BurstProgress:
    frames = await _burst_frames(request, pipeline)
    check = streams.open(burst) if offset == 0 else streams.get(burst)
    async with check.lock:
        check.expect(offset)
        _bound(pipeline, check.frames + len(frames), final=False)
        await check.add(frames)
        streams.trim()
        await check.embed_first()
        return BurstProgress(frames=check.frames)


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
