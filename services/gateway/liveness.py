"""The head-turn challenge at the gate (issue 17): issue a random, short-lived, single-use challenge to a gate key,
and redeem it with the burst of frames that answers it.

- Issue (`issue`): a random direction (`secrets`), a 192-bit nonce bound to the gate key and its event, expiring
  `challenge_ttl_s` after issue by the database's clock. The same key's rows expired a minute ago are pruned then.
- Redeem (`Burst.see`): one conditional UPDATE marks the nonce used if it is this key's, this event's, unused and
  unexpired. It runs in the request's unit of work, so the nonce is spent exactly when a decision is logged: a
  second request with it waits on the row lock and then finds it used; a fault (503) or bad input (4xx) rolls it
  back with everything else, and a decision is then still possible until it expires. An unknown, used, expired or
  foreign nonce is `deny liveness_failed` (logged as `challenge_unknown` / `challenge_used` /
  `challenge_expired`), with no face work. The nonce lives in Postgres only: no cache can skip the check.
- The burst goes to the embedder's `/v1/liveness` with the challenge's direction; its verdict becomes the reason
  (`presentation_attack`, `liveness_failed`, or `no_face` / `multiple_faces` as guidance), its failure code goes
  to the access log only, and on `live` its most frontal face is decided on exactly as a single frame's.
- Streaming (`stream`, `Burst.streamed`): a gate may post the burst's first frames while the person still turns;
  they go to the embedder at once (to be tracked there, under the nonce's hash) and nothing is spent or decided.
  The decision then carries the rest; where the embedder lost the parts it is 409 `burst_incomplete`, rolled back
  like any 4xx, and the gate posts the whole burst with the same nonce.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Conflict, DependencyUnavailable, NotFound, Unprocessable
from services.contracts.liveness import LivenessFailure, LivenessResponse, LivenessVerdict, TurnDirection
from services.embedder.client import EmbedderClient
from services.gateway.auth import Principal
from services.gateway.events import check_embedded_model
from services.gateway.gate import Seen
from services.gateway.schemas import Challenge, FrameCount, Reason
from services.gateway.settings import GatewaySettings
from services.gateway.tables import Event, GateChallenge
from services.gateway.uploads import Photo, check_image

FRAMES = FrameCount(min=4, max=12)  # the kiosk sends 6-10; fewer cannot show a turn, more only cost upload
MAX_DURATION_MS = 2000  # capture window the kiosk is asked to keep (the embedder judges the motion, not clocks)
NONCE_BYTES = 24  # 192 random bits, 32 URL-safe characters
NONCE_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"

# The embedder's failures that are guidance, as for a single frame, rather than a failed challenge.
_GUIDANCE = {LivenessFailure.NO_FACE: Reason.NO_FACE, LivenessFailure.MULTIPLE_FACES: Reason.MULTIPLE_FACES}


async def issue(session: AsyncSession, *, principal: Principal, event: Event, ttl_s: float) -> Challenge:
    now = func.clock_timestamp()
    # a minute after expiry: a burst still being decided holds its row's lock, and issuing must not wait on it
    await session.execute(
        delete(GateChallenge).where(
            GateChallenge.gate_key_id == principal.key_id, GateChallenge.expires_at < now - timedelta(minutes=1)
        )
    )
    direction = secrets.choice(list(TurnDirection))
    nonce = secrets.token_urlsafe(NONCE_BYTES)
    expires_at = (
        await session.execute(
            insert(GateChallenge)
            .values(
                nonce=nonce,
                event_id=event.id,
                gate_key_id=principal.key_id,
                direction=direction.value,
                issued_at=now,
                expires_at=now + timedelta(seconds=ttl_s),
            )
            .returning(GateChallenge.expires_at)
        )
    ).scalar_one()
    return Challenge(
        nonce=nonce, direction=direction, expires_at=expires_at, frames=FRAMES, max_duration_ms=MAX_DURATION_MS
    )


def _mine(nonce: str, principal: Principal, event: Event) -> tuple[ColumnElement[bool], ...]:
    """The challenge `nonce`, if it is this gate key's and this event's."""
    return (
        GateChallenge.nonce == nonce,
        GateChallenge.gate_key_id == principal.key_id,
        GateChallenge.event_id == event.id,
    )


async def redeem(
    session: AsyncSession, *, nonce: str, principal: Principal, event: Event
) -> tuple[TurnDirection | None, str]:
    """The challenge's direction, now spent; or None and why (for the access log)."""
    now = func.clock_timestamp()
    mine = _mine(nonce, principal, event)
    spent = (
        await session.execute(
            update(GateChallenge)
            .where(*mine, GateChallenge.used_at.is_(None), GateChallenge.expires_at > now)
            .values(used_at=now)
            .returning(GateChallenge.direction),
            execution_options={"synchronize_session": False},
        )
    ).scalar_one_or_none()
    if spent is not None:
        return TurnDirection(spent), "live"
    found = (await session.execute(select(GateChallenge.used_at, GateChallenge.expires_at < now).where(*mine))).first()
    if found is None:  # never issued, pruned, or another key's or event's: all the same to this gate
        return None, "challenge_unknown"
    return None, "challenge_used" if found[0] is not None else "challenge_expired"


