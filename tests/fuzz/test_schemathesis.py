"""Issue 8: schemathesis against each service's own OpenAPI schema, on the real apps.

The apps are the gateway tests' fixtures: the real embedder (TensorFlow model loaded), the real matcher on real
Postgres + pgvector, the gateway on real Redis. Every generated case (positive and negative data, the coverage
phase's boundary values, random fuzzing) goes through schemathesis's own `requests` transport into an adapter
that runs the app on the session loop owning its connection pools, and the response must pass schemathesis's
checks: no 5xx, the status code, content type, headers and body documented in the schema, invalid data refused
with a 4xx, and every operation that declares the gateway's bearer key refusing a request without it.

Bounded for CI: `MAX_EXAMPLES` per operation, no deadline, derandomized (the same cases on every run).
"""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import requests
import requests.adapters
import schemathesis
import urllib3
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import Case, checks
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.schemas import OpenApiSchema
from schemathesis.transport.requests import REQUESTS_TRANSPORT, RequestsTransport
from schemathesis.transport.serialization import Binary

from services.contracts.models import DEFAULT_MODEL_ID, MODELS
from services.embedder.app import create_app as create_embedder
from services.embedder.settings import EmbedderSettings
from services.gateway.app import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.matcher.app import create_app as create_matcher
from services.matcher.settings import MatcherSettings
from tests.conftest import EMBEDDER_HEADERS, MATCHER_HEADERS
from tests.gateway.conftest import ADMIN_TOKEN, Faces, Gateway, Tenant, enrol

# Per operation and phase; CI's bound (all three services in about a minute on 2 cores). A deeper run:
# FACEGATE_FUZZ_EXAMPLES=500 pytest tests/fuzz
MAX_EXAMPLES = int(os.environ.get("FACEGATE_FUZZ_EXAMPLES", "25"))
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


class ASGIAdapter(requests.adapters.BaseAdapter):
    """A `requests` adapter that hands the request to an in-process app on the loop owning its resources.

    schemathesis sends through `requests` (its own probes too: a check re-sends a case without its key to prove
    auth is enforced), so plugging in here keeps every check working against the real app, with no network and
    no second event loop (the apps' Postgres and Redis connections belong to the session loop).
    """

    def __init__(self, app: FastAPI, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.app = app
        self.loop = loop

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        answer = self.loop.run_until_complete(self._send(request))
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(answer.content),
            headers=urllib3.HTTPHeaderDict(answer.headers.multi_items()),
            status=answer.status_code,
            reason=answer.reason_phrase,
            version=11,
            preload_content=False,
            decode_content=False,
        )
        return requests.adapters.HTTPAdapter().build_response(request, raw)

    async def _send(self, request: requests.PreparedRequest) -> httpx.Response:
        body = request.body.encode() if isinstance(request.body, str) else request.body
        # a crash is a 500 response for `not_a_server_error` to report, not an exception out of the transport
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, timeout=120) as client:
            return await client.request(
                str(request.method), str(request.url), headers=dict(request.headers), content=body
            )

    def close(self) -> None:
        pass


# One session with each app mounted at its base URL. schemathesis's own probes (a check re-sends a case without its
# key to prove auth is enforced) drop the session they were given and fall back to the schema's transport, so that
# transport is pointed at this session too (`_in_process_probes`).
IN_PROCESS = requests.Session()


class InProcessTransport(RequestsTransport):
    def send(self, case: Case, *, session: requests.Session | None = None, **kwargs: Any) -> Any:
        return super().send(case, session=session or IN_PROCESS, **kwargs)


IN_PROCESS_TRANSPORT = InProcessTransport()
IN_PROCESS_TRANSPORT._copy_serializers_from(REQUESTS_TRANSPORT)


@pytest.fixture(scope="module", autouse=True)
def _in_process_probes() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(OpenApiSchema, "transport", property(lambda self: IN_PROCESS_TRANSPORT))
        yield


@dataclass
class Sender:
    """Sends cases to one app through `ASGIAdapter` and runs schemathesis's checks on every answer."""

    app: FastAPI
    loop: asyncio.AbstractEventLoop
    base_url: str
    sent: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    # the internal services' credential, sent with every case (schemathesis's auth check then drops it and must
    # get a 401: the internal services declare their token in OpenAPI)
    credential: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        IN_PROCESS.mount(self.base_url, ASGIAdapter(self.app, self.loop))

    def check(self, case: Case, headers: dict[str, str] | None = None) -> requests.Response:
        response = case.call_and_validate(
            base_url=self.base_url,
            session=IN_PROCESS,
            headers={**self.credential, **(headers or {})} or None,
            excluded_checks=EXCLUDED_CHECKS,
        )
        self.sent[case.operation.label] = self.sent.get(case.operation.label, 0) + 1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        return response

    def summary(self, service: str) -> str:
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return f"\n{service} fuzz: {len(self.sent)} operations, {sum(self.sent.values())} cases ({statuses})"


