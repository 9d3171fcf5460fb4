"""Enrolment: an attendee with face photos, all or nothing, and more photos for one already enrolled.

Enrolment order (so a failure anywhere leaves no half-enrolled attendee):
1. embed every photo with the strict `enrol` profile; any rejection → 422 listing every photo's reasons, nothing
   stored;
2. insert the attendee row (transaction open, not committed); a face that identifies another attendee of the
   event → roll back, 409 `duplicate_face` (`duplicates.py`);
3. add all templates to the matcher in ONE batch call; if it fails → roll back, 503;
4. store the idempotency record and commit; if the commit fails after the matcher succeeded → compensate by
   deleting the attendee's templates in the matcher.

`Idempotency-Key`: stored per API key in Postgres with a fingerprint of the request; a retry with the same key and
the same request returns the first response, with another request it is refused (422 `idempotency_key_reused`).
Two concurrent first attempts serialise on the unique ticket code; the loser returns the winner's stored response.

`enrol` owns its unit of work (its own session, committed by itself: docs/architecture.md, "Commit policy"), since
the order of the commit and the matcher call is the point, and returns a domain result (`Enrolment`) or the stored
first answer (`idempotency.StoredResponse`); the route turns either into the HTTP response.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.errors import BadRequest, Conflict, DependencyUnavailable
from services.contracts.embedder import EmbedResponse, QualityProfile
from services.contracts.matcher import TemplateIn, TemplatesCreate
from services.embedder.client import EmbedderClient
from services.gateway.attendees import get_attendee
from services.gateway.auth import Principal
from services.gateway.cache import TemplateCache
from services.gateway.duplicates import check_duplicate_faces
from services.gateway.errors import QualityRejected
from services.gateway.events import check_embedded_model, get_managed_event
from services.gateway.idempotency import StoredResponse, request_fingerprint, stored_response
from services.gateway.schemas import AttendeeOut, Enrolled, FaceFound, PhotoReport
from services.gateway.tables import Attendee, Event, IdempotencyKey
from services.gateway.text import ticket_key
from services.gateway.uploads import Photo, check_image, clean_text
from services.matcher.client import MatcherClient

log = logging.getLogger("facegate.gateway.enrolment")


async def _embed_all(embedder: EmbedderClient, photos: list[Photo]) -> list[EmbedResponse]:
    """Embed concurrently (the embedder batches across requests); any fault fails the whole enrolment."""
    results = await asyncio.gather(
        *(embedder.embed(p.data, p.content_type, QualityProfile.ENROL) for p in photos),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, EmbedResponse)]


def _reports(photos: list[Photo], embedded: list[EmbedResponse]) -> list[PhotoReport]:
    return [
        PhotoReport(
            index=i,
            filename=p.filename,
            passed=e.passed,
            reasons=[r.value for r in e.reasons],
            faces=len(e.faces),
            image_width=e.image.width,
            image_height=e.image.height,
            detections=[
                FaceFound(box=f.box, landmarks=f.landmarks, score=f.score, reasons=[r.value for r in f.quality.reasons])
                for f in e.faces
            ],
        )
        for i, (p, e) in enumerate(zip(photos, embedded, strict=True))
    ]


def _templates(
    attendee_id: uuid.UUID, event: Event, embedded: list[EmbedResponse], retry_after_s: int
) -> TemplatesCreate:
    items = []
    model_id = event.model_id
    for e in embedded:
        check_embedded_model(e.model.id, event, retry_after_s)
        face = e.faces[0]
        items.append(
            TemplateIn(attendee_id=attendee_id, model_id=model_id, embedding=face.embedding, quality=face.score)
        )
    return TemplatesCreate(templates=items)


async def _embed_and_check(embedder: EmbedderClient, photos: list[Photo], max_photos: int) -> list[EmbedResponse]:
    if not photos:
        raise BadRequest("at least one photo is required")
    if len(photos) > max_photos:
        raise BadRequest(f"at most {max_photos} photos per request")
    for p in photos:
        check_image(p)
    embedded = await _embed_all(embedder, photos)
    reports = _reports(photos, embedded)
    if not all(r.passed for r in reports):
        raise QualityRejected([r.model_dump() for r in reports])
    return embedded


@dataclass(frozen=True)
class Enrolment:
    """An attendee enrolled, or photos added to one: the stored row and what was found in each photo."""

    attendee: Attendee
    templates_added: int
    photos: list[PhotoReport]

    @property
    def attendee_id(self) -> uuid.UUID:
        return self.attendee.id

    def response(self) -> Enrolled:
        return Enrolled(
            attendee=AttendeeOut.model_validate(self.attendee), templates_added=self.templates_added, photos=self.photos
        )


def _ticket_exists(ticket_code: str) -> Conflict:
    return Conflict(f"ticket code {ticket_code!r} is already registered for this event", code="ticket_exists")


async def enrol(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    principal: Principal,
    event_id: uuid.UUID,
    name: str,
    ticket_code: str,
    external_ref: str | None,
    photos: list[Photo],
    idempotency_key: str | None,
    embedder: EmbedderClient,
    matcher: MatcherClient,
    cache: TemplateCache,
    max_photos: int,
    idempotency_ttl: timedelta = timedelta(days=7),
    allow_duplicate_face: bool = False,
) -> Enrolment | StoredResponse:
    """The enrolment, or what the first attempt with this `Idempotency-Key` answered (the route sends that again).

    Its own unit of work: a session opened here and committed here, after the matcher stored the templates (the
    order is the point, see the module doc); nothing of it is left to the request's session."""
    name, ticket_code = clean_text(name, "name"), clean_text(ticket_code, "ticket_code")
    external_ref = clean_text(external_ref, "external_ref") if external_ref and external_ref.strip() else None
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
        raise BadRequest("Idempotency-Key must be 1-200 characters")
    fingerprint = request_fingerprint(event_id, [name, ticket_code, external_ref], photos)

    async with sessionmaker() as session:
        event = await get_managed_event(session, principal=principal, event_id=event_id)

        async def replay() -> StoredResponse | None:
            if not idempotency_key:
                return None
            return await stored_response(
                session, principal=principal, key=idempotency_key, fingerprint=fingerprint, ttl=idempotency_ttl
            )

        if (stored := await replay()) is not None:
            return stored
        taken = (
            await session.execute(
                select(Attendee.id).where(Attendee.event_id == event_id, Attendee.ticket_key == ticket_key(ticket_code))
            )
        ).scalar_one_or_none()
        if taken is not None:
            raise _ticket_exists(ticket_code)

        embedded = await _embed_and_check(embedder, photos, max_photos)
        attendee_id = uuid.uuid4()
        batch = _templates(attendee_id, event, embedded, embedder.retry_after_s)
        attendee = Attendee(
            id=attendee_id,
            event_id=event_id,
            name=name,
            ticket_code=ticket_code,
            ticket_key=ticket_key(ticket_code),
            external_ref=external_ref or None,
            templates=len(batch.templates),
            entries=0,
        )
        session.add(attendee)
        try:
            await session.flush()
        except IntegrityError:
            # The same ticket was registered concurrently (maybe by this very request, retried): if it was with
            # this Idempotency-Key, answer what the first attempt answered.
            await session.rollback()
            if (stored := await replay()) is not None:
                return stored
            raise _ticket_exists(ticket_code) from None

        try:
            # Only once the ticket's row is in: a concurrent retry of this very request has by now replayed the first
            # answer (above), so a face found here really is someone else's (checked before the insert, the retry
            # could see the first attempt's templates and call its own face a duplicate).
            await check_duplicate_faces(
                session, event=event, embedded=embedded, matcher=matcher, allow=allow_duplicate_face
            )
            created = await matcher.add_templates(event_id, batch)
        except BaseException:
            await session.rollback()  # nothing was committed; the matcher took nothing either (one batch)
            raise

        await session.refresh(attendee)
        # the matcher's count: its mean template (2+ photos) is one more that a stranger can meet
        attendee.templates = created.attendee_templates.get(attendee_id, attendee.templates)
        result = Enrolment(attendee=attendee, templates_added=len(batch.templates), photos=_reports(photos, embedded))
        if idempotency_key:
            session.add(
                IdempotencyKey(
                    api_key_id=principal.key_id,
                    key=idempotency_key,
                    fingerprint=fingerprint,
                    event_id=event_id,
                    attendee_id=attendee_id,
                    status_code=201,
                    response=result.response().model_dump(mode="json"),
                )
            )
        try:
            await session.commit()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("enrolment commit failed after the matcher stored templates; compensating: %r", exc)
            await session.rollback()
            await _compensate(matcher, event_id, attendee_id)
            if not isinstance(exc, IntegrityError):
                raise DependencyUnavailable("database", matcher.retry_after_s) from exc
            if (stored := await replay()) is not None:
                return stored
            raise Conflict("the attendee could not be stored: conflicting write", code="conflict") from exc
    await cache.invalidate(event_id, attendee_id)
    return result


