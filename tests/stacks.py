"""Helpers for tests that run the whole stack as real processes (`services.stack.Stack`): e2e, faults, browser.

Set-up goes through the public API only, with a plain synchronous client: it runs once per module, and the
browser tests' thread belongs to Playwright's own event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.stack import Stack, free_port


def new_stack(data_dir: Path, *, admin_key: str, log_dir: Path | None = None, **env: str) -> Stack:
    """A stack on free ports with a known bootstrap admin key; `env`: extra FACEGATE_* settings."""
    return Stack(
        data_dir=data_dir,
        ports={"gateway": free_port(), "embedder": free_port(), "matcher": free_port()},
        extra_env={"FACEGATE_GATEWAY_BOOTSTRAP_ADMIN_KEY": admin_key, **env},
        log_dir=log_dir or data_dir / "logs",
    )


@dataclass(frozen=True)
class Venue:
    org_token: str
    event_id: str
    gate_token: str


def open_event(
    stack: Stack, admin_key: str, *, organiser: str, event: dict[str, Any], gate: str = "north gate"
) -> Venue:
    """An organiser key, one event made with it (`event`: the POST body), and a gate key for that event."""
    url = stack.url("gateway")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60) as admin:
        r = admin.post("/v1/keys", json={"name": organiser, "role": "organiser"})
        assert r.status_code == 201, r.text
        org = r.json()["token"]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {org}"}, timeout=60) as o:
        r = o.post("/v1/events", json=event)
        assert r.status_code == 201, r.text
        event_id = r.json()["id"]
        r = o.post("/v1/keys", json={"name": gate, "role": "gate", "event_id": event_id})
        assert r.status_code == 201, r.text
    return Venue(org_token=org, event_id=event_id, gate_token=r.json()["token"])
