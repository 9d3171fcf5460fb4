"""API keys: opaque bearer tokens `fg_<random>`, stored as sha256 (they are 256-bit random, so a fast hash is
enough: there is nothing to brute-force), with a role and a scope.

Scopes: an admin can do everything. An organiser key belongs to a tenant (an organiser account; by default a
new tenant whose id is the key's id, or an existing one with `same_tenant_as`, so keys can be rotated), and the
tenant owns the events its keys create. A gate key is bound to exactly one event (and its tenant). Other tenants'
resources answer 404, not 403, so ids do not leak existence.

Revocation policy: revoking an organiser key revokes the gate keys it created (a stolen organiser key may have
minted them), in the same transaction, and a gate key whose creating organiser key is revoked never authenticates
(also for keys revoked before this rule, or minted while the revocation committed). Rotating an organiser key
therefore means issuing new kiosk keys with the new one. Revoking an admin key does not cascade: organiser
tenants outlive the admin that opened them.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from services.common.errors import BadRequest, NotFound
from services.gateway.errors import Forbidden
from services.gateway.schemas import KeyCreate, Role
from services.gateway.tables import ApiKey, Event

log = logging.getLogger("facegate.gateway.auth")

TOKEN_PREFIX = "fg_"


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID
    role: Role
    tenant_id: uuid.UUID | None  # None for admins
    event_id: uuid.UUID | None  # gate keys only
    name: str

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def resolve_token(session: AsyncSession, token: str) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    creator = aliased(ApiKey)
    found = (
        await session.execute(
            select(ApiKey, creator.role, creator.revoked_at)
            .outerjoin(creator, creator.id == ApiKey.created_by)
            .where(ApiKey.key_hash == hash_token(token), ApiKey.revoked_at.is_(None))
        )
    ).one_or_none()
    if found is None:
        return None
    row, creator_role, creator_revoked_at = found
    if row.role == Role.GATE.value and creator_role == Role.ORGANISER.value and creator_revoked_at is not None:
        return None  # minted by an organiser key that has been revoked since (module doc)
    return Principal(key_id=row.id, role=Role(row.role), tenant_id=row.tenant_id, event_id=row.event_id, name=row.name)


async def create_key(session: AsyncSession, *, principal: Principal, body: KeyCreate) -> tuple[ApiKey, str]:
    """Admins create organiser (and admin) keys; organisers create gate keys for their own events."""
    if principal.role == Role.ADMIN:
        pass
    elif principal.role == Role.ORGANISER:
        if body.role != Role.GATE:
            raise Forbidden("organisers can only create gate keys")
    else:
        raise Forbidden("gate keys cannot create keys")
    key_id = uuid.uuid4()
    tenant_id: uuid.UUID | None = None
    if body.role == Role.ORGANISER:
        tenant_id = key_id
        if body.same_tenant_as is not None:
            other = await session.get(ApiKey, body.same_tenant_as)
            if other is None or other.role != Role.ORGANISER.value:
                raise NotFound("organiser key not found")
            tenant_id = other.tenant_id
    if body.event_id is not None:
        event = await session.get(Event, body.event_id)
        if event is None or not (principal.is_admin or event.tenant_id == principal.tenant_id):
            raise NotFound("event not found")
        tenant_id = event.tenant_id
    token = new_token()
    key = ApiKey(
        id=key_id,
        name=body.name,
        prefix=token[:10],
        key_hash=hash_token(token),
        role=body.role.value,
        tenant_id=tenant_id,
        event_id=body.event_id,
        created_by=principal.key_id,
    )
    session.add(key)
    await session.flush()
    await session.refresh(key)
    return key, token


async def list_keys(session: AsyncSession, *, principal: Principal) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.created_at)
    if principal.role == Role.ORGANISER:
        stmt = stmt.where(ApiKey.tenant_id == principal.tenant_id)
    elif principal.role != Role.ADMIN:
        raise Forbidden("gate keys cannot list keys")
    return list((await session.execute(stmt)).scalars())


async def revoke_key(session: AsyncSession, *, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if principal.role == Role.GATE:
        raise Forbidden("gate keys cannot revoke keys")
    if key is None or not (principal.is_admin or key.tenant_id == principal.tenant_id):
        raise NotFound("key not found")
    if key.id == principal.key_id and principal.is_admin:
        raise BadRequest("an admin cannot revoke its own key; create another admin key first")
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        if key.role == Role.ORGANISER.value:  # and every gate key it minted (module doc)
            await session.execute(
                update(ApiKey)
                .where(ApiKey.created_by == key.id, ApiKey.role == Role.GATE.value, ApiKey.revoked_at.is_(None))
                .values(revoked_at=key.revoked_at)
            )
        await session.flush()
    return key


async def ensure_bootstrap_admin(sessionmaker: async_sessionmaker[AsyncSession], *, token: str | None) -> str | None:
    """Create the first admin key when none exists. Returns the new token (to print once) or None.

    With a configured token (tests, the supervisor) the key is created when no key with that hash exists, so the
    configured token always works.
    """
    async with sessionmaker() as session, session.begin():
        if token is not None:
            if not token.startswith(TOKEN_PREFIX):
                raise ValueError(f"the bootstrap admin key must start with {TOKEN_PREFIX!r}")
            exists = (
                await session.execute(select(ApiKey.id).where(ApiKey.key_hash == hash_token(token)))
            ).scalar_one_or_none()
            if exists is not None:
                await session.execute(update(ApiKey).where(ApiKey.id == exists).values(revoked_at=None))
                return None
        else:
            admins = (
                await session.execute(
                    select(ApiKey.id).where(ApiKey.role == Role.ADMIN.value, ApiKey.revoked_at.is_(None)).limit(1)
                )
            ).scalar_one_or_none()
            if admins is not None:
                return None
            token = new_token()
        session.add(
            ApiKey(
                id=uuid.uuid4(),
                name="bootstrap admin",
                prefix=token[:10],
                key_hash=hash_token(token),
                role=Role.ADMIN.value,
            )
        )
        return token
