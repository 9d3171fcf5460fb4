"""`bench/gates.py --liveness`: the same gates deciding with the head-turn challenge (issue 17), beside plain frames.

Each decision is what a kiosk does: `POST /v1/gate/challenge`, then (after the guidance and a capture of
`CAPTURE_S`, simulated by waiting) the burst of 8 frames to `/v1/gate/{identify,verify}/burst`. Latency is from the
burst's send (the end of the capture) to the answer: what the person waits for after turning. The event is switched
between `liveness: off` and `challenge` through the public API, so the plain and challenge levels share gates,
gallery and stack, and the CPU per decision (all services and Postgres, from /proc) compares like with like.

Bursts: real head turns (`services/tools/headturn.py`: the interview clip's turn, mirrored for a left challenge; the
interviewee is enrolled, 60%) and flat-photo attacks (held-back photos of enrolled people turned as a printed
picture would be, 40%; on verify with that person's ticket).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.report import md_table
from services.stack import Stack
from services.tools import headturn

CAPTURE_S = 1.2  # the kiosk's capture span, from the guidance on (kiosk.js BURST_MS)
KIND_WEIGHTS = {"live": 0.6, "attack": 0.4}
INTERVIEWEE = "Interviewee"


@dataclass(frozen=True)
class BurstSet:
    kind: str  # live | attack
    person: str  # whose ticket a verify carries
    frames: dict[str, list[bytes]]  # challenge direction -> JPEG frames


def make_bursts(faces: Path, attacked: dict[str, Path], n_attacks: int = 6) -> dict[str, list[BurstSet]]:
    clip = headturn.read_clip(faces / headturn.CLIP)
    live = BurstSet(
        "live", INTERVIEWEE, {d: [headturn.jpeg(f) for f in headturn.turn(clip, d)] for d in ("left", "right")}
    )
    attacks = []
    for person, path in sorted(attacked.items())[:n_attacks]:
        photo = _letterbox(path)
        attacks.append(
            BurstSet(
                "attack",
                person,
                {d: [headturn.jpeg(f) for f in headturn.planar_turn(photo, d)] for d in ("left", "right")},
            )
        )
    return {"live": [live], "attack": attacks}


def _letterbox(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path))
    if img is None:
        raise SystemExit(f"{path}: not an image cv2 can read")
    scale = min(headturn.FRAME_W / img.shape[1], headturn.FRAME_H / img.shape[0])
    resized = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)))
    canvas = np.full((headturn.FRAME_H, headturn.FRAME_W, 3), 96, np.uint8)
    y0, x0 = (canvas.shape[0] - resized.shape[0]) // 2, (canvas.shape[1] - resized.shape[1]) // 2
    canvas[y0 : y0 + resized.shape[0], x0 : x0 + resized.shape[1]] = resized
    return canvas


async def enrol_interviewee(org: httpx.AsyncClient, event_id: str, faces: Path) -> str:
    clip = headturn.read_clip(faces / headturn.CLIP)
    photo = headturn.jpeg(headturn.camera_frame(clip[headturn.FRONTAL_FRAME]))
    ticket = f"T-{INTERVIEWEE}"
    r = await org.post(
        f"/v1/events/{event_id}/attendees",
        data={"name": INTERVIEWEE, "ticket_code": ticket},
        files=[("photos", ("interviewee.jpg", photo, "image/jpeg"))],
    )
    r.raise_for_status()
    return ticket


async def set_liveness(base: str, org_token: str, event_id: str, mode: str) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {org_token}"}) as org:
        r = await org.patch(f"/v1/events/{event_id}", json={"liveness": mode})
        r.raise_for_status()


def tree_cpu(procs: list[psutil.Process]) -> float:
    """User + system CPU so far of these processes, in seconds, with that of their children that ended and were
    waited for (a Postgres backend that ended between two readings counts in its postmaster's, so a level's CPU
    never loses it: without it, a backend alive at the first reading and gone at the second made the difference
    negative)."""
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue  # ended since it was listed: its parent's children_* has it at the next reading
        total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_by_part(stack: Stack) -> dict[str, float]:
    """User + system CPU so far of each service and of Postgres (its postmaster and backends), in seconds."""
    parts = {name: [psutil.Process(p.pid)] for name, p in stack.procs.items()}
    pg = psutil.Process(stack._pg.get_pid())  # the stack's own Postgres
    parts["postgres"] = [pg, *pg.children(recursive=True)]
    return {name: tree_cpu(procs) for name, procs in parts.items()}


def server_decisions(stack: Stack) -> float:
    """Decisions the gateway has made so far (its counter): a decision whose answer the client gave up waiting
    for still cost its CPU, so CPU per decision divides by these, not by the answers received."""
    text = httpx.get(stack.url("gateway") + "/metrics", timeout=10).text
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "facegate_gateway_decisions"
        for s in fam.samples
        if s.name == "facegate_gateway_decisions_total"
    )


async def send_burst(
    client: httpx.AsyncClient,
    *,
    n: int,
    mode: str,
    burst: BurstSet,
    tickets: dict[str, str],
    at: float,
    timeout: float,
    sample: Any,
    stream: tuple[int, ...] = (),
) -> Any:
    """One decision with the challenge; `sample` is gates.Sample (kept there so the report code is shared). With
    `stream`, the burst's first frames go ahead in parts of those sizes while the capture runs (kiosk.js
    STREAM_AHEAD), and the latency is still from the capture's end."""
    loop = asyncio.get_running_loop()
    lag = loop.time() - at
    try:
        r = await asyncio.wait_for(client.post("/v1/gate/challenge"), timeout)
    except (TimeoutError, httpx.HTTPError):
        return sample(n, mode, burst.kind, (loop.time() - at) * 1e3, lag * 1e3, 0, reason="challenge timeout")
    challenge_ms = (loop.time() - at) * 1e3
    if r.status_code != 201:
        return sample(n, mode, burst.kind, challenge_ms, lag * 1e3, r.status_code, reason="challenge")
    c = r.json()
    begun = loop.time()  # the capture starts with the guidance
    frames = burst.frames[c["direction"]]
    streaming = asyncio.create_task(stream_ahead(client, c["nonce"], frames, stream, begun, timeout))
    await asyncio.sleep(CAPTURE_S)  # the person reads, turns, and the kiosk captures
    data = {"nonce": c["nonce"]} | ({"ticket_code": tickets[burst.person]} if mode == "verify" else {})
    sent = loop.time()
    fallback = False
    try:
        held = await streaming  # a kiosk waits for its parts' answers (normally long in)
        r = await asyncio.wait_for(
            client.post(f"/v1/gate/{mode}/burst", data=data | _streamed(held), files=_files(frames, held)), timeout
        )
        if held and r.status_code == 409:  # burst_incomplete: the nonce is unspent, send it all
            fallback = True
            r = await asyncio.wait_for(client.post(f"/v1/gate/{mode}/burst", data=data, files=_files(frames)), timeout)
    except (TimeoutError, httpx.HTTPError):
        return sample(n, mode, burst.kind, (loop.time() - sent) * 1e3, lag * 1e3, 0, challenge_ms=challenge_ms)
    s = sample(n, mode, burst.kind, (loop.time() - sent) * 1e3, lag * 1e3, r.status_code, challenge_ms=challenge_ms)
    s.fallback = fallback or (bool(stream) and not held)
    if r.status_code == 200:
        body = r.json()
        s.decision, s.reason, s.server_ms = body["decision"], body["reason"], body.get("latency_ms")
    elif "json" in r.headers.get("content-type", ""):
        s.reason = str(r.json().get("code", ""))
    return s


