"""Issue 8: secrets never logged. API keys go through every path that handles them (the bootstrap key, keys created
and shown once, Authorization headers good, bad and malformed, keys pasted into query strings and form fields,
revocation, a dependency failure mid-request) with every logger at DEBUG (SQLAlchemy, httpx, ours) and stdout and
stderr captured; no token, no token's secret part and no stored key hash may appear anywhere in the output.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway.conftest import ADMIN_TOKEN, Faces, Gateway, enrol, identify, verify


def _leaks(text: str, secrets: list[str], *, hashes: bool = True) -> list[str]:
    """Which secrets occur in `text`: the token, its random part past the 10-character prefix that is stored and
    shown on purpose, or (with `hashes`) the sha256 the database keeps."""
    found = []
    for s in secrets:
        needles = {s, s[10:]}
        if hashes:
            needles.add(hashlib.sha256(s.encode()).hexdigest())
        if any(n in text for n in needles):
            found.append(s[:10] + "...")
    return found


def _leaked(records: list[logging.LogRecord], secrets: list[str]) -> dict[str, list[str]]:
    """Tokens may appear in no record at all. A stored hash is not a credential (the token cannot be derived from
    it), but it must not appear at INFO or above, the levels a deployment runs at, nor as a SQL parameter; it can
    only show in SQLAlchemy's DEBUG dump of the rows it read, which is for a developer's machine."""
    out = {}
    for rec in records:
        if rec.name == "httpx" and "http://gateway/" in rec.getMessage():
            continue  # this test's own client logging the URL it called (the query string it chose to send)
        row_dump = rec.name.startswith("sqlalchemy.engine") and rec.levelno < logging.INFO
        found = _leaks(_record_text(rec), secrets, hashes=not row_dump)
        if found:
            out[f"{rec.name}:{rec.levelname}: {rec.getMessage()[:160]}"] = found
    return out


def _record_text(record: logging.LogRecord) -> str:
    """Everything a handler could print for a record: message, arguments, traceback, stack and any extra fields."""
    parts = [record.getMessage(), repr(record.args), record.exc_text or "", record.stack_info or ""]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(logging.Formatter().formatException(record.exc_info))
    parts += [f"{k}={v!r}" for k, v in vars(record).items() if k not in logging.LogRecord.__dict__]
    return "\n".join(parts)


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)  # the root: SQLAlchemy's engine logs statements and parameters from INFO
    for name in ("sqlalchemy.engine", "sqlalchemy.pool", "httpx", "httpcore", "facegate", "uvicorn", "redis"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


async def test_no_key_material_in_logs_or_output(
    gateway: Gateway,
    admin: httpx.AsyncClient,
    faces: Faces,
    everything_logged: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    unthrottled: None,
) -> None:
    secrets = [ADMIN_TOKEN]
    # keys created and used
    r = await admin.post("/v1/keys", json={"name": "org", "role": "organiser"})
    assert r.status_code == 201, r.text
    org_token = r.json()["token"]
    secrets.append(org_token)
    org = gateway.client(org_token)
    r = await org.post("/v1/events", json={"name": "secrets"})
    assert r.status_code == 201, r.text
    event_id = r.json()["id"]
    r = await org.post("/v1/keys", json={"name": "gate", "role": "gate", "event_id": event_id})
    assert r.status_code == 201, r.text
    gate_token, gate_key_id = r.json()["token"], r.json()["id"]
    secrets.append(gate_token)
    gate = gateway.client(gate_token)
    r = await enrol(org, event_id, name="Holder", ticket="S-1", photos=[faces.photo("Colin_Powell", 1)])
    assert r.status_code == 201, r.text
    assert (await verify(gate, "S-1", faces.photo("Colin_Powell", 2))).status_code == 200
    assert (await identify(gate, faces.photo("Colin_Powell", 2))).status_code == 200
    assert (await org.get("/v1/keys")).status_code == 200

    # keys that do not work: unknown, malformed, in the wrong places
    unknown = "fg_" + uuid.uuid4().hex + uuid.uuid4().hex
    secrets.append(unknown)
    anon = gateway.client()
    for header in (f"Bearer {unknown}", f"Basic {org_token}", f"Bearer {org_token}x", f"bearer  {unknown} extra"):
        r = await anon.get("/v1/events", headers={"authorization": header})
        assert r.status_code == 401, (header[:12], r.text)
        assert not _leaks(r.text, secrets)  # nor echoed back
    r = await anon.get("/v1/events", params={"api_key": org_token, "token": unknown})
    assert r.status_code == 401
    r = await org.get(f"/v1/events/{event_id}/log", params={"gate": gate_token})  # a key where an id belongs
    assert r.status_code == 422 and not _leaks(r.text, secrets), r.text
    r = await org.post("/v1/keys", json={"name": "x", "role": "gate", "event_id": gate_token})
    assert r.status_code == 422 and not _leaks(r.text, secrets), r.text

    # a dependency failure mid-request (warnings and error paths log more)
    gateway.matcher.fail = lambda request: True
    try:
        r = await identify(gate, faces.photo("Colin_Powell", 2))
        assert r.status_code == 503, r.text
    finally:
        gateway.matcher.fail = None

    # revocation, then the revoked key used again
    assert (await org.post(f"/v1/keys/{gate_key_id}/revoke")).status_code == 200
    assert (await identify(gate, faces.photo("Colin_Powell", 2))).status_code == 401

    records = everything_logged.records
    sql = [r for r in records if r.name.startswith("sqlalchemy.engine") and r.levelno == logging.INFO]
    assert sql, "SQL logging was not captured at all"
    assert any("parameters hidden" in r.getMessage() for r in sql), "SQL parameters are logged"
    assert any(r.name.startswith("httpx") for r in records), "httpx logging was not captured at all"
    leaked = _leaked(records, secrets)
    assert not leaked, f"{len(leaked)} log records carry key material: {leaked}"
    out, err = capfd.readouterr()
    assert not _leaks(out + err, secrets), "key material on stdout/stderr"
