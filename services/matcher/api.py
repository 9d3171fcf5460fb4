"""HTTP endpoints of the matcher: thin wrappers over `galleries`, one unit of work per request."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.errors import ERROR_RESPONSES
from services.common.health import Health
from services.common.internal_auth import declare_in_openapi
from services.contracts.matcher import (
    AttendeeTemplates,
    Deleted,
    DistanceRequest,
    DistanceResponse,
    GalleryCreate,
    GalleryResponse,
    SearchMatch,
    SearchRequest,
    SearchResponse,
    TemplateOut,
    TemplatesCreate,
    TemplatesCreated,
)
from services.matcher import galleries, write_store
from services.matcher.searchpool import SearchConnection
from services.matcher.settings import MatcherSettings


def _settings(request: Request) -> MatcherSettings:
    return request.app.state.settings


def _sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessionmaker


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """Commit after the handler returns, roll back if it raises.

    Used with scope="function" so the commit happens before the response is sent: a failed commit is an
    error response, never a 2xx for work that did not land.
    """
    async with _sessionmaker(request)() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


async def _search_connection(request: Request) -> AsyncIterator[SearchConnection]:
    """A connection of the search pool (autocommit, see `searchpool`): no transaction to commit."""
    async with request.app.state.search_pool.connection() as conn:
        yield conn


def _gallery_cache(request: Request) -> galleries.GalleryCache:
    return request.app.state.gallery_cache  # type: ignore[no-any-return]


SettingsDep = Annotated[MatcherSettings, Depends(_settings)]
CacheDep = Annotated[galleries.GalleryCache, Depends(_gallery_cache)]
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
SearchConnDep = Annotated[SearchConnection, Depends(_search_connection, scope="function")]

router = APIRouter(
    prefix="/v1/galleries", tags=["galleries"], responses=ERROR_RESPONSES, dependencies=[declare_in_openapi()]
)
ops_router = APIRouter(tags=["ops"])


def _gallery_out(event_id: uuid.UUID, g: galleries.Gallery) -> GalleryResponse:
    return GalleryResponse(
        event_id=event_id,
        model_id=g.row.model_id,
        dim=g.row.dim,
        templates=g.templates,
        attendees=g.attendees,
        created_at=g.row.created_at,
        search_mode=g.search_mode,
    )


@router.put("/{event_id}", response_model=GalleryResponse)
async def ensure_gallery(
    event_id: uuid.UUID, body: GalleryCreate, session: SessionDep, settings: SettingsDep, cache: CacheDep
) -> GalleryResponse:
    """Create the event's gallery pinned to `model_id`, or return it if it exists with that model."""
    g = await galleries.ensure_gallery(session, event_id, model_id=body.model_id, settings=settings, cache=cache)
    return _gallery_out(event_id, g)


@router.get("/{event_id}", response_model=GalleryResponse)
async def gallery_stats(event_id: uuid.UUID, session: SessionDep, settings: SettingsDep) -> GalleryResponse:
    return _gallery_out(event_id, await galleries.gallery_stats(session, event_id, settings=settings))


@router.delete("/{event_id}", response_model=Deleted)
async def drop_gallery(event_id: uuid.UUID, session: SessionDep, cache: CacheDep) -> Deleted:
    """Erase the event: its partition (templates and index) is dropped."""
    return Deleted(deleted=await galleries.drop_gallery(session, event_id, cache=cache))


@router.post("/{event_id}/templates", response_model=TemplatesCreated, status_code=status.HTTP_201_CREATED)
async def add_templates(
    event_id: uuid.UUID, body: TemplatesCreate, session: SessionDep, settings: SettingsDep, cache: CacheDep
) -> TemplatesCreated:
    """Add photo templates (all or nothing). An attendee left with 2+ photo templates also holds their mean
    template (unless `FACEGATE_MATCHER_MEAN_TEMPLATES=false`), remade in the same write; it counts in the
    gallery's `templates` and in `attendee_templates`."""
    added = await galleries.add_templates(
        session, event_id, templates=body.templates, cache=cache, means=settings.mean_templates
    )
    return TemplatesCreated(ids=added.ids, attendee_templates=added.per_attendee)


@router.get("/{event_id}/attendees/{attendee_id}/templates", response_model=AttendeeTemplates)
async def attendee_templates(event_id: uuid.UUID, attendee_id: uuid.UUID, session: SessionDep) -> AttendeeTemplates:
    model_id, rows = await galleries.attendee_templates(session, event_id, attendee_id)
    return AttendeeTemplates(
        attendee_id=attendee_id,
        model_id=model_id,
        templates=[
            TemplateOut(
                id=r.id,
                attendee_id=r.attendee_id,
                model_id=r.model_id,
                embedding=r.embedding,
                quality=r.quality,
                created_at=r.created_at,
                kind="mean" if r.kind == "mean" else "photo",
            )
            for r in rows
        ],
    )


@router.delete("/{event_id}/attendees/{attendee_id}", response_model=Deleted)
async def delete_attendee(event_id: uuid.UUID, attendee_id: uuid.UUID, session: SessionDep, cache: CacheDep) -> Deleted:
    return Deleted(deleted=await galleries.delete_attendee(session, event_id, attendee_id, cache=cache))


@router.post("/{event_id}/search", response_model=SearchResponse)
async def search(
    event_id: uuid.UUID, body: SearchRequest, conn: SearchConnDep, settings: SettingsDep, request: Request
) -> SearchResponse:
    result = await galleries.search(
        conn,
        event_id,
        model_id=body.model_id,
        embedding=body.embedding,
        k=body.k,
        settings=settings,
        residents=request.app.state.residents,
        cache=request.app.state.gallery_cache,
    )
    return SearchResponse(
        matches=[
            SearchMatch(attendee_id=m.attendee_id, template_id=m.template_id, distance=m.distance)
            for m in result.matches
        ],
        mode=result.mode,
        templates=result.templates,
        attendees=result.attendees,
    )


@router.post("/{event_id}/attendees/{attendee_id}/distance", response_model=DistanceResponse)
async def attendee_distance(
    event_id: uuid.UUID, attendee_id: uuid.UUID, body: DistanceRequest, session: SessionDep
) -> DistanceResponse:
    d = await galleries.attendee_distance(
        session, event_id, attendee_id, model_id=body.model_id, embedding=body.embedding
    )
    return DistanceResponse(
        attendee_id=attendee_id, distance=d.distance, template_id=d.template_id, templates=d.templates
    )


@ops_router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@ops_router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request) -> Health | JSONResponse:
    """503 with the reason when the database is unreachable or migrations have not been applied."""
    try:
        async with _sessionmaker(request)() as session:
            await session.execute(text("SELECT 1"))
            missing = await write_store.missing_schema(session)
    except Exception as exc:
        body = Health(status="not_ready", checks={"database": f"unreachable: {type(exc).__name__}"})
        return JSONResponse(status_code=503, content=body.model_dump())
    if missing:
        checks = {"database": "ok", "schema": "missing " + ", ".join(missing) + " (run alembic upgrade head)"}
        return JSONResponse(status_code=503, content=Health(status="not_ready", checks=checks).model_dump())
    return Health(status="ok", checks={"database": "ok", "schema": "ok"})
