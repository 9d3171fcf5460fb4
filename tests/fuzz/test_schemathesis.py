"""Issue 8: schemathesis against each service's own OpenAPI schema, on the real apps.

The apps are the gateway tests' fixtures: the real embedder (TensorFlow model loaded), the real matcher on real
Postgres + pgvector, the gateway on real Redis. Every generated case (positive and negative data, the coverage
phase's boundary values, random fuzzing) is sent through `httpx.ASGITransport` on the session loop that owns the
apps' connection pools, and its response must pass schemathesis's checks: no 5xx, the status code, content type,
headers and body documented in the schema, invalid data refused with a 4xx.

Bounded for CI: `MAX_EXAMPLES` per operation, no deadline, derandomized (the same cases on every run).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import Case, checks
from schemathesis.specs.openapi.schemas import OpenApiSchema

from services.contracts.models import DEFAULT_MODEL_ID, MODELS
from services.embedder.app import create_app as create_embedder
from services.embedder.settings import EmbedderSettings
from services.gateway.app import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.matcher.app import create_app as create_matcher
from services.matcher.settings import MatcherSettings
from tests.gateway.conftest import ADMIN_TOKEN, Faces, Gateway, Tenant, enrol

MAX_EXAMPLES = 25
# Every built-in check runs except `positive_data_acceptance` (schema-valid data must be accepted): the services
# apply rules a schema cannot state (the model must be one this deployment serves, a photo must hold one good
# face, a ticket must be unique), and answer them with documented 4xx error envelopes.
EXCLUDED_CHECKS = [checks.positive_data_acceptance]
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Sender:
    """Sends a case to an in-process app on the loop that owns its resources and validates the answer."""

    app: FastAPI
    loop: asyncio.AbstractEventLoop
    base_url: str
    sent: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)

    def check(self, case: Case, headers: dict[str, str] | None = None) -> httpx.Response:
        # schemathesis serialises the case exactly as it would send it (multipart, raw bodies, odd query
        # strings); requests prepares the bytes, httpx carries them to the app.
        kwargs = case.as_transport_kwargs(base_url=self.base_url, headers=headers)
        kwargs.pop("timeout", None)
        kwargs.pop("allow_redirects", None)
        kwargs.pop("verify", None)
        prepared = requests.Request(**kwargs).prepare()
        response = self.loop.run_until_complete(self._send(prepared))
        label = f"{case.method.upper()} {case.path}"
        self.sent[label] = self.sent.get(label, 0) + 1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        case.validate_response(response, headers=headers, excluded_checks=EXCLUDED_CHECKS)
        return response

    def summary(self, service: str) -> str:
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return f"\n{service} fuzz: {len(self.sent)} operations, {sum(self.sent.values())} requests ({statuses})"

    async def _send(self, prepared: requests.PreparedRequest) -> httpx.Response:
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        # a crash is a 500 response for `not_a_server_error` to report, not an exception out of the transport
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, timeout=120) as client:
            return await client.request(
                str(prepared.method), str(prepared.url), headers=dict(prepared.headers), content=body
            )


def _schema(app: FastAPI) -> OpenApiSchema:
    """The schema the app serves at /openapi.json (routes do not depend on settings, so a bare app has it)."""
    return schemathesis.openapi.from_dict(app.openapi())


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


# --- gateway ---------------------------------------------------------------------------------------------------


@dataclass
class GatewayWorld:
    """Real ids the generated requests are pointed at, so they get past 404 into the handlers' own checks."""

    sender: Sender
    tenant: Tenant
    attendee_id: str
    tokens: dict[str, str]
    new_tenant: Callable[..., Any]