def _files(frames: list[bytes], first: int = 0) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("frames", (f"f{first + i}.jpg", data, "image/jpeg")) for i, data in enumerate(frames[first:])]


def _streamed(held: int) -> dict[str, str]:
    return {"streamed": str(held)} if held else {}


async def stream_ahead(
    client: httpx.AsyncClient, nonce: str, frames: list[bytes], parts: tuple[int, ...], begun: float, timeout: float
) -> int:
    """As kiosk.js's streamer: each part of `parts` frames posted once its last frame is taken (frames evenly over
    CAPTURE_S from `begun`), one after the other; how many the gateway holds (0 after any refusal or fault: the
    decision then carries the whole burst)."""
    loop = asyncio.get_running_loop()
    step = CAPTURE_S / (len(frames) - 1)
    held = 0
    for size in parts:
        end = held + size
        if end >= len(frames):
            break
        await asyncio.sleep(max(0.0, begun + (end - 1) * step - loop.time()))
        files = _files(frames[:end], held)
        try:
            r = await asyncio.wait_for(
                client.post("/v1/gate/burst/frames", data={"nonce": nonce, "offset": str(held)}, files=files), timeout
            )
        except (TimeoutError, httpx.HTTPError):
            return 0
        if r.status_code != 202:
            return 0
        held = end
    return held


def plan_burst(rng: random.Random, mode: str, bursts: dict[str, list[BurstSet]]) -> tuple[str, BurstSet]:
    m = mode if mode != "mixed" else rng.choice(("verify", "identify"))
    kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
    return m, rng.choice(bursts[kind])


def cpu_table(rows: list[dict[str, Any]]) -> str:
    header = ["gates", "decisions", "decisions/s", "p50 ms", "p99 ms (after the burst)", "challenge p99 ms"]
    header += ["CPU ms per decision", "x plain", "errors", "decisions by reason", "holds"]
    cells = []
    for r in rows:
        s = r["summary"]
        reasons = ", ".join(f"{k} {v}" for k, v in s["by_reason"].items())
        cells.append(
            [
                f"{r['gates']} {r['protocol']} ({r.get('pace', 'open')})",
                s["decisions"],
                f"{s['decisions_per_s']:.2f}",
                f"{s['p50_ms']:.0f}",
                f"{s['p99_ms']:.0f}",
                f"{r.get('challenge_p99_ms', float('nan')):.0f}",
                f"{r['cpu_ms_per_decision']:.0f}",
                f"{r.get('cpu_ratio') or 1.0:.2f}",
                s["errors"],
                reasons,
                "yes" if r["holds"] else "no",
            ]
        )
    return md_table(header, cells)
