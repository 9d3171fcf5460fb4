"""Issue 8: the authorization matrix. Every route of the gateway app (read from `app.routes`, so a route added
without an entry in `ROUTES` fails) x every kind of caller x its own tenant's event and another tenant's, each
cell asserted against the policy of `services/gateway/auth.py` and `deps.py`:

- no key, an unknown key, a valid key under another scheme, a revoked key: 401 on every route but the public ones;
- admin: everything, on any tenant's event;
- organiser: its own tenant's events, attendees, imports and keys; another tenant's answer 404, as if they did not
  exist (ids do not leak); the gate routes 403;
- gate key: the gate routes only, always on the one event the key is bound to (there is no way to name another);
  403 elsewhere, except `GET /v1/keys/me`.

An allowed cell must get the route's success status with a real request (real photos, real ids), so "allowed"
means the handler did its work, not only that auth let it through. A refused cell must leave the shared
resources as they were (checked at the end).
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import httpx
import pytest
from starlette.routing import BaseRoute

from tests.gateway.conftest import ADMIN_TOKEN, Faces, Gateway, Tenant, enrol, identify, verify


class Rule(Enum):
    PUBLIC = "public"  # no key needed
    ANY_KEY = "any key"  # any valid key
    ORGANISER = "organiser"  # admin or organiser, not tied to one event
    EVENT = "event"  # admin, or the organiser whose tenant owns the target event (another tenant's: 404)
    GATE = "gate"  # gate keys only; the key names the event


@dataclass(frozen=True)
class Caller:
    name: str
    header: str | None  # the Authorization header sent, None for none
    role: str | None  # None: not a valid key
    tenant: str | None = None  # "A" or "B" for organiser and gate keys


@dataclass
class Target:
    """One tenant's event and the resources in it that requests name."""

    tenant: str
    event_id: str
    attendee_id: str
    ticket: str
    gate_key_id: str
    job_id: str


@dataclass
class World:
    gateway: Gateway
    admin: httpx.AsyncClient
    raw: httpx.AsyncClient  # no default Authorization: each cell sends its caller's
    faces: Faces
    callers: list[Caller]
    targets: dict[str, Target]
    gate_tickets: dict[str, str]  # gate caller name -> a ticket enrolled in its own event
    orgs: dict[str, httpx.AsyncClient]  # tenant -> its organiser
    gate_events: list[tuple[str, str]] = field(default_factory=list)  # (tenant, event) of every gate caller

    def client_of(self, caller_name: str) -> httpx.AsyncClient:
        header = next(c.header for c in self.callers if c.name == caller_name)
        return self.gateway.client(str(header).removeprefix("Bearer "))


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    kwargs: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[World, Target, bool], Awaitable[Request]]


# --- requests, one per route: real bodies and ids, fresh resources where an allowed call consumes them -------------


def _photo(w: World, n: int = 1) -> tuple[str, bytes, str]:
    return w.faces.photo("Ariel_Sharon", n)


async def _fresh_attendee(w: World, t: Target) -> str:
    r = await w.admin.post(
        f"/v1/events/{t.event_id}/attendees",
        data={"name": "Fresh", "ticket_code": f"F-{uuid.uuid4().hex[:8]}", "allow_duplicate_face": "true"},
        files=[("photos", _photo(w))],
    )
    assert r.status_code == 201, r.text
    return str(r.json()["attendee"]["id"])


