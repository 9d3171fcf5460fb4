"""Whole-request size limits: a body over its route's limit is a 413 `payload_too_large` as it streams in, at the
first read when Content-Length already says so, before multipart parsing spools a byte of it to disk.

Per-photo and per-file limits stay where they are (the handlers); this bounds what a request can make the
gateway receive at all: the largest valid request of each route, plus room for its other fields.

Time is bounded too (slow-body protection): a body must keep arriving at an average of at least
`body_min_bytes_per_s` after a grace of `body_timeout_s` from the request's start (time allowed =
grace + bytes received / min rate). A client trickling a byte every few seconds is refused with
`408 request_timeout` and the connection closed once the grace is spent; an honest upload at the minimum rate
(64 KB/s by default, a poor mobile uplink) is never cut, whatever its size.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.contracts.images import MAX_IMAGE_BYTES
from services.gateway.settings import GatewaySettings

SLACK = 1024 * 1024  # form fields, multipart framing; also the whole limit of a JSON body
MAX_CSV_BYTES = 5 * 1024 * 1024

_PHOTOS = re.compile(r"/v1/events/[^/]+/attendees(/[^/]+/photos)?/?")
_IMPORTS = re.compile(r"/v1/events/[^/]+/imports/?")


def limits(settings: GatewaySettings) -> Callable[[str], int]:
    photos = settings.max_photos_per_request * MAX_IMAGE_BYTES + SLACK
    imports = settings.import_max_zip_bytes + MAX_CSV_BYTES + SLACK

    def limit_for(path: str) -> int:
        if _PHOTOS.fullmatch(path):
            return photos
        if _IMPORTS.fullmatch(path):
            return imports
        if path.startswith("/v1/gate/"):
            return MAX_IMAGE_BYTES + SLACK
        return SLACK

    return limit_for


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limit_for: Callable[[str], int],
        grace_s: float = 20.0,
        min_bytes_per_s: float = 64 * 1024,
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.grace_s = grace_s
        self.min_bytes_per_s = min_bytes_per_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        received = 0
        done = False
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def limited() -> Message:
            nonlocal received, done
            if done:  # the body is in; later reads wait for a disconnect, which has no deadline
                return await receive()
            # raised from the body read, so it meets the app's error handlers like any other HTTP error (FastAPI
            # re-raises HTTPExceptions from body parsing; anything else would become a 400)
            if declared.isdigit() and int(declared) > limit:
                raise HTTPException(
                    413,
                    f"the request body is {int(declared)} bytes; the limit here is {limit}",
                    headers={"Connection": "close"},
                )
            allowed = start + self.grace_s + received / self.min_bytes_per_s - loop.time()
            try:
                if allowed <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), allowed)
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body did not arrive in time ({received} bytes received)",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"the request body exceeds {limit} bytes", headers={"Connection": "close"})
                done = not message.get("more_body", False)
            return message

        await self.app(scope, limited, send)