@pytest.fixture(scope="module")
async def gateway_world(
    gateway: Gateway, new_tenant: Callable[..., Any], faces: Faces, session_loop: asyncio.AbstractEventLoop
) -> Any:
    settings_ = gateway.app.state.settings
    # The fuzzer drives one gate key far faster than a turnstile: the limit has its own test.
    old, settings_.rate_limit_per_second = settings_.rate_limit_per_second, 1_000_000
    tenant = await new_tenant(verify_threshold=MODELS[DEFAULT_MODEL_ID].verify_threshold)
    r = await enrol(tenant.org, tenant.event_id, name="Fuzz", ticket="FZ-1", photos=[faces.photo("Colin_Powell", 1)])
    assert r.status_code == 201, r.text
    org_token = tenant.org.headers["authorization"].removeprefix("Bearer ")
    gate_token = tenant.gate.headers["authorization"].removeprefix("Bearer ")
    world = GatewayWorld(
        sender=Sender(gateway.app, session_loop, "http://gateway"),
        tenant=tenant,
        attendee_id=r.json()["attendee"]["id"],
        tokens={"admin": ADMIN_TOKEN, "organiser": org_token, "gate": gate_token},
        new_tenant=new_tenant,
    )
    yield world
    settings_.rate_limit_per_second = old
    print(world.sender.summary("gateway"))


def _gateway_token(path: str, tokens: dict[str, str]) -> str | None:
    if path.startswith("/v1/gate/"):
        return tokens["gate"]
    if path.startswith("/v1/keys"):
        return tokens["admin"]
    if path.startswith("/v1/events"):
        return tokens["organiser"]
    return None


gateway_schema = _schema(create_gateway(GatewaySettings()))


@gateway_schema.parametrize()
@FUZZ
def test_gateway_schema(case: Case, gateway_world: GatewayWorld) -> None:
    w = gateway_world
    params = case.path_parameters or {}
    # Point valid ids at real resources; a malformed id stays malformed (that is a case of its own).
    if _is_uuid(params.get("event_id")):
        if case.method.upper() == "DELETE" and case.path == "/v1/events/{event_id}":
            # erasing the shared event would turn every later case into a 404: erase a throwaway one
            throwaway = w.sender.loop.run_until_complete(_throwaway_event(w))
            params["event_id"] = throwaway
        else:
            params["event_id"] = w.tenant.event_id
    if _is_uuid(params.get("attendee_id")):
        params["attendee_id"] = w.attendee_id
    if _is_uuid(params.get("key_id")):
        params["key_id"] = w.sender.loop.run_until_complete(_throwaway_key(w))
    token = _gateway_token(case.path, w.tokens)
    headers = {"authorization": f"Bearer {token}"} if token else None
    w.sender.check(case, headers=headers)


async def _throwaway_event(w: GatewayWorld) -> str:
    r = await w.tenant.org.post("/v1/events", json={"name": "fuzz throwaway"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _throwaway_key(w: GatewayWorld) -> str:
    body = {"name": "fuzz throwaway", "role": "gate", "event_id": w.tenant.event_id}
    r = await w.tenant.org.post("/v1/keys", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# --- matcher ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matcher_sender(matcher_app: FastAPI, session_loop: asyncio.AbstractEventLoop) -> Any:
    sender = Sender(matcher_app, session_loop, "http://matcher")
    yield sender
    print(sender.summary("matcher"))


matcher_schema = _schema(create_matcher(MatcherSettings(database_url="postgresql://unused@localhost/unused")))


@matcher_schema.parametrize()
@FUZZ
def test_matcher_schema(case: Case, matcher_sender: Sender) -> None:
    matcher_sender.check(case)


# --- embedder --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder_sender(embedder_app: FastAPI, session_loop: asyncio.AbstractEventLoop) -> Any:
    sender = Sender(embedder_app, session_loop, "http://embedder")
    yield sender
    print(sender.summary("embedder"))


embedder_schema = _schema(create_embedder(EmbedderSettings()))


@embedder_schema.parametrize()
@FUZZ
def test_embedder_schema(case: Case, embedder_sender: Sender) -> None:
    embedder_sender.check(case)