async def _fresh_event(w: World, t: Target) -> str:
    # created by the target tenant's organiser so that it belongs to that tenant
    r = await w.orgs[t.tenant].post("/v1/events", json={"name": "to erase"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _fresh_gate_key(w: World, t: Target) -> str:
    r = await w.admin.post("/v1/keys", json={"name": "to revoke", "role": "gate", "event_id": t.event_id})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _zip(photos: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in photos.items():
            z.writestr(name, data)
    return buf.getvalue()


def _import_files(w: World) -> dict[str, Any]:
    ticket = f"I-{uuid.uuid4().hex[:8]}"
    csv = f"name,ticket_code,photos\nImported,{ticket},a.jpg\n".encode()
    return {
        "csv": ("a.csv", csv, "text/csv"),
        "photos": ("p.zip", _zip({"a.jpg": _photo(w)[1]}), "application/zip"),
    }


def _const(method: str, url: str, **kwargs: Any) -> Builder:
    async def build(w: World, t: Target, allowed: bool) -> Request:
        return Request(method, url, kwargs)

    return build


def _on_event(method: str, suffix: str = "", **kwargs: Any) -> Builder:
    async def build(w: World, t: Target, allowed: bool) -> Request:
        return Request(method, f"/v1/events/{t.event_id}{suffix}", kwargs)

    return build


def _on_attendee(method: str, suffix: str = "", *, fresh: bool = False) -> Builder:
    async def build(w: World, t: Target, allowed: bool) -> Request:
        attendee = await _fresh_attendee(w, t) if fresh and allowed else t.attendee_id
        kwargs: dict[str, Any] = {}
        if suffix == "/photos":  # the matrix's one face again, on another attendee: on purpose
            kwargs = {"files": [("photos", _photo(w, 2))], "data": {"allow_duplicate_face": "true"}}
        return Request(method, f"/v1/events/{t.event_id}/attendees/{attendee}{suffix}", kwargs)

    return build


async def _on_job(w: World, t: Target, allowed: bool) -> Request:
    return Request("GET", f"/v1/events/{t.event_id}/imports/{t.job_id}")


async def _erase_event(w: World, t: Target, allowed: bool) -> Request:
    return Request("DELETE", f"/v1/events/{await _fresh_event(w, t) if allowed else t.event_id}")


async def _enrol(w: World, t: Target, allowed: bool) -> Request:
    # the same photo for every cell: one face under many tickets, on purpose (duplicates have their own test)
    data = {"name": "Matrix", "ticket_code": f"M-{uuid.uuid4().hex[:8]}", "allow_duplicate_face": "true"}
    return Request("POST", f"/v1/events/{t.event_id}/attendees", {"data": data, "files": [("photos", _photo(w))]})


async def _start_import(w: World, t: Target, allowed: bool) -> Request:
    return Request("POST", f"/v1/events/{t.event_id}/imports", {"files": _import_files(w)})


async def _create_gate_key(w: World, t: Target, allowed: bool) -> Request:
    return Request("POST", "/v1/keys", {"json": {"name": "matrix gate", "role": "gate", "event_id": t.event_id}})


async def _revoke_key(w: World, t: Target, allowed: bool) -> Request:
    return Request("POST", f"/v1/keys/{await _fresh_gate_key(w, t) if allowed else t.gate_key_id}/revoke")


def _gate(path: str) -> Builder:
    async def build(w: World, t: Target, allowed: bool) -> Request:
        # the ticket is filled in per caller (each gate key checks a ticket of its own event): see `_send`
        data = {"ticket_code": ""} if path.endswith("verify") else {}
        return Request("POST", path, {"data": data, "files": {"frame": _photo(w, 3)}})

    return build


def _burst(path: str) -> Builder:
    async def build(w: World, t: Target, allowed: bool) -> Request:
        # a still photo four times: the challenge is not answered (200 deny liveness_failed) but the call is allowed
        data = {"ticket_code": ""} if path.startswith("/v1/gate/verify") else {}
        return Request("POST", path, {"data": data, "files": [("frames", _photo(w, 3))] * 4})

    return build


async def _streamed(w: World, t: Target, allowed: bool) -> Request:
    # the first part of a burst streamed ahead of its decision: nothing decided, 202
    return Request("POST", "/v1/gate/burst/frames", {"data": {"offset": "0"}, "files": [("frames", _photo(w, 3))]})


async def _liveness(w: World, mode: str) -> None:
    for tenant, event_id in w.gate_events:
        r = await w.orgs[tenant].patch(f"/v1/events/{event_id}", json={"liveness": mode})
        assert r.status_code == 200, r.text


@dataclass(frozen=True)
class Entry:
    rule: Rule
    ok: int  # the status an allowed call gets
    build: Builder


# Every API route: who may call it and the status an allowed call gets.
ROUTES: dict[tuple[str, str], Entry] = {
    ("GET", "/v1/keys"): Entry(Rule.ORGANISER, 200, _const("GET", "/v1/keys")),
    ("POST", "/v1/keys"): Entry(Rule.EVENT, 201, _create_gate_key),
    ("POST", "/v1/keys/{key_id}/revoke"): Entry(Rule.EVENT, 200, _revoke_key),
    ("GET", "/v1/keys/me"): Entry(Rule.ANY_KEY, 200, _const("GET", "/v1/keys/me")),
    ("GET", "/v1/events"): Entry(Rule.ORGANISER, 200, _const("GET", "/v1/events")),
    ("POST", "/v1/events"): Entry(Rule.ORGANISER, 201, _const("POST", "/v1/events", json={"name": "matrix"})),
    ("GET", "/v1/events/{event_id}"): Entry(Rule.EVENT, 200, _on_event("GET")),
    ("PATCH", "/v1/events/{event_id}"): Entry(Rule.EVENT, 200, _on_event("PATCH", json={"allow_reentry": False})),
    ("DELETE", "/v1/events/{event_id}"): Entry(Rule.EVENT, 200, _erase_event),
    ("GET", "/v1/events/{event_id}/log"): Entry(Rule.EVENT, 200, _on_event("GET", "/log")),
    ("GET", "/v1/events/{event_id}/counts"): Entry(Rule.EVENT, 200, _on_event("GET", "/counts")),
    ("POST", "/v1/events/{event_id}/attendees"): Entry(Rule.EVENT, 201, _enrol),
    ("GET", "/v1/events/{event_id}/attendees"): Entry(Rule.EVENT, 200, _on_event("GET", "/attendees")),
    ("GET", "/v1/events/{event_id}/attendees/{attendee_id}"): Entry(Rule.EVENT, 200, _on_attendee("GET")),
    ("DELETE", "/v1/events/{event_id}/attendees/{attendee_id}"): Entry(
        Rule.EVENT, 200, _on_attendee("DELETE", fresh=True)
    ),
    ("POST", "/v1/events/{event_id}/attendees/{attendee_id}/photos"): Entry(
        Rule.EVENT, 201, _on_attendee("POST", "/photos")
    ),
    ("POST", "/v1/events/{event_id}/attendees/{attendee_id}/revoke"): Entry(
        Rule.EVENT, 200, _on_attendee("POST", "/revoke", fresh=True)
    ),
    ("POST", "/v1/events/{event_id}/imports"): Entry(Rule.EVENT, 202, _start_import),
    ("GET", "/v1/events/{event_id}/imports/{job_id}"): Entry(Rule.EVENT, 200, _on_job),
    ("POST", "/v1/gate/verify"): Entry(Rule.GATE, 200, _gate("/v1/gate/verify")),
    ("POST", "/v1/gate/identify"): Entry(Rule.GATE, 200, _gate("/v1/gate/identify")),
    # the head-turn challenge: sent with every gate caller's event switched to liveness "challenge" (see `_send`)
    ("GET", "/v1/gate/event"): Entry(Rule.GATE, 200, _const("GET", "/v1/gate/event")),
    ("POST", "/v1/gate/challenge"): Entry(Rule.GATE, 201, _const("POST", "/v1/gate/challenge")),
    ("POST", "/v1/gate/verify/burst"): Entry(Rule.GATE, 200, _burst("/v1/gate/verify/burst")),
    ("POST", "/v1/gate/identify/burst"): Entry(Rule.GATE, 200, _burst("/v1/gate/identify/burst")),
    ("POST", "/v1/gate/burst/frames"): Entry(Rule.GATE, 202, _streamed),
}
LIVENESS_ROUTES = ("/v1/gate/challenge", "/v1/gate/verify/burst", "/v1/gate/identify/burst", "/v1/gate/burst/frames")
# Operational and documentation routes are public by design; anything outside /v1/ (the web console and kiosk
# pages and their static files) is public too: the pages hold no data, they call the API with the user's key.
PUBLIC_OPS = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def route_keys(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, walking into included routers (FastAPI keeps them as
    wrappers in `app.routes`)."""
    keys: set[tuple[str, str]] = set()
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            keys |= route_keys(included.routes, prefix + route.include_context.prefix)  # type: ignore[attr-defined]
            continue
        path = prefix + str(getattr(route, "path", ""))
        methods = getattr(route, "methods", None) or {"GET"}  # a mount (static files) answers GET
        keys |= {(m, path) for m in methods if m != "HEAD"}
    return keys


def expected(rule: Rule, caller: Caller, target: Target | None) -> int | None:
    """The refusal status for this cell, or None where the call is allowed."""
    if rule == Rule.PUBLIC:
        return None
    if caller.role is None:
        return 401
    if rule == Rule.GATE:  # even an admin: a gate decision needs the event a gate key is bound to
        return None if caller.role == "gate" else 403
    if rule == Rule.ANY_KEY or caller.role == "admin":
        return None
    if caller.role == "gate":
        return 403
    if rule == Rule.EVENT and target is not None and caller.tenant != target.tenant:
        return 404  # another tenant's event, key or attendee: as if it did not exist
    return None


# --- the world: two tenants, their events, keys and resources --------------------------------------------------


@pytest.fixture(scope="module")
async def world(gateway: Gateway, admin: httpx.AsyncClient, new_tenant: Callable[..., Any], faces: Faces) -> World:
    a: Tenant = await new_tenant()
    b: Tenant = await new_tenant()

    def token(client: httpx.AsyncClient) -> str:
        return str(client.headers["authorization"]).split()[1]

    # a second event of tenant A with its own gate key: "a gate key of another event" of the same tenant
    r = await a.org.post("/v1/events", json={"name": "A's second event"})
    assert r.status_code == 201, r.text
    a2_event = r.json()["id"]
    r = await a.org.post("/v1/keys", json={"name": "gate A2", "role": "gate", "event_id": a2_event})
    assert r.status_code == 201, r.text
    a2_gate = r.json()["token"]
    # revoked keys: an organiser key of tenant A (rotated out) and a gate key of A's event
    r = await admin.post("/v1/keys", json={"name": "old A", "role": "organiser", "same_tenant_as": a.org_key_id})
    assert r.status_code == 201, r.text
    revoked_org = r.json()
    r = await a.org.post("/v1/keys", json={"name": "old gate", "role": "gate", "event_id": a.event_id})
    assert r.status_code == 201, r.text
    revoked_gate = r.json()
    for key_id in (revoked_org["id"], revoked_gate["id"]):
        assert (await admin.post(f"/v1/keys/{key_id}/revoke")).status_code == 200

    targets: dict[str, Target] = {}
    gate_tickets: dict[str, str] = {}
    for name, t, gate_name in (("A", a, "gate of A's event"), ("B", b, "gate of B's event (other tenant)")):
        ticket = f"{name}-{uuid.uuid4().hex[:6]}"
        r = await enrol(
            t.org, t.event_id, name=f"Holder {name}", ticket=ticket, photos=[faces.photo("Ariel_Sharon", 1)]
        )
        assert r.status_code == 201, r.text
        attendee_id = r.json()["attendee"]["id"]
        files = {
            "csv": ("a.csv", f"name,ticket_code,photos\nJob,{ticket}-job,a.jpg\n".encode(), "text/csv"),
            "photos": ("p.zip", _zip({"a.jpg": faces.photo("Ariel_Sharon", 2)[1]}), "application/zip"),
        }
        r = await t.org.post(f"/v1/events/{t.event_id}/imports", files=files)
        assert r.status_code == 202, r.text
        targets[name] = Target(name, t.event_id, attendee_id, ticket, t.gate_key_id, r.json()["id"])
        gate_tickets[gate_name] = ticket
    # A's second event gets its own ticket holder too
    a2_ticket = f"A2-{uuid.uuid4().hex[:6]}"
    r = await enrol(a.org, a2_event, name="Holder A2", ticket=a2_ticket, photos=[faces.photo("Ariel_Sharon", 1)])
    assert r.status_code == 201, r.text
    gate_tickets["gate of A's other event"] = a2_ticket

    callers = [
        Caller("no key", None, None),
        Caller("unknown key", f"Bearer fg_{uuid.uuid4().hex}", None),
        Caller("admin key, wrong scheme", f"Basic {ADMIN_TOKEN}", None),
        Caller("revoked organiser of A", f"Bearer {revoked_org['token']}", None),
        Caller("revoked gate of A's event", f"Bearer {revoked_gate['token']}", None),
        Caller("admin", f"Bearer {ADMIN_TOKEN}", "admin"),
        Caller("organiser A", f"Bearer {token(a.org)}", "organiser", "A"),
        Caller("organiser B", f"Bearer {token(b.org)}", "organiser", "B"),
        Caller("gate of A's event", f"Bearer {token(a.gate)}", "gate", "A"),
        Caller("gate of A's other event", f"Bearer {a2_gate}", "gate", "A"),
        Caller("gate of B's event (other tenant)", f"Bearer {token(b.gate)}", "gate", "B"),
    ]
    gate_events = [("A", a.event_id), ("A", a2_event), ("B", b.event_id)]
    orgs = {"A": a.org, "B": b.org}
    return World(gateway, admin, gateway.client(), faces, callers, targets, gate_tickets, orgs, gate_events)


async def _send(w: World, key: tuple[str, str], entry: Entry, caller: Caller, target: Target, allowed: bool) -> Any:
    req = await entry.build(w, target, allowed)
    kwargs = dict(req.kwargs)
    if key[1] in ("/v1/gate/verify", "/v1/gate/verify/burst"):
        kwargs["data"] = {"ticket_code": w.gate_tickets.get(caller.name, target.ticket)}
    headers = {"authorization": caller.header} if caller.header else {}
    if key[1] not in LIVENESS_ROUTES:
        return await w.raw.request(req.method, req.url, headers=headers, **kwargs)
    await _liveness(w, "challenge")
    try:
        if "/burst" in key[1]:  # a gate's own fresh challenge; others never get as far as the nonce
            r = await w.raw.post("/v1/gate/challenge", headers=headers)
            nonce = r.json()["nonce"] if r.status_code == 201 else "x" * 32
            kwargs["data"] = {**kwargs.get("data", {}), "nonce": nonce}
        return await w.raw.request(req.method, req.url, headers=headers, **kwargs)
    finally:
        await _liveness(w, "off")


# --- the tests ---------------------------------------------------------------------------------------------------


def test_every_api_route_has_a_matrix_entry(gateway: Gateway) -> None:
    """A new route must say who may call it: no entry here, no merge."""
    missing = sorted(k for k in route_keys(gateway.app.routes) if k[1].startswith("/v1/") and k not in ROUTES)
    assert not missing, f"routes without an authorization matrix entry: {missing}"
    stale = sorted(k for k in ROUTES if k not in route_keys(gateway.app.routes))
    assert not stale, f"matrix entries for routes that no longer exist: {stale}"


@pytest.mark.parametrize("key", sorted(ROUTES), ids=lambda k: f"{k[0]} {k[1]}")
async def test_authorization_matrix(key: tuple[str, str], world: World, unthrottled: None) -> None:
    entry = ROUTES[key]
    # the gate routes and the tenant-wide ones name no event: one column; the others: own and other tenant's
    targets = [world.targets["A"]] if entry.rule != Rule.EVENT else [world.targets["A"], world.targets["B"]]
    wrong: list[str] = []
    for caller in world.callers:
        for target in targets:
            refusal = expected(entry.rule, caller, target)
            r = await _send(world, key, entry, caller, target, refusal is None)
            want = entry.ok if refusal is None else refusal
            code = {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(want)
            challenged = want != 401 or r.headers.get("www-authenticate") == "Bearer"
            if r.status_code != want or (code is not None and r.json().get("code") != code) or not challenged:
                wrong.append(f"{caller.name} on tenant {target.tenant}'s event: {r.status_code} {r.text[:200]}")
    assert not wrong, f"{key[0]} {key[1]} ({entry.rule.value}, allowed = {entry.ok}):\n" + "\n".join(wrong)


async def test_public_routes_need_no_key(gateway: Gateway, world: World) -> None:
    public = sorted(k for k in route_keys(gateway.app.routes) if not k[1].startswith("/v1/"))
    assert {p for _, p in public} >= {"/healthz", "/readyz", "/openapi.json"}
    # Each public route's exact answer (everything is up, so /readyz is 200): "not 401/403" alone would let a
    # 500 through. A public route added without an entry here fails, like an API route without a matrix entry.
    want = {
        "/healthz": (200, "application/json"),
        "/readyz": (200, "application/json"),
        "/metrics": (200, "text/plain"),
        "/openapi.json": (200, "application/json"),
        "/docs": (200, "text/html"),
        "/docs/oauth2-redirect": (200, "text/html"),
        "/redoc": (200, "text/html"),
        "/": (200, "text/html"),
        "/kiosk": (200, "text/html"),
        "/console": (308, None),
        "/web/{name}": (200, "text/javascript"),
    }
    gets = sorted(path for method, path in public if method == "GET")
    assert sorted(want) == gets, f"public routes without an expected answer here: {sorted(set(gets) - set(want))}"
    for path in gets:
        status, ctype = want[path]
        url = path.replace("{name}", "kiosk.js")
        for caller in world.callers:
            headers = {"authorization": caller.header} if caller.header else {}
            r = await world.raw.get(url, headers=headers)
            assert r.status_code == status, (caller.name, path, r.status_code, r.text[:200])
            if ctype is not None:
                assert r.headers["content-type"].startswith(ctype), (caller.name, path, r.headers["content-type"])
    # the one redirect goes to the console, and an unknown file under /web is a plain 404 for everyone
    assert (await world.raw.get("/console")).headers["location"] == "/"
    assert (await world.raw.get("/web/nothing.js")).status_code == 404


async def test_lists_show_only_the_callers_tenant(world: World) -> None:
    """The tenant-wide lists are allowed to every organiser (one matrix column), but each sees its own tenant."""
    a, b = world.targets["A"], world.targets["B"]
    for mine, theirs in ((a, b), (b, a)):
        org = world.orgs[mine.tenant]
        events = {e["id"] for e in (await org.get("/v1/events")).json()["items"]}
        assert mine.event_id in events and theirs.event_id not in events
        keys = {k["id"] for k in (await org.get("/v1/keys")).json()}
        assert mine.gate_key_id in keys and theirs.gate_key_id not in keys
        assert all("token" not in k for k in (await org.get("/v1/keys")).json())  # only hashes are stored
    events = {e["id"] for e in (await world.admin.get("/v1/events")).json()["items"]}
    assert {a.event_id, b.event_id} <= events


async def test_refused_calls_left_the_shared_resources_alone(world: World) -> None:
    """Runs after the matrix (file order): every refused DELETE, revoke and PATCH must have changed nothing."""
    for t in world.targets.values():
        r = await world.admin.get(f"/v1/events/{t.event_id}")
        assert r.status_code == 200, r.text
        r = await world.admin.get(f"/v1/events/{t.event_id}/attendees/{t.attendee_id}")
        assert r.status_code == 200 and r.json()["revoked_at"] is None, r.text
        keys = {k["id"]: k for k in (await world.admin.get("/v1/keys")).json()}
        assert keys[t.gate_key_id]["revoked_at"] is None


async def test_a_gate_key_never_decides_for_another_event(world: World, faces: Faces, unthrottled: None) -> None:
    """The other half of own/other event for gate keys: a key acts on its own event only, so a ticket and face
    enrolled in A's event are unknown at B's gate and at the gate of A's other event; A's own gate admits them."""
    a = world.targets["A"]
    ticket = f"G-{uuid.uuid4().hex[:8]}"
    r = await enrol(
        world.orgs["A"], a.event_id, name="Gate Holder", ticket=ticket, photos=[faces.photo("Colin_Powell", 1)]
    )
    assert r.status_code == 201, r.text
    holder = r.json()["attendee"]["id"]
    frame = faces.photo("Colin_Powell", 2)
    for name in ("gate of B's event (other tenant)", "gate of A's other event"):
        gate = world.client_of(name)
        r = await verify(gate, ticket, frame)
        assert r.status_code == 200, r.text
        assert (r.json()["decision"], r.json()["reason"]) == ("deny", "unknown_ticket"), (name, r.text)
        assert r.json()["attendee_id"] != holder and r.json()["attendee_name"] is None, (name, r.text)
        r = await identify(gate, frame)
        assert r.status_code == 200, r.text
        assert r.json()["decision"] != "admit" and r.json()["attendee_id"] != holder, (name, r.text)
    r = await verify(world.client_of("gate of A's event"), ticket, frame)
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "admit" and r.json()["attendee_id"] == holder, r.text


# --- the internal services -----------------------------------------------------------------------------------
# The embedder and the matcher answer only the gateway, which holds one token for each (services/common/
# internal_auth.py). Every route of each (from its OpenAPI, plus /metrics) x these callers; only the service's own
# token gets past authentication, and a refusal is a 401 decided from the headers alone, before the body is read.

INTERNAL_OPEN = {"/healthz", "/readyz"}


def _internal_callers() -> dict[str, dict[str, str]]:
    from tests.conftest import EMBEDDER_TOKEN, MATCHER_TOKEN

    return {
        "no credential": {},
        "empty bearer": {"authorization": "Bearer "},
        "a gateway admin key": {"authorization": f"Bearer {ADMIN_TOKEN}"},
        "the embedder's token": {"authorization": f"Bearer {EMBEDDER_TOKEN}"},
        "the matcher's token": {"authorization": f"Bearer {MATCHER_TOKEN}"},
        "the matcher's token, other scheme": {"authorization": f"Basic {MATCHER_TOKEN}"},
        "the matcher's token and a byte more": {"authorization": f"Bearer {MATCHER_TOKEN}x"},
        "the matcher's token, lower case scheme": {"authorization": f"bearer {MATCHER_TOKEN}"},
    }


def _internal_routes(app: Any) -> list[tuple[str, str]]:
    routes = [(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops]
    return sorted({*routes, ("GET", "/metrics")})


async def _asgi_call(app: Any, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, int]:
    """(status, body chunks the app read) for one request, with a body the app may or may not read."""
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    read = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    hdrs = [(k.encode(), v.encode()) for k, v in headers.items()]
    hdrs += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "headers": hdrs,
        "client": ("127.0.0.1", 1), "server": ("embedder", 80), "root_path": "", "app": app,
    }  # fmt: skip
    await app(scope, receive, send)
    return status, read


@pytest.mark.parametrize("service", ["embedder", "matcher"])
async def test_internal_services_answer_only_their_own_token(service: str, embedder_app: Any, matcher_app: Any) -> None:
    app = embedder_app if service == "embedder" else matcher_app
    own = "the embedder's token" if service == "embedder" else "the matcher's token"
    routes = _internal_routes(app)
    assert ("POST", "/v1/embed" if service == "embedder" else "/v1/galleries/{event_id}/templates") in routes
    body = b'{"templates": []}' + b" " * 300_000  # bigger than one receive(): must not be read when refused
    wrong: list[str] = []
    for method, template in routes:
        path = template.replace("{event_id}", str(uuid.uuid4())).replace("{attendee_id}", str(uuid.uuid4()))
        for caller, headers in _internal_callers().items():
            status, read = await _asgi_call(app, method, path, headers, body if method in ("POST", "PUT") else b"")
            if template in INTERNAL_OPEN:
                ok = status != 401
            elif caller == own:
                ok = status != 401  # past authentication (the handler's own answer: 2xx, 404, 422, ...)
            else:
                ok = status == 401 and read == 0
            if not ok:
                wrong.append(f"{method} {template} with {caller}: {status}, {read} body chunks read")
    assert not wrong, "\n".join(wrong)


async def test_internal_refusal_is_an_error_envelope_with_a_challenge(matcher_app: Any) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=matcher_app), base_url="http://m") as c:
        r = await c.get(f"/v1/galleries/{uuid.uuid4()}/attendees/{uuid.uuid4()}/templates")
    assert r.status_code == 401 and r.json()["code"] == "unauthorized", r.text
    assert r.headers["www-authenticate"] == "Bearer" and r.headers["connection"] == "close"
    assert r.headers.get("x-request-id"), "refusals carry a request id like every answer"


def test_internal_services_refuse_to_start_without_a_token(pg_url: str) -> None:
    from pydantic import SecretStr

    from services.common.internal_auth import MissingInternalToken
    from services.embedder.app import create_app as create_embedder
    from services.embedder.settings import EmbedderSettings
    from services.gateway.app import create_app as create_gateway
    from services.gateway.settings import GatewaySettings
    from services.matcher.app import create_app as create_matcher
    from services.matcher.settings import MatcherSettings

    for token in (None, SecretStr(""), SecretStr("short-and-guessable")):
        with pytest.raises(MissingInternalToken):
            create_matcher(MatcherSettings(database_url=pg_url, internal_token=token))
        with pytest.raises(MissingInternalToken):
            create_embedder(EmbedderSettings(internal_token=token))
        with pytest.raises(MissingInternalToken):
            create_gateway(GatewaySettings(matcher_token=token))
        with pytest.raises(MissingInternalToken):
            create_gateway(GatewaySettings(embedder_token=token))


async def test_a_gateway_with_a_wrong_internal_token_fails_closed(
    pg_url: str, redis_server: Any, embedder_app: Any, matcher_app: Any, faces: Faces, new_tenant: Any
) -> None:
    """A credential mix-up is a 503 (a fault), never an admit and never a 4xx blaming the caller's photo."""
    from pydantic import SecretStr

    from tests.conftest import EMBEDDER_TOKEN, MATCHER_TOKEN
    from tests.gateway.conftest import running_gateway

    redis_url = f"unix://{redis_server.socket_file}"
    # an event made by a well-configured gateway on the same database (creating one asks the embedder which
    # model it serves: with the wrong token that is a 503 too, checked below)
    t = await new_tenant(name="wrong token")
    event = t.event
    # real tokens, each of the other service
    async with running_gateway(
        pg_url, redis_url, embedder_app, matcher_app, embedder_token=SecretStr(MATCHER_TOKEN)
    ) as gw:
        org = gw.client(t.org.headers["authorization"].split()[1])
        r = await org.post("/v1/events", json={"name": "wrong token", "mode": "both"})
        assert (r.status_code, r.json()["code"]) == (503, "dependency_unavailable"), r.text
        r = await enrol(org, event["id"], name="Ada", ticket="T-1", photos=[faces.photo("Colin_Powell", 1)])
        assert (r.status_code, r.json()["code"]) == (503, "dependency_unavailable"), r.text
        gate_key = (await org.post("/v1/keys", json={"name": "g", "role": "gate", "event_id": event["id"]})).json()
        r = await identify(gw.client(gate_key["token"]), faces.photo("Colin_Powell", 2))
        assert (r.status_code, r.json()["code"]) == (503, "dependency_unavailable"), r.text
        r = await gw.client().get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["embedder"] == "error: credential refused", r.text
    async with running_gateway(
        pg_url, redis_url, embedder_app, matcher_app, matcher_token=SecretStr(EMBEDDER_TOKEN)
    ) as gw:
        r = await gw.client(ADMIN_TOKEN).post("/v1/events", json={"name": "wrong token", "mode": "both"})
        assert (r.status_code, r.json()["code"]) == (503, "dependency_unavailable"), r.text
        # and the gateway's readiness says so before any gate finds out
        r = await gw.client().get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["matcher"] == "error: credential refused", r.text
        assert r.json()["checks"]["embedder"] == "ok", r.text
