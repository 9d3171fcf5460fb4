"""Service-to-service authentication for the internal services (embedder, matcher).

Only the gateway may call them: every request must carry `Authorization: Bearer <the service's internal token>`,
a per-deployment secret (`FACEGATE_EMBEDDER_INTERNAL_TOKEN`, `FACEGATE_MATCHER_INTERNAL_TOKEN`; `make run`
generates both). Each service has its own token, so the embedder, which parses hostile images, holds nothing that
opens the matcher's templates. The check is a pure ASGI middleware: it answers 401 from the headers alone, before
a byte of the body is read, and compares in constant time. Open without the token: `/healthz` (liveness says
nothing) and `/readyz` (orchestrator probes; it names only component states). `/metrics` needs the token: traffic
counts by route and status tell an outsider when gates are busy.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import Security
from fastapi.security import HTTPBearer
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
MIN_TOKEN_CHARS = 32  # make run generates 43 url-safe characters (256 bits)


class MissingInternalToken(RuntimeError):
    pass


def require_token(token: SecretStr | None, env_var: str) -> bytes:
    """The configured token as bytes; a service never starts open (no token, or a guessable one)."""
    value = token.get_secret_value() if token is not None else ""
    if len(value) < MIN_TOKEN_CHARS:
        raise MissingInternalToken(
            f"{env_var} must be set to a secret of at least {MIN_TOKEN_CHARS} characters "
            "(make run generates one; in compose it comes from the environment)"
        )
    return value.encode()


def bearer(token: SecretStr | None) -> dict[str, str]:
    """Headers a client sends to an internal service."""
    return {"authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}


class InternalAuthMiddleware:
    def __init__(self, app: ASGIApp, *, token: bytes, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app = app
        self.expected = b"Bearer " + token
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        presented = b""
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                presented = value
                break
        # constant time in the token's content: a mismatch at the first byte costs what one at the last does
        if hmac.compare_digest(presented, self.expected):
            await self.app(scope, receive, send)
            return
        request_id = (scope.get("state") or {}).get("request_id")
        body = {"code": "unauthorized", "detail": "missing or invalid internal credential"}
        if request_id:
            body["request_id"] = request_id
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                    # the body was not read: the connection cannot carry another request
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def declare_in_openapi() -> Any:
    """A route dependency that only declares the scheme in OpenAPI (the middleware enforces it), so clients and
    schemathesis know every operation needs the token."""
    return Security(HTTPBearer(auto_error=False, scheme_name="InternalToken", description="the internal token"))
