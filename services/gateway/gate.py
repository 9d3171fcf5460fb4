"""Gate decisions: 1:1 verify (ticket + face) and 1:K identify (face only).

Distances come from the matcher or from cached templates; thresholds come from the event's target error rates
and, for 1:K, the size of the gallery the matcher searched (`thresholds.py`); the decision is made here. Every
decision is written to the access log, with its distance and threshold; the gate device gets the decision and
reason only (`GateResult`). A dependency fault raises (503) before any decision: a fault is never an admit.

Outside the event's `starts_at`/`ends_at` window every gate call is denied `outside_event_window`, before any
face work.
1:1 reason order: unknown_ticket, revoked, no_face, multiple_faces, low_quality, face_mismatch, already_entered.
The face check runs (and its distance is logged) even when the ticket is bad; a matching face on an already
used ticket gives `already_entered`, a different face gives `face_mismatch` (someone else holding the ticket).
Anti-passback is an atomic conditional UPDATE, so two gates cannot admit the same ticket twice.

What the camera showed comes from a `FaceSource`: one frame (`PlainFrame`, below) or, on an event with
`liveness: challenge`, a burst answering a head-turn challenge (`liveness.Burst`), which may also give
`presentation_attack` or `liveness_failed`; those come first in the 1:1 order (whatever the ticket). The face
decided on is then treated alike. An event's liveness setting picks the protocol: a single frame on a challenge
event, or a burst on one without, is a 403 (`gate_event`).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import Counter, Histogram
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import DependencyUnavailable, NotFound
from services.common.observability import current_request_id
from services.contracts.embedder import EmbedResponse, Face, QualityProfile, QualityReason
from services.contracts.liveness import LivenessMode
from services.contracts.matcher import SearchRequest
from services.embedder.client import EmbedderClient
from services.gateway import thresholds
from services.gateway.auth import Principal
from services.gateway.cache import TemplateCache
from services.gateway.errors import EventNotFound, Forbidden
from services.gateway.events import check_embedded_model
from services.gateway.schemas import Decision, GateResult, Reason
from services.gateway.settings import GatewaySettings
from services.gateway.tables import AccessLog, Attendee, Event
from services.gateway.text import ticket_key
from services.gateway.uploads import Photo, check_image, clean_text
from services.matcher.client import MatcherClient

log = logging.getLogger("facegate.gateway.gate")

DECISIONS = Counter("facegate_gateway_decisions_total", "Gate decisions", ["mode", "decision", "reason"])
DECISION_LATENCY = Histogram(
    "facegate_gateway_decision_seconds",
    "Gate decision latency, frame in to decision out",
    ["mode"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0),
)
DISTANCES = Histogram(
    "facegate_gateway_distance",
    "Cosine distance behind each decision",
    ["mode"],
    buckets=(0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5),
)


@dataclass
class _Outcome:
    decision: Decision
    reason: Reason
    attendee: Attendee | None = None
    attendee_id: uuid.UUID | None = None
    distance: float | None = None
    quality_reasons: list[str] = field(default_factory=list)
    liveness: str | None = None  # bursts: "live" or why not, for the access log only


@dataclass
class Seen:
    """What the camera showed: the face to decide on, or the reason there is none (and its quality reasons)."""

    face: Face | None
    reason: Reason | None
    quality_reasons: list[str] = field(default_factory=list)
    liveness: str | None = None


LIVENESS_REASONS = (Reason.PRESENTATION_ATTACK, Reason.LIVENESS_FAILED)


class FaceSource(Protocol):
    def check(self) -> None:
        """Bad input is a 4xx here, before any decision (the window's included) and before anything is stored."""

    async def see(self, embedder: EmbedderClient, event: Event, settings: GatewaySettings) -> Seen: ...


async def gate_event(session: AsyncSession, *, principal: Principal, mode: str, burst: bool = False) -> Event:
    event = await session.get(Event, principal.event_id) if principal.event_id else None
    if event is None:
        raise EventNotFound()
    if event.mode not in (mode, "both"):
        raise Forbidden(f"this event does not allow {mode} (mode {event.mode})", code="mode_not_allowed")
    challenge = event.liveness == LivenessMode.CHALLENGE
    if challenge and not burst:  # the challenge cannot be skipped by sending one frame
        raise Forbidden(
            f"this event requires a head-turn challenge: POST /v1/gate/challenge, then /v1/gate/{mode}/burst",
            code="liveness_required",
        )
    if burst and not challenge:
        raise Forbidden(f"this event decides on one frame: POST /v1/gate/{mode}", code="liveness_off")
    return event


def pick_face(embedded: EmbedResponse, settings: GatewaySettings) -> tuple[Face | None, Reason | None]:
    """The face to decide on (the embedder lists the largest first), or the reason there is none.

    Whether a second face is "comparable" is the embedder's call (its gate profile's size ratio); with the
    `largest` policy the largest face is used anyway.
    """
    if not embedded.faces:
        return None, Reason.NO_FACE
    if QualityReason.MULTIPLE_FACES in embedded.reasons and settings.multiple_faces_policy == "deny":
        return None, Reason.MULTIPLE_FACES
    face = embedded.faces[0]
    if settings.gate_enforce_quality and not face.quality.passed:
        return face, Reason.LOW_QUALITY
    return face, None


async def _embed_frame(embedder: EmbedderClient, event: Event, frame: Photo, max_faces: int) -> EmbedResponse:
    check_image(frame, what="frame")
    embedded = await embedder.embed(frame.data, frame.content_type, QualityProfile.GATE, max_faces)
    check_embedded_model(embedded.model.id, event, embedder.retry_after_s)
    return embedded


@dataclass(frozen=True)
class PlainFrame:
    """One camera frame, embedded with the gate profile; the dominant face is decided on."""

    frame: Photo

    def check(self) -> None:
        check_image(self.frame, what="frame")

    async def see(self, embedder: EmbedderClient, event: Event, settings: GatewaySettings) -> Seen:
        embedded = await _embed_frame(embedder, event, self.frame, max_faces=5)
        face, reason = pick_face(embedded, settings)
        quality = [r.value for r in face.quality.reasons] if face is not None and reason else []
        if reason in (Reason.NO_FACE, Reason.MULTIPLE_FACES) and not quality:
            quality = [r.value for r in embedded.reasons]
        return Seen(face, reason, quality)


async def _mark_entered(session: AsyncSession, *, attendee_id: uuid.UUID, allow_reentry: bool) -> bool:
    """Atomically record the entry; False when anti-passback refuses it (someone entered on this ticket)."""
    now = datetime.now(UTC)
    stmt = update(Attendee).where(Attendee.id == attendee_id, Attendee.revoked_at.is_(None))
    if not allow_reentry:
        stmt = stmt.where(Attendee.entered_at.is_(None))
    stmt = stmt.values(
        entered_at=func.coalesce(Attendee.entered_at, now), last_entry_at=now, entries=Attendee.entries + 1
    ).returning(Attendee.id)
    result = await session.execute(stmt, execution_options={"synchronize_session": False})
    return result.scalar_one_or_none() is not None


async def _record(
    session: AsyncSession,
    *,
    principal: Principal,
    event: Event,
    mode: str,
    ticket_code: str | None,
    outcome: _Outcome,
    threshold: float,
    started: float,
) -> GateResult:
    request_id = current_request_id.get()  # the access log row and the answer carry the request's id
    latency_ms = (time.perf_counter() - started) * 1000.0
    attendee_id = outcome.attendee.id if outcome.attendee is not None else outcome.attendee_id
    session.add(
        AccessLog(
            event_id=event.id,
            gate_key_id=principal.key_id,
            mode=mode,
            ticket_code=ticket_code,
            attendee_id=attendee_id,
            decision=outcome.decision.value,
            reason=outcome.reason.value,
            distance=outcome.distance,
            threshold=threshold,
            model_id=event.model_id,
            latency_ms=latency_ms,
            request_id=request_id,
            liveness=outcome.liveness,
        )
    )
    await session.flush()
    DECISIONS.labels(mode, outcome.decision.value, outcome.reason.value).inc()
    DECISION_LATENCY.labels(mode).observe(latency_ms / 1000.0)
    if outcome.distance is not None:
        DISTANCES.labels(mode).observe(outcome.distance)
    admitted = outcome.decision == Decision.ADMIT and outcome.attendee is not None
    return GateResult(
        decision=outcome.decision,
        reason=outcome.reason,
        attendee_id=attendee_id if admitted else None,
        attendee_name=outcome.attendee.name if admitted and outcome.attendee is not None else None,
        model_id=event.model_id,
        request_id=request_id,
        latency_ms=round(latency_ms, 2),
        mode=mode,
        quality_reasons=outcome.quality_reasons,
    )


CLOSED = _Outcome(Decision.DENY, Reason.OUTSIDE_EVENT_WINDOW)  # the gates are not open: no face work at all


def outside_window(event: Event, now: datetime | None = None) -> bool:
    now = now or datetime.now(UTC)
    return (event.starts_at is not None and now < event.starts_at) or (
        event.ends_at is not None and now > event.ends_at
    )


async def verify(
    session: AsyncSession,
    *,
    principal: Principal,
    event: Event,
    ticket_code: str,
    source: FaceSource,
    embedder: EmbedderClient,
    matcher: MatcherClient,
    cache: TemplateCache,
    settings: GatewaySettings,
) -> GateResult:
    started = time.perf_counter()
    thresholds.calibration_of(event)  # an event pinned to a model this build cannot decide for: 422
    threshold = thresholds.verify_threshold(event)
    ticket_code = clean_text(ticket_code, "ticket_code")  # a malformed ticket is a bad request, not a decision
    source.check()  # bad input is a 4xx before any decision, the window's included
    if outside_window(event):
        return await _record(
            session, principal=principal, event=event, mode="verify", ticket_code=ticket_code, outcome=CLOSED,
            threshold=threshold, started=started,
        )  # fmt: skip
    seen = await source.see(embedder, event, settings)
    face, face_reason = seen.face, seen.reason
    attendee = (
        await session.execute(
            select(Attendee).where(Attendee.event_id == event.id, Attendee.ticket_key == ticket_key(ticket_code))
        )
    ).scalar_one_or_none()

    if attendee is not None:  # each of the attendee's templates is a chance for an impostor with their ticket
        threshold = thresholds.verify_threshold(event, attendee.templates)
    distance: float | None = None
    if attendee is not None and face is not None:
        try:
            result = await cache.distance(
                matcher,
                event_id=event.id,
                attendee_id=attendee.id,
                model_id=event.model_id,
                embedding=face.embedding,
            )
            distance = result.distance
        except DependencyUnavailable:
            if attendee.revoked_at is None:
                raise  # the decision depends on this distance: 503, never a guess
            # a revoked ticket is denied whatever the face: log the deny without a distance

    if face_reason in LIVENESS_REASONS:  # a failed challenge is what matters, whatever the ticket
        outcome = _Outcome(Decision.DENY, face_reason, attendee_id=attendee.id if attendee else None)
    elif attendee is None:
        outcome = _Outcome(Decision.DENY, Reason.UNKNOWN_TICKET, distance=distance)
    elif attendee.revoked_at is not None:
        outcome = _Outcome(Decision.DENY, Reason.REVOKED, attendee_id=attendee.id, distance=distance)
    elif face_reason is not None:
        outcome = _Outcome(
            Decision.DENY, face_reason, attendee_id=attendee.id, distance=distance, quality_reasons=seen.quality_reasons
        )
    elif distance is None or distance > threshold:
        outcome = _Outcome(Decision.DENY, Reason.FACE_MISMATCH, attendee_id=attendee.id, distance=distance)
    elif not await _mark_entered(session, attendee_id=attendee.id, allow_reentry=event.allow_reentry):
        outcome = _Outcome(Decision.DENY, Reason.ALREADY_ENTERED, attendee_id=attendee.id, distance=distance)
    else:
        outcome = _Outcome(Decision.ADMIT, Reason.MATCH, attendee=attendee, distance=distance)
    outcome.liveness = seen.liveness
    return await _record(
        session,
        principal=principal,
        event=event,
        mode="verify",
        ticket_code=ticket_code,
        outcome=outcome,
        threshold=threshold,
        started=started,
    )


async def identify(
    session: AsyncSession,
    *,
    principal: Principal,
    event: Event,
    source: FaceSource,
    embedder: EmbedderClient,
    matcher: MatcherClient,
    settings: GatewaySettings,
) -> GateResult:
    """1:K: admit the nearest attendee within the threshold (and the margin), else `unknown` — never the
    nearest stranger."""
    started = time.perf_counter()
    thresholds.calibration_of(event)  # an event pinned to a model this build cannot decide for: 422
    threshold = thresholds.identify_threshold(event, 0, 0)  # logged as is when no search runs
    outcome: _Outcome
    source.check()
    if outside_window(event):
        return await _record(
            session, principal=principal, event=event, mode="identify", ticket_code=None, outcome=CLOSED,
            threshold=threshold, started=started,
        )  # fmt: skip
    seen = await source.see(embedder, event, settings)
    face, face_reason = seen.face, seen.reason

    if face is None or face_reason is not None:
        outcome = _Outcome(Decision.DENY, face_reason or Reason.NO_FACE, quality_reasons=seen.quality_reasons)
    else:
        try:
            found = await matcher.search(
                event.id, SearchRequest(model_id=event.model_id, embedding=face.embedding, k=2)
            )
            matches = sorted(found.matches, key=lambda m: m.distance)
            # The threshold for the gallery the matcher searched: it tightens as the event grows.
            threshold = thresholds.identify_threshold(event, found.templates, found.attendees)
        except NotFound:
            matches = []  # no gallery: nobody can be identified
        best = matches[0] if matches else None
        margin = thresholds.identify_margin(event)
        if best is None or best.distance > threshold:
            outcome = _Outcome(Decision.UNKNOWN, Reason.NO_MATCH, distance=best.distance if best else None)
        elif len(matches) > 1 and not matches[1].distance - best.distance > margin:
            # Two attendees about as close (or exactly tied: two tickets with one face) is no identification.
            outcome = _Outcome(Decision.UNKNOWN, Reason.AMBIGUOUS, distance=best.distance)
        else:
            attendee = await session.get(Attendee, best.attendee_id)
            if attendee is None or attendee.event_id != event.id:
                outcome = _Outcome(Decision.UNKNOWN, Reason.NO_MATCH, distance=best.distance)
            elif attendee.revoked_at is not None:
                outcome = _Outcome(Decision.DENY, Reason.REVOKED, attendee_id=attendee.id, distance=best.distance)
            elif not await _mark_entered(session, attendee_id=attendee.id, allow_reentry=event.allow_reentry):
                outcome = _Outcome(
                    Decision.DENY, Reason.ALREADY_ENTERED, attendee_id=attendee.id, distance=best.distance
                )
            else:
                outcome = _Outcome(Decision.ADMIT, Reason.MATCH, attendee=attendee, distance=best.distance)
    outcome.liveness = seen.liveness
    return await _record(
        session,
        principal=principal,
        event=event,
        mode="identify",
        ticket_code=None,
        outcome=outcome,
        threshold=threshold,
        started=started,
    )
