"""Keys, roles and events: bootstrap, rotation, defaults and overrides. Who may call which route, on whose event,
is the authorization matrix (`test_authorization.py`)."""

from __future__ import annotations

import uuid

import httpx

from services.contracts.models import DEFAULT_MODEL_ID, MODELS
from tests.gateway.conftest import ADMIN_TOKEN, Gateway


async def test_bootstrap_admin_creates_organiser_and_organiser_creates_gate(
    admin: httpx.AsyncClient, new_tenant
) -> None:
    me = await admin.get("/v1/keys/me")
    assert me.status_code == 200 and me.json()["role"] == "admin"
    t = await new_tenant()
    # only the hash is stored: listing never shows a token
    keys = (await t.org.get("/v1/keys")).json()
    assert {k["role"] for k in keys} == {"organiser", "gate"}
    assert all("token" not in k for k in keys)
    # organisers cannot mint organiser or admin keys
    for role in ("organiser", "admin"):
        r = await t.org.post("/v1/keys", json={"name": "x", "role": role})
        assert r.status_code == 403, r.text
    # gate keys need an event, others must not have one
    r = await admin.post("/v1/keys", json={"name": "x", "role": "gate"})
    assert r.status_code == 422


# Overrides stricter than the derived 1:1 threshold (laxer ones are bounded: test_calibrated_decisions).
STRICT = round(MODELS[DEFAULT_MODEL_ID].verify_threshold * 0.8, 4)
STRICTER = round(MODELS[DEFAULT_MODEL_ID].verify_threshold * 0.7, 4)


async def test_event_defaults_and_overrides(new_tenant) -> None:
    t = await new_tenant()
    assert t.event["model_id"] == DEFAULT_MODEL_ID
    assert t.event["threshold_overridden"] is False
    r = await t.org.post(
        "/v1/events", json={"name": "strict", "mode": "verify", "verify_threshold": STRICT, "identify_margin": 0.05}
    )
    assert r.status_code == 201, r.text
    ev = r.json()
    assert ev["verify_threshold"] == STRICT and ev["threshold_overridden"] is True and ev["mode"] == "verify"
    r = await t.org.post("/v1/events", json={"name": "bad", "model_id": "no-such-model"})
    assert r.status_code == 422 and r.json()["code"] == "unknown_model"
    r = await t.org.get(f"/v1/events/{uuid.uuid4()}")
    assert r.status_code == 404


async def test_admin_key_from_settings_is_stable(gateway: Gateway) -> None:
    r = await gateway.client(ADMIN_TOKEN).get("/v1/keys")
    assert r.status_code == 200


async def test_ops_endpoints_and_openapi(gateway: Gateway) -> None:
    anon = gateway.client()
    assert (await anon.get("/healthz")).json()["status"] == "ok"
    r = await anon.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "redis": "ok", "embedder": "ok", "matcher": "ok"}
    spec = (await anon.get("/openapi.json")).json()
    assert {"/v1/gate/verify", "/v1/gate/identify", "/v1/events/{event_id}/attendees", "/v1/keys"} <= set(spec["paths"])


async def test_organiser_key_rotation_keeps_the_events(gateway: Gateway, admin: httpx.AsyncClient, new_tenant) -> None:
    t = await new_tenant()
    r = await admin.post("/v1/keys", json={"name": "rotated", "role": "organiser", "same_tenant_as": t.org_key_id})
    assert r.status_code == 201, r.text
    new_key = r.json()
    org2 = gateway.client(new_key["token"])
    # the new key revokes the old one and still manages the tenant's event and gate keys
    assert (await org2.post(f"/v1/keys/{t.org_key_id}/revoke")).status_code == 200
    assert (await t.org.get("/v1/events")).status_code == 401
    assert (await org2.get(f"/v1/events/{t.event_id}")).status_code == 200
    assert {k["id"] for k in (await org2.get("/v1/keys")).json()} >= {t.gate_key_id, new_key["id"]}
    # and nobody else's: another tenant stays invisible
    other = await new_tenant()
    assert (await org2.get(f"/v1/events/{other.event_id}")).status_code == 404
    r = await other.org.post("/v1/keys", json={"name": "x", "role": "organiser", "same_tenant_as": t.org_key_id})
    assert r.status_code == 403


async def test_update_event_overrides_and_back_to_defaults(new_tenant) -> None:
    t = await new_tenant()
    default = t.event["verify_threshold"]
    base = f"/v1/events/{t.event_id}"
    r = await t.org.patch(base, json={"verify_threshold": STRICTER, "allow_reentry": True, "identify_margin": 0.05})
    assert r.status_code == 200, r.text
    ev = r.json()
    assert (ev["verify_threshold"], ev["allow_reentry"], ev["identify_margin"]) == (STRICTER, True, 0.05)
    assert ev["threshold_overridden"] is True and ev["name"] == t.event["name"]
    r = await t.org.patch(base, json={"verify_threshold": None, "name": None})
    assert r.json()["verify_threshold"] == default and r.json()["threshold_overridden"] is False
    r = await t.org.patch(base, json={"identify_margin": None})
    assert r.json()["margin_overridden"] is False and r.json()["identify_margin"] > 0  # the calibrated one
    assert r.json()["name"] == t.event["name"]
    assert (await t.org.patch(base, json={"model_id": "other"})).json()["model_id"] == DEFAULT_MODEL_ID
    assert (await t.gate.patch(base, json={"allow_reentry": False})).status_code == 403
    other = await new_tenant()
    assert (await other.org.patch(base, json={"allow_reentry": False})).status_code == 404
