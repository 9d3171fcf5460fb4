"""Gallery lifecycle, validation and error codes through the HTTP API."""

from __future__ import annotations

import uuid

import httpx
import numpy as np

from tests.matcher.conftest import DIM, MODEL, template, unit


async def test_ensure_gallery_is_idempotent_and_pinned(client: httpx.AsyncClient) -> None:
    event = uuid.uuid4()
    first = await client.put(f"/v1/galleries/{event}", json={"model_id": MODEL})
    again = await client.put(f"/v1/galleries/{event}", json={"model_id": MODEL})
    assert first.status_code == again.status_code == 200
    body = again.json()
    assert body["model_id"] == MODEL and body["dim"] == DIM and body["templates"] == 0
    assert body["search_mode"] == "exact"
    assert first.json()["created_at"] == body["created_at"]

    other = await client.put(f"/v1/galleries/{event}", json={"model_id": "dlib-resnet-128"})
    assert other.status_code == 409 and other.json()["code"] == "model_mismatch"

    unknown = await client.put(f"/v1/galleries/{uuid.uuid4()}", json={"model_id": "no-such-model"})
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_model"


async def test_unknown_event_is_404(client: httpx.AsyncClient) -> None:
    event, attendee = uuid.uuid4(), uuid.uuid4()
    vec = [1.0] + [0.0] * (DIM - 1)
    calls = [
        client.get(f"/v1/galleries/{event}"),
        client.delete(f"/v1/galleries/{event}"),
        client.post(f"/v1/galleries/{event}/templates", json={"templates": [template(attendee, np.array(vec))]}),
        client.post(f"/v1/galleries/{event}/search", json={"model_id": MODEL, "embedding": vec}),
        client.get(f"/v1/galleries/{event}/attendees/{attendee}/templates"),
        client.delete(f"/v1/galleries/{event}/attendees/{attendee}"),
        client.post(f"/v1/galleries/{event}/attendees/{attendee}/distance", json={"model_id": MODEL, "embedding": vec}),
    ]
    for call in calls:
        r = await call
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "gallery_not_found"


async def test_templates_roundtrip_normalised(client: httpx.AsyncClient, new_gallery) -> None:
    event = await new_gallery()
    rng = np.random.default_rng(1)
    attendee = uuid.uuid4()
    raw = rng.standard_normal((3, DIM)) * 7.0  # not unit length: the matcher normalises
    r = await client.post(
        f"/v1/galleries/{event}/templates",
        json={"templates": [template(attendee, v, quality=0.5 + i / 10) for i, v in enumerate(raw)]},
    )
    assert r.status_code == 201, r.text
    ids = r.json()["ids"]
    assert len(ids) == 3

    assert r.json()["attendee_templates"] == {str(attendee): 4}  # three photos and their mean

    got = (await client.get(f"/v1/galleries/{event}/attendees/{attendee}/templates")).json()
    assert got["attendee_id"] == str(attendee) and got["model_id"] == MODEL
    photos = [t for t in got["templates"] if t["kind"] == "photo"]
    assert {t["id"] for t in photos} == set(ids) and len(got["templates"]) == 4
    for t in got["templates"]:
        assert abs(np.linalg.norm(t["embedding"]) - 1.0) < 1e-5
    assert sorted(t["quality"] for t in photos) == [0.5, 0.6, 0.7]

    # 1:1 distance: the query is one of the templates, so the best distance is ~0 and names that template.
    d = await client.post(
        f"/v1/galleries/{event}/attendees/{attendee}/distance", json={"model_id": MODEL, "embedding": list(raw[1])}
    )
    assert d.status_code == 200
    body = d.json()
    assert body["templates"] == 4 and body["distance"] < 1e-5 and body["template_id"] == ids[1]

    missing = await client.post(
        f"/v1/galleries/{event}/attendees/{uuid.uuid4()}/distance", json={"model_id": MODEL, "embedding": list(raw[1])}
    )
    assert missing.status_code == 404 and missing.json()["code"] == "attendee_not_found"
    assert (await client.get(f"/v1/galleries/{event}/attendees/{uuid.uuid4()}/templates")).status_code == 404

    stats = (await client.get(f"/v1/galleries/{event}")).json()
    assert stats["templates"] == 4 and stats["attendees"] == 1


