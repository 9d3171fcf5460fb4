from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from services.common.errors import ERROR_RESPONSES
from services.gateway import auth
from services.gateway.authfirst import AuthFirstRoute
from services.gateway.deps import PrincipalDep, SessionDep
from services.gateway.schemas import KeyCreate, KeyCreated, KeyOut

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERROR_RESPONSES, route_class=AuthFirstRoute)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
async def create_key(body: KeyCreate, session: SessionDep, principal: PrincipalDep) -> KeyCreated:
    """Admins create organiser (or admin) keys; organisers create gate keys bound to one of their events."""
    key, token = await auth.create_key(session, principal=principal, body=body)
    return KeyCreated(**KeyOut.model_validate(key).model_dump(), token=token)


@router.get("", response_model=list[KeyOut])
async def list_keys(session: SessionDep, principal: PrincipalDep) -> list[KeyOut]:
    return [KeyOut.model_validate(k) for k in await auth.list_keys(session, principal=principal)]


@router.post("/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> KeyOut:
    return KeyOut.model_validate(await auth.revoke_key(session, principal=principal, key_id=key_id))


@router.get("/me", response_model=KeyOut)
async def whoami(session: SessionDep, principal: PrincipalDep) -> KeyOut:
    from services.gateway.tables import ApiKey

    return KeyOut.model_validate(await session.get(ApiKey, principal.key_id))