async def _compensate(matcher: MatcherClient, event_id: uuid.UUID, attendee_id: uuid.UUID) -> None:
    try:
        await matcher.delete_attendee(event_id, attendee_id)
    except Exception as exc:  # the orphan templates belong to no attendee row: no gate can ever match them
        log.error("compensation failed: templates of %s/%s left in the matcher: %r", event_id, attendee_id, exc)


async def add_photos(
    session: AsyncSession,
    *,
    event: Event,
    attendee_id: uuid.UUID,
    photos: list[Photo],
    embedder: EmbedderClient,
    matcher: MatcherClient,
    cache: TemplateCache,
    max_photos: int,
    allow_duplicate_face: bool = False,
) -> Enrolment:
    """More photos for an enrolled attendee, in the request's unit of work (`deps.get_session` commits)."""
    attendee = await get_attendee(session, event=event, attendee_id=attendee_id)
    embedded = await _embed_and_check(embedder, photos, max_photos)
    await check_duplicate_faces(
        session, event=event, embedded=embedded, matcher=matcher, allow=allow_duplicate_face,
        attendee_id=attendee.id,
    )  # fmt: skip
    batch = _templates(attendee.id, event, embedded, embedder.retry_after_s)
    # Lock the row: an erase running concurrently must not leave these templates behind.
    await session.execute(select(Attendee.id).where(Attendee.id == attendee.id).with_for_update())
    created = await matcher.add_templates(event.id, batch)
    attendee.templates = created.attendee_templates.get(attendee.id, attendee.templates + len(batch.templates))
    await session.flush()
    await cache.invalidate(event.id, attendee.id)
    return Enrolment(attendee=attendee, templates_added=len(batch.templates), photos=_reports(photos, embedded))