async def test_mismatch_and_invalid_embeddings_are_422(client: httpx.AsyncClient, new_gallery) -> None:
    event = await new_gallery()
    attendee = uuid.uuid4()
    good = unit(np.random.default_rng(2), 1)[0]
    cases = {
        "dimension_mismatch": template(attendee, good[:128]),
        "model_mismatch": template(attendee, good, model="dlib-resnet-128"),
        "invalid_embedding": template(attendee, np.zeros(DIM)),
    }
    for code, bad in cases.items():
        # the bad template comes second: the batch is all-or-nothing, the good one must not land either
        r = await client.post(f"/v1/galleries/{event}/templates", json={"templates": [template(attendee, good), bad]})
        assert r.status_code == 422, r.text
        assert r.json()["code"] == code
    zeros = ", 0.0" * (DIM - 1)
    nan = f'{{"templates": [{{"attendee_id": "{attendee}", "model_id": "{MODEL}", "embedding": [NaN{zeros}]}}]}}'
    r = await client.post(f"/v1/galleries/{event}/templates", content=nan, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert (await client.get(f"/v1/galleries/{event}")).json()["templates"] == 0

    search = await client.post(f"/v1/galleries/{event}/search", json={"model_id": MODEL, "embedding": [0.1] * 128})
    assert search.status_code == 422 and search.json()["code"] == "dimension_mismatch"
    search = await client.post(
        f"/v1/galleries/{event}/search", json={"model_id": "dlib-resnet-128", "embedding": [0.1] * 128}
    )
    assert search.status_code == 422 and search.json()["code"] == "model_mismatch"
    empty = await client.post(f"/v1/galleries/{event}/templates", json={"templates": []})
    assert empty.status_code == 422


async def test_128d_gallery(client: httpx.AsyncClient, new_gallery) -> None:
    event = await new_gallery("dlib-resnet-128")
    rng = np.random.default_rng(3)
    vecs = unit(rng, 20, 128)
    people = [uuid.uuid4() for _ in range(20)]
    r = await client.post(
        f"/v1/galleries/{event}/templates",
        json={"templates": [template(p, v, model="dlib-resnet-128") for p, v in zip(people, vecs, strict=True)]},
    )
    assert r.status_code == 201
    query = {"model_id": "dlib-resnet-128", "embedding": list(map(float, vecs[7])), "k": 3}
    s = await client.post(f"/v1/galleries/{event}/search", json=query)
    body = s.json()
    assert body["mode"] == "exact" and body["matches"][0]["attendee_id"] == str(people[7])
    assert len(body["matches"]) == 3


async def test_ops_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["schema"] == "ok"
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and "facegate_http_requests_total" in metrics.text
    assert 'route="/v1/galleries/{event_id}"' in metrics.text


async def test_every_search_reports_the_gallery_size_it_searched(client: httpx.AsyncClient, new_gallery) -> None:
    """A 1:K threshold depends on how many templates of how many people were searched: the counts move with every
    write (new attendee, more photos of a known one, erasure) and come back with each search."""
    event = await new_gallery()
    rng = np.random.default_rng(5)
    a, b = uuid.uuid4(), uuid.uuid4()

    async def sizes() -> tuple[int, int]:
        s = await client.post(f"/v1/galleries/{event}/search", json={"model_id": MODEL, "embedding": [1.0] * DIM})
        assert s.status_code == 200, s.text
        return s.json()["templates"], s.json()["attendees"]

    assert await sizes() == (0, 0)
    r = await client.post(
        f"/v1/galleries/{event}/templates", json={"templates": [template(a, v) for v in unit(rng, 2, DIM)]}
    )
    assert r.status_code == 201 and await sizes() == (3, 1)  # two photos and their mean
    r = await client.post(
        f"/v1/galleries/{event}/templates",
        json={"templates": [template(a, unit(rng, 1, DIM)[0]), template(b, unit(rng, 1, DIM)[0])]},
    )
    # a was known: one new attendee, two photos; a's mean is replaced, not added; b (one photo) has none
    assert r.status_code == 201 and await sizes() == (5, 2)
    assert (await client.delete(f"/v1/galleries/{event}/attendees/{a}")).json()["deleted"] == 4
    assert await sizes() == (1, 1)
    assert (await client.delete(f"/v1/galleries/{event}/attendees/{a}")).json()["deleted"] == 0
    assert await sizes() == (1, 1)  # erasing twice changes nothing
