"""Authenticate before reading a body.

FastAPI reads and parses a request's body (a multipart form spooled to disk, up to the route's limit) before it
resolves the handler's dependencies, so a caller with no key could make the gateway receive 100 MB before its 401.
`AuthFirstRoute` runs the checks that need only the headers and the path first: the key (401), the role the
handler requires (403, read from its `RequireX` dependency), the event named in the path for an organiser (404),
and the per-key rate limit (429; gate keys and organiser/admin keys each have theirs). Only then does FastAPI read
the body. The handler's dependencies still run (the principal found here is reused, not looked up twice), so the
policy lives in one place (`deps.py`) and these checks can only refuse earlier what the handler would refuse.

A refusal sent before the body was read closes the connection (`Connection: close`): the unread body cannot be
skipped cheaply, and a keyless client gets no second request on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from services.common.errors import FacegateError
from services.gateway.auth import Principal
from services.gateway.errors import EventNotFound
from services.gateway.events import can_manage
from services.gateway.ratelimit import check_rate_limit
from services.gateway.schemas import Role
from services.gateway.tables import Event

ALL_ROLES = frozenset(Role)


def required_roles(dependant: Dependant) -> frozenset[Role] | None:
    """The roles a handler admits, from its dependencies: a `RequireX` names them, a bare `PrincipalDep` admits any
    key; None when the handler needs no key at all (public pages)."""
    from services.gateway.deps import get_principal

    found: frozenset[Role] | None = None
    stack = [dependant]
    while stack:
        d = stack.pop()
        roles = getattr(d.call, "roles", None)
        if roles is not None:
            found = frozenset(roles) if found is None else found & frozenset(roles)
        elif d.call is get_principal and found is None:
            found = ALL_ROLES
        stack.extend(d.dependencies)
    return found


async def check_before_body(request: Request, roles: frozenset[Role]) -> Principal:
    from services.gateway.deps import principal_from_headers, role_error

    state = request.app.state
    async with state.sessionmaker() as session:
        principal = await principal_from_headers(request, session)
        if principal.role not in roles:
            raise role_error(roles)
        raw_event = request.path_params.get("event_id")
        if raw_event is not None and principal.role != Role.GATE:
            try:
                event_id = uuid.UUID(str(raw_event))
            except ValueError:
                event_id = None  # malformed: the handler's own validation answers 422
            if event_id is not None:
                event = await session.get(Event, event_id)
                if event is None or not can_manage(principal, event):
                    raise EventNotFound()
    # per key, before the body: a flooding key's uploads are not read either. Gate keys have their own limit; the
    # organiser one bounds what a stolen or runaway organiser or admin key can make the gateway do.
    settings = state.settings
    limit = settings.rate_limit_per_second if principal.role == Role.GATE else settings.organiser_rate_limit_per_second
    await check_rate_limit(state.redis, key_id=principal.key_id, limit_per_second=limit, health=state.redis_health)
    request.state.principal = principal
    return principal


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(request.headers.get("transfer-encoding")) or (length is not None and length.strip() not in ("", "0"))


class AuthFirstRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        roles = required_roles(self.dependant)
        if roles is None:
            return handler

        async def authenticated_first(request: Request) -> Response:
            try:
                await check_before_body(request, roles)
            except FacegateError as exc:
                if _has_body(request):
                    exc.headers = {**(exc.headers or {}), "Connection": "close"}
                raise
            return await handler(request)

        return authenticated_first