def _schema(app: FastAPI) -> OpenApiSchema:
    """The schema the app serves at /openapi.json (routes do not depend on settings, so a bare app has it)."""
    return schemathesis.openapi.from_dict(app.openapi())


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _point_at(case: Case, name: str, value: Callable[[], str]) -> None:
    """Aim a generated id at a real resource, so the case gets past 404 into the handler's own checks; a malformed
    id stays as generated (it is a case of its own)."""
    params = case.path_parameters or {}
    if _is_uuid(params.get(name)):
        params[name] = value()


# --- gateway ---------------------------------------------------------------------------------------------------


@dataclass
class GatewayWorld:
    sender: Sender
    tenant: Tenant
    attendee_id: str
    tokens: dict[str, str]
    faces: Faces

    def run(self, coro: Any) -> Any:
        return self.sender.loop.run_until_complete(coro)

    async def throwaway_event(self) -> str:
        r = await self.tenant.org.post("/v1/events", json={"name": "fuzz throwaway"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def throwaway_key(self) -> str:
        body = {"name": "fuzz throwaway", "role": "gate", "event_id": self.tenant.event_id}
        r = await self.tenant.org.post("/v1/keys", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def auth(self, path: str) -> dict[str, str] | None:
        token = self.token_for(path)
        return {"Authorization": f"Bearer {token}"} if token else None

    def token_for(self, path: str) -> str | None:
        """The role each route is for: gate routes the event's gate key, keys the admin, events its organiser.
        Who else may call what is the authorization matrix's job (tests/gateway/test_authorization.py)."""
        if path.startswith("/v1/gate/"):
            return self.tokens["gate"]
        if path.startswith("/v1/keys"):
            return self.tokens["admin"]
        if path.startswith("/v1/"):
            return self.tokens["organiser"]
        return None


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
    world = GatewayWorld(
        sender=Sender(gateway.app, session_loop, "http://gateway"),
        tenant=tenant,
        attendee_id=r.json()["attendee"]["id"],
        tokens={
            "admin": ADMIN_TOKEN,
            "organiser": tenant.org.headers["authorization"].removeprefix("Bearer "),
            "gate": tenant.gate.headers["authorization"].removeprefix("Bearer "),
        },
        faces=faces,
    )
    yield world
    settings_.rate_limit_per_second = old
    print(world.sender.summary("gateway"))


gateway_schema = _schema(create_gateway(GatewaySettings()))


@gateway_schema.parametrize()
@FUZZ
def test_gateway_schema(case: Case, gateway_world: GatewayWorld) -> None:
    w = gateway_world
    if case.method.upper() == "DELETE" and case.path == "/v1/events/{event_id}":
        # erasing the shared event would turn every later case into a 404: erase a throwaway one
        _point_at(case, "event_id", lambda: w.run(w.throwaway_event()))
    else:
        _point_at(case, "event_id", lambda: w.tenant.event_id)
    _point_at(case, "attendee_id", lambda: w.attendee_id)  # erased by one DELETE case: 404s after, as they should
    _point_at(case, "key_id", lambda: w.run(w.throwaway_key()))  # revoking the shared keys would end the run
    # a case about its headers (a missing or mangled Authorization among them) is sent as made
    headers_as_made = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    w.sender.check(case, headers=None if headers_as_made else w.auth(case.path))


# --- matcher ---------------------------------------------------------------------------------------------------


@dataclass
class MatcherWorld:
    sender: Sender
    event_id: str
    attendee_id: str

    def run(self, coro: Any) -> Any:
        return self.sender.loop.run_until_complete(coro)

    async def gallery_with_template(self, event_id: str | None = None) -> tuple[str, str]:
        """A gallery of the default model holding one template; returns (event id, attendee id)."""
        event_id = event_id or str(uuid.uuid4())
        attendee_id = str(uuid.uuid4())
        model = MODELS[DEFAULT_MODEL_ID]
        vec = np.random.default_rng(7).standard_normal(model.dim)
        vec /= np.linalg.norm(vec)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.sender.app), base_url="http://m", headers=MATCHER_HEADERS
        ) as c:
            r = await c.put(f"/v1/galleries/{event_id}", json={"model_id": model.id})
            assert r.status_code in (200, 201), r.text
            body = {"templates": [{"attendee_id": attendee_id, "model_id": model.id, "embedding": vec.tolist()}]}
            r = await c.post(f"/v1/galleries/{event_id}/templates", json=body)
            assert r.status_code == 201, r.text
        return event_id, attendee_id


@pytest.fixture(scope="module")
async def matcher_world(matcher_app: FastAPI, session_loop: asyncio.AbstractEventLoop) -> Any:
    world = MatcherWorld(Sender(matcher_app, session_loop, "http://matcher", credential=MATCHER_HEADERS), "", "")
    world.event_id, world.attendee_id = await world.gallery_with_template()
    yield world
    print(world.sender.summary("matcher"))


matcher_schema = _schema(create_matcher(MatcherSettings(database_url="postgresql://unused@localhost/unused")))


@matcher_schema.parametrize()
@FUZZ
def test_matcher_schema(case: Case, matcher_world: MatcherWorld) -> None:
    w = matcher_world
    if case.method.upper() == "DELETE":
        # deleting the shared gallery or attendee would turn every later case into a 404
        event_id, attendee_id = w.run(w.gallery_with_template())
        _point_at(case, "event_id", lambda: event_id)
        _point_at(case, "attendee_id", lambda: attendee_id)
    else:
        _point_at(case, "event_id", lambda: w.event_id)
        _point_at(case, "attendee_id", lambda: w.attendee_id)
    w.sender.check(case)


# --- embedder --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder_sender(embedder_app: FastAPI, session_loop: asyncio.AbstractEventLoop) -> Any:
    sender = Sender(embedder_app, session_loop, "http://embedder", credential=EMBEDDER_HEADERS)
    yield sender
    print(sender.summary("embedder"))


embedder_schema = _schema(create_embedder(EmbedderSettings()))


@embedder_schema.parametrize()
@FUZZ
def test_embedder_schema(case: Case, embedder_sender: Sender) -> None:
    embedder_sender.check(case)


# --- real photos -----------------------------------------------------------------------------------------------
# Generated bytes never decode to a face, so the fuzzer only ever meets the image routes' refusals. These cases
# send real photos through the same checks, so their 2xx answers (and a quality refusal) are held to the schema.


def _photo(faces: Faces, identity: str, n: int) -> Binary:
    return Binary(faces.path(identity, n).read_bytes())


def test_gateway_image_routes_with_real_photos_answer_as_documented(
    gateway_world: GatewayWorld, new_tenant: Callable[..., Any]
) -> None:
    w, f = gateway_world, gateway_world.faces
    # an event of its own: the fuzzer's PATCH cases leave the shared one in whatever mode and thresholds they set
    t: Tenant = w.run(new_tenant(allow_reentry=True, verify_threshold=MODELS[DEFAULT_MODEL_ID].verify_threshold))
    org = {"Authorization": str(t.org.headers["authorization"])}
    gate = {"Authorization": str(t.gate.headers["authorization"])}
    event = {"event_id": t.event_id}
    ticket = f"RP-{uuid.uuid4().hex[:8]}"
    enrol_ = gateway_schema["/v1/events/{event_id}/attendees"]["POST"]
    r = w.sender.check(
        enrol_.Case(
            path_parameters=event,
            body={"name": "Real Photo", "ticket_code": ticket, "photos": [_photo(f, "Ariel_Sharon", 1)] * 2},
            media_type="multipart/form-data",
        ),
        headers=org,
    )
    assert r.status_code == 201, r.text
    attendee = {**event, "attendee_id": r.json()["attendee"]["id"]}
    r = w.sender.check(
        gateway_schema["/v1/events/{event_id}/attendees/{attendee_id}/photos"]["POST"].Case(
            path_parameters=attendee, body={"photos": [_photo(f, "Ariel_Sharon", 2)]}, media_type="multipart/form-data"
        ),
        headers=org,
    )
    assert r.status_code == 201, r.text
    r = w.sender.check(
        enrol_.Case(
            path_parameters=event,
            body={"name": "No Face", "ticket_code": f"{ticket}-x", "photos": [Binary(f.other("noface")[1])]},
            media_type="multipart/form-data",
        ),
        headers=org,
    )
    assert r.status_code == 422 and r.json()["code"] == "quality_rejected", r.text
    for path, body in (
        ("/v1/gate/verify", {"ticket_code": ticket, "frame": _photo(f, "Ariel_Sharon", 3)}),
        ("/v1/gate/identify", {"frame": _photo(f, "Ariel_Sharon", 3)}),
    ):
        r = w.sender.check(gateway_schema[path]["POST"].Case(body=body, media_type="multipart/form-data"), headers=gate)
        assert r.status_code == 200, r.text
        assert r.json()["decision"] == "admit" and r.json()["attendee_id"] == attendee["attendee_id"], r.text


def test_embedder_with_real_photos_answers_as_documented(embedder_sender: Sender, faces: Faces) -> None:
    embed = embedder_schema["/v1/embed"]["POST"]
    photo = _photo(faces, "Colin_Powell", 3)
    for case in (
        embed.Case(body=photo, media_type="image/jpeg", query={"profile": "enrol"}),
        embed.Case(body={"image": photo}, media_type="multipart/form-data", query={"max_faces": 1}),
        embed.Case(body=Binary(faces.other("group", 2)[1]), media_type="image/jpeg"),
    ):
        r = embedder_sender.check(case)
        assert r.status_code == 200, r.text
        assert r.json()["faces"], r.text
