"""The head-turn challenge's routes (`gateway/liveness.py`): a gate asks for a challenge, then posts the burst of
frames that answers it to the burst twin of verify or identify. Same prefix, auth and rate limit as the plain
gate routes (`api/gate.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile, status
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import ERROR_RESPONSES
from services.contracts.liveness import LivenessMode
from services.gateway import gate, liveness
from services.gateway.auth import Principal
from services.gateway.authfirst import AuthFirstRoute
from services.gateway.deps import CacheDep, EmbedderDep, MatcherDep, RequireGate, SessionDep, SettingsDep
from services.gateway.errors import EventNotFound, Forbidden
from services.gateway.schemas import Challenge, EventMode, GateEvent, GateResult, StreamedFrames
from services.gateway.tables import Event
from services.gateway.uploads import read_upload, single_valued

router = APIRouter(prefix="/v1/gate", tags=["gate"], responses=ERROR_RESPONSES, route_class=AuthFirstRoute)

Nonce = Annotated[str, Form(pattern=liveness.NONCE_PATTERN, description="the challenge's nonce")]
Streamed = Annotated[
    int,
    Form(
        ge=0,
        le=liveness.FRAMES.max,
        description="frames of this burst already sent to `/v1/gate/burst/frames` (0: `frames` is the whole burst)",
    ),
]
Frames = Annotated[
    list[UploadFile],
    File(
        description=f"{liveness.FRAMES.min}-{liveness.FRAMES.max} camera frames (JPEG/PNG) in capture order, "
        f"spanning at most {liveness.MAX_DURATION_MS} ms, while the person turns as asked (a streamed burst: "
        "its frames not yet sent)"
    ),
]
PartFrames = Annotated[
    list[UploadFile],
    File(description="the burst's next frames (JPEG/PNG) in capture order, as they are taken"),
]


@router.get("/event", response_model=GateEvent)
async def gate_event(session: SessionDep, principal: RequireGate) -> GateEvent:
    """What this gate key's event asks of a gate: its mode and whether decisions need the head-turn challenge."""
    event = await session.get(Event, principal.event_id) if principal.event_id else None
    if event is None:
        raise EventNotFound()
    return GateEvent(mode=EventMode(event.mode), liveness=LivenessMode(event.liveness))


async def _challenge_event(session: AsyncSession, principal: Principal) -> Event:
    """The gate key's event, which must decide with the challenge (else 403 `liveness_off`)."""
    event = await session.get(Event, principal.event_id) if principal.event_id else None
    if event is None:
        raise EventNotFound()
    if event.liveness != LivenessMode.CHALLENGE:
        raise Forbidden("this event decides on one frame: no challenge is needed", code="liveness_off")
    return event


@router.post("/challenge", status_code=status.HTTP_201_CREATED, response_model=Challenge)
async def challenge(session: SessionDep, principal: RequireGate, settings: SettingsDep) -> Challenge:
    """A head-turn challenge for the next decision (events with `liveness: challenge`; else 403 `liveness_off`):
    ask the person to turn their head slightly to `direction` (their own left or right), capture
    `frames.min`-`frames.max` frames over at most `max_duration_ms`, and post them with `nonce` to
    `/v1/gate/identify/burst` or `/v1/gate/verify/burst` before `expires_at` (the first ones may go ahead while the
    person turns: `/v1/gate/burst/frames`). The nonce decides once."""
    event = await _challenge_event(session, principal)
    return await liveness.issue(session, principal=principal, event=event, ttl_s=settings.challenge_ttl_s)


@router.post(
    "/burst/frames",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=StreamedFrames,
    dependencies=[Depends(single_valued("nonce", "offset"))],
)
async def burst_frames(
    session: SessionDep,
    principal: RequireGate,
    embedder: EmbedderDep,
    nonce: Nonce,
    frames: PartFrames,
    offset: Annotated[int, Form(ge=0, le=liveness.FRAMES.max, description="frames of this burst sent before these")],
) -> StreamedFrames:
    """Optional: stream a burst's frames while the person is still turning, so that the decision at its end
    waits only for the last ones. Post them in capture order (`offset`: how many went before; 0 begins it), then
    the rest to `/v1/gate/{verify,identify}/burst` with `streamed` set to the total sent here. Nothing is decided
    or spent here: the challenge must be open (409 `challenge_closed`), and a part that did not arrive in step, or
    a burst the embedder no longer holds, is 409 `burst_incomplete` here or at the decision; the gate then posts
    the whole burst with the same nonce."""
    event = await _challenge_event(session, principal)
    photos = [await read_upload(f) for f in frames]
    liveness.check_frames(photos, offset, final=False)
    await liveness.check_open(session, nonce=nonce, principal=principal, event=event)
    return StreamedFrames(frames=await liveness.stream(embedder, photos, nonce, offset))


@router.post(
    "/verify/burst",
    response_model=GateResult,
    dependencies=[Depends(single_valued("ticket_code", "nonce", "streamed"))],
)
async def verify_burst(
    session: SessionDep,
    principal: RequireGate,
    embedder: EmbedderDep,
    matcher: MatcherDep,
    cache: CacheDep,
    settings: SettingsDep,
    nonce: Nonce,
    frames: Frames,
    ticket_code: Annotated[str, Form(min_length=1, max_length=200)],
    streamed: Streamed = 0,
) -> GateResult:
    """1:1 with the challenge: the burst must show a live head turning as asked (else `deny presentation_attack`
    or `deny liveness_failed`, also for an unknown, expired, used or foreign nonce), then its most frontal face
    is decided on exactly as `/v1/gate/verify` decides a frame."""
    event = await gate.gate_event(session, principal=principal, mode="verify", burst=True)
    burst = liveness.Burst([await read_upload(f) for f in frames], nonce, session, principal, streamed)
    return await gate.verify(
        session,
        principal=principal,
        event=event,
        ticket_code=ticket_code,
        source=burst,
        embedder=embedder,
        matcher=matcher,
        cache=cache,
        settings=settings,
    )


@router.post("/identify/burst", response_model=GateResult, dependencies=[Depends(single_valued("nonce", "streamed"))])
async def identify_burst(
    session: SessionDep,
    principal: RequireGate,
    embedder: EmbedderDep,
    matcher: MatcherDep,
    settings: SettingsDep,
    nonce: Nonce,
    frames: Frames,
    streamed: Streamed = 0,
) -> GateResult:
    """1:K with the challenge: as `/v1/gate/verify/burst`, then decided as `/v1/gate/identify` decides a frame."""
    event = await gate.gate_event(session, principal=principal, mode="identify", burst=True)
    burst = liveness.Burst([await read_upload(f) for f in frames], nonce, session, principal, streamed)
    return await gate.identify(
        session,
        principal=principal,
        event=event,
        source=burst,
        embedder=embedder,
        matcher=matcher,
        settings=settings,
    )
