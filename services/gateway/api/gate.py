from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from services.common.errors import ERROR_RESPONSES
from services.gateway import gate
from services.gateway.authfirst import AuthFirstRoute
from services.gateway.deps import CacheDep, EmbedderDep, MatcherDep, RequireGate, SessionDep, SettingsDep
from services.gateway.schemas import GateResult
from services.gateway.uploads import read_upload, single_valued

router = APIRouter(prefix="/v1/gate", tags=["gate"], responses=ERROR_RESPONSES, route_class=AuthFirstRoute)


@router.post("/verify", response_model=GateResult, dependencies=[Depends(single_valued("ticket_code", "frame"))])
async def verify(
    session: SessionDep,
    principal: RequireGate,  # its rate limit was checked before the body (authfirst.py)
    embedder: EmbedderDep,
    matcher: MatcherDep,
    cache: CacheDep,
    settings: SettingsDep,
    frame: Annotated[UploadFile, File(description="camera frame (JPEG/PNG)")],
    ticket_code: Annotated[str, Form(min_length=1, max_length=200)],
) -> GateResult:
    """1:1: the scanned ticket's holder against the face in the frame → admit or deny with a reason."""
    event = await gate.gate_event(session, principal=principal, mode="verify")
    return await gate.verify(
        session,
        principal=principal,
        event=event,
        ticket_code=ticket_code,
        source=gate.PlainFrame(await read_upload(frame)),
        embedder=embedder,
        matcher=matcher,
        cache=cache,
        settings=settings,
    )


@router.post("/identify", response_model=GateResult, dependencies=[Depends(single_valued("frame"))])
async def identify(
    session: SessionDep,
    principal: RequireGate,  # its rate limit was checked before the body (authfirst.py)
    embedder: EmbedderDep,
    matcher: MatcherDep,
    cache: CacheDep,
    settings: SettingsDep,
    frame: Annotated[UploadFile, File(description="camera frame (JPEG/PNG)")],
) -> GateResult:
    """1:K: the nearest attendee within the threshold → admit; otherwise `unknown` (never the nearest stranger)."""
    event = await gate.gate_event(session, principal=principal, mode="identify")
    return await gate.identify(
        session,
        principal=principal,
        event=event,
        source=gate.PlainFrame(await read_upload(frame)),
        embedder=embedder,
        matcher=matcher,
        settings=settings,
    )
