"""Dependencies: resources built in the lifespan, reached through `Annotated` aliases; the principal checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.embedder.client import EmbedderClient
from services.gateway.auth import Principal, resolve_token
from services.gateway.cache import TemplateCache
from services.gateway.errors import Forbidden, Unauthorized
from services.gateway.schemas import Role
from services.gateway.settings import GatewaySettings
from services.matcher.client import MatcherClient


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One unit of work per request: commit after the handler, roll back on error (Polar's get_db_session)."""
    async with request.app.state.sessionmaker() as session:
        try:
            yield session
        except Exception:
            await session.rollback()
            raise
        else:
            await session.commit()


def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessionmaker


def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def get_redis(request: Request) -> Any:
    return request.app.state.redis


def get_embedder(request: Request) -> EmbedderClient:
    return request.app.state.embedder


def get_matcher(request: Request) -> MatcherClient:
    return request.app.state.matcher


def get_cache(request: Request) -> TemplateCache:
    return request.app.state.template_cache


# scope="function": the commit runs when the handler returns, before the response is sent, so a failed commit
# is an error response and never a 2xx for data that was not stored.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
# For a flow that owns its unit of work (enrolment.enrol) instead of the request's
SessionmakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]
RedisDep = Annotated[Any, Depends(get_redis)]
EmbedderDep = Annotated[EmbedderClient, Depends(get_embedder)]
MatcherDep = Annotated[MatcherClient, Depends(get_matcher)]
CacheDep = Annotated[TemplateCache, Depends(get_cache)]


# Declares the API key in OpenAPI (the docs' "Authorize" button; schemathesis proves every route enforces it);
# the header is parsed below, so a bad or missing one is our 401 envelope, not FastAPI's.
_bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey", description="an API key: `Authorization: Bearer fg_...`")


async def principal_from_headers(request: Request, session: AsyncSession) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized()
    principal = await resolve_token(session, token.strip())
    if principal is None:
        raise Unauthorized()
    return principal


async def get_principal(
    request: Request,
    session: SessionDep,
    declared: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    # found before the body was read (authfirst.AuthFirstRoute), in this same request: not looked up twice
    early = getattr(request.state, "principal", None)
    if isinstance(early, Principal):
        return early
    principal = await principal_from_headers(request, session)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def role_error(roles: tuple[Role, ...] | frozenset[Role]) -> Forbidden:
    names = [r.value for r in Role if r in roles]  # stable order, whichever collection
    return Forbidden(f"this endpoint needs a key with role {' or '.join(names)}")


def _require(*roles: Role) -> Any:
    async def dependency(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise role_error(roles)
        return principal

    dependency.roles = roles  # type: ignore[attr-defined]  # read by authfirst.required_roles
    return dependency


RequireAdmin = Annotated[Principal, Depends(_require(Role.ADMIN))]
RequireOrganiser = Annotated[Principal, Depends(_require(Role.ADMIN, Role.ORGANISER))]
RequireGate = Annotated[Principal, Depends(_require(Role.GATE))]
