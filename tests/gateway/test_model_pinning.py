"""An event is pinned to the model it was created with. A gateway whose embedder serves another model (a
deployment switched `FACEGATE_EMBEDDER_MODEL_ID`, or a gateway and an embedder configured apart) must refuse to
decide or enrol on that event: 503 `dependency_unavailable`, never a decision on vectors of two models.

Two gateways share the real Postgres, matcher and Redis: the session's, whose embedder serves the default model,
and one here whose real embedder serves the other shipped model. The event and its attendee are made through the
second, where the gate admits (so the refusal below is about the model, not about the face or the ticket).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.contracts.models import DEFAULT_MODEL_ID, MODELS
from tests.conftest import MATCHER_HEADERS
from tests.gateway.conftest import ADMIN_TOKEN, Faces, Gateway, enrol, identify, running_gateway, verify

OTHER_MODEL = next(m for m in MODELS if m != DEFAULT_MODEL_ID)


@pytest.fixture(scope="module")
async def other_gateway(
    pg_url: str, redis_server: Any, matcher_app: FastAPI, gateway: Gateway
) -> AsyncIterator[Gateway]:
    """A gateway in front of a real embedder serving the model that is not the default."""
    from services.embedder.app import create_app as create_embedder
    from services.embedder.settings import EmbedderSettings

    embedder = create_embedder(EmbedderSettings(model_id=OTHER_MODEL, load_in_background=False))
    async with (
        embedder.router.lifespan_context(embedder),
        running_gateway(
            pg_url, f"unix://{redis_server.socket_file}", embedder, matcher_app, default_model_id=OTHER_MODEL
        ) as gw,
    ):
        yield gw


async def test_a_gateway_whose_embedder_serves_another_model_never_decides(
    other_gateway: Gateway, gateway: Gateway, faces: Faces, matcher_app: FastAPI
) -> None:
    admin = other_gateway.client(ADMIN_TOKEN)
    r = await admin.post("/v1/keys", json={"name": "pinned org", "role": "organiser"})
    assert r.status_code == 201, r.text
    org_token = r.json()["token"]
    org = other_gateway.client(org_token)
    threshold = MODELS[OTHER_MODEL].verify_threshold  # pinned, in that model's own distance scale
    r = await org.post(
        "/v1/events",
        json={"name": "pinned", "allow_reentry": True, "verify_threshold": threshold, "identify_threshold": threshold},
    )
    assert r.status_code == 201 and r.json()["model_id"] == OTHER_MODEL, r.text
    event_id = r.json()["id"]
    r = await org.post("/v1/keys", json={"name": "gate", "role": "gate", "event_id": event_id})
    assert r.status_code == 201, r.text
    gate_token = r.json()["token"]
    r = await enrol(org, event_id, name="Colin", ticket="M-1", photos=[faces.photo("Colin_Powell", 1)])
    assert r.status_code == 201, r.text
    frame = faces.photo("Colin_Powell", 2)
    # through a gateway whose embedder serves the event's model, the holder is admitted, 1:1 and 1:K
    r = await verify(other_gateway.client(gate_token), "M-1", frame)
    assert (r.status_code, r.json()["decision"]) == (200, "admit"), r.text
    r = await identify(other_gateway.client(gate_token), frame)
    assert (r.status_code, r.json()["decision"]) == (200, "admit"), r.text
    log_before = (await org.get(f"/v1/events/{event_id}/log")).json()["items"]
    assert len(log_before) == 2

    # the session's gateway (same database, matcher and Redis) embeds with the default model: no decision
    gate = gateway.client(gate_token)
    same_org = gateway.client(org_token)
    for what, answer in (
        ("verify", await verify(gate, "M-1", frame)),
        ("identify", await identify(gate, frame)),
        ("verify, unknown ticket", await verify(gate, "NO-SUCH", frame)),
        ("enrol", await enrol(same_org, event_id, name="Tony", ticket="M-2", photos=[faces.photo("Tony_Blair", 2)])),
    ):
        assert answer.status_code == 503, (what, answer.text)
        assert answer.json()["code"] == "dependency_unavailable" and int(answer.headers["retry-after"]) > 0, what
    # nothing was decided, logged or stored
    assert (await org.get(f"/v1/events/{event_id}/log")).json()["items"] == log_before
    r = await org.get(f"/v1/events/{event_id}/attendees")
    assert [a["ticket_code"] for a in r.json()["items"]] == ["M-1"], r.text
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=matcher_app), base_url="http://m", headers=MATCHER_HEADERS
    ) as m:
        r = await m.get(f"/v1/galleries/{event_id}")
        assert (r.json()["model_id"], r.json()["templates"]) == (OTHER_MODEL, 1), r.text