def burst_id(nonce: str) -> str:
    """The embedder's name for the burst answering `nonce`: a hash, so the nonce itself stays in the gateway."""
    return hashlib.sha256(nonce.encode()).hexdigest()


async def check_open(session: AsyncSession, *, nonce: str, principal: Principal, event: Event) -> None:
    """A streamed part's nonce must be this key's and event's, unused and unexpired (read only: it is spent by
    the decision that ends the burst)."""
    found = (
        await session.execute(
            select(GateChallenge.nonce).where(
                *_mine(nonce, principal, event),
                GateChallenge.used_at.is_(None),
                GateChallenge.expires_at > func.clock_timestamp(),
            )
        )
    ).first()
    if found is None:
        raise Conflict("no open challenge with this nonce for this gate: ask for a new one", code="challenge_closed")


async def stream(embedder: EmbedderClient, frames: Sequence[Photo], nonce: str, offset: int) -> int:
    """Pass a streamed part to the embedder, to be tracked now; the frames it holds of the burst so far."""
    try:
        progress = await embedder.liveness_frames(
            burst_id(nonce), [f.data for f in frames], offset, frames[0].content_type
        )
    except (NotFound, Conflict) as exc:
        raise BurstIncomplete() from exc
    return progress.frames


async def analyse(
    embedder: EmbedderClient, frames: Sequence[Photo], direction: TurnDirection, nonce: str, streamed: int = 0
) -> LivenessResponse:
    """The embedder's verdict; its 4xx about a frame (undecodable, too large) pass on, any fault is a 503. With
    `streamed` frames sent ahead, these end that burst; where the embedder no longer has it, 409
    `burst_incomplete` (the nonce is not spent: the gate posts the whole burst)."""
    # the embedder sniffs each frame; this is the burst's declared type
    data, ctype = [f.data for f in frames], frames[0].content_type
    if not streamed:
        return await embedder.liveness(data, direction, ctype)
    try:
        return await embedder.liveness(data, direction, ctype, burst=burst_id(nonce), offset=streamed)
    except (NotFound, Conflict) as exc:
        raise BurstIncomplete() from exc


class BurstIncomplete(Conflict):
    code = "burst_incomplete"

    def __init__(self) -> None:
        super().__init__("the frames streamed ahead of this burst are not all there: post the whole burst")


def seen_from(result: LivenessResponse, settings: GatewaySettings, retry_after_s: int) -> Seen:
    """The embedder's verdict as what the gate decides on."""
    code = result.failure.value if result.failure is not None else None
    if result.verdict == LivenessVerdict.PRESENTATION_ATTACK:
        return Seen(None, Reason.PRESENTATION_ATTACK, liveness=code or LivenessVerdict.PRESENTATION_ATTACK.value)
    if result.verdict == LivenessVerdict.LIVENESS_FAILED:
        guidance = _GUIDANCE.get(result.failure) if result.failure is not None else None
        return Seen(None, guidance or Reason.LIVENESS_FAILED, liveness=code or LivenessVerdict.LIVENESS_FAILED.value)
    if result.face is None:  # "live" without a face breaks the contract: a fault, never an admit
        raise DependencyUnavailable("embedder", retry_after_s, "liveness answered live without a face")
    face = result.face
    if settings.gate_enforce_quality and not face.quality.passed:
        return Seen(face, Reason.LOW_QUALITY, [r.value for r in face.quality.reasons], liveness="live")
    return Seen(face, None, liveness="live")


@dataclass(frozen=True)
class Burst:
    """A burst of frames answering challenge `nonce` (a `gate.FaceSource`): all of it, or its last frames after
    `streamed` were sent ahead (`POST /v1/gate/burst/frames`)."""

    frames: list[Photo]
    nonce: str
    session: AsyncSession
    principal: Principal
    streamed: int = 0

    def check(self) -> None:
        check_frames(self.frames, self.streamed, final=True)

    async def see(self, embedder: EmbedderClient, event: Event, settings: GatewaySettings) -> Seen:
        direction, why = await redeem(self.session, nonce=self.nonce, principal=self.principal, event=event)
        if direction is None:
            return Seen(None, Reason.LIVENESS_FAILED, liveness=why)
        result = await analyse(embedder, self.frames, direction, self.nonce, self.streamed)
        check_embedded_model(result.model.id, event, embedder.retry_after_s)
        return seen_from(result, settings, embedder.retry_after_s)


def check_frames(frames: Sequence[Photo], before: int, *, final: bool) -> None:
    """A burst is FRAMES.min to FRAMES.max frames in all; a part of it has at least one, and leaves room for the
    last part's."""
    total = before + len(frames)
    low, high = (FRAMES.min, FRAMES.max) if final else (1, FRAMES.max - 1)
    if not frames or not low <= total <= high:
        what = f"{before} streamed and {len(frames)} here" if before or not final else str(len(frames))
        raise Unprocessable(f"a burst has {FRAMES.min} to {FRAMES.max} frames, not {what}", code="burst_size")
    for i, frame in enumerate(frames):
        check_image(frame, what=f"frame {before + i}")
